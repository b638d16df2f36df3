"""The wheel works outside the repository: built with pip, installed into a fresh virtual environment
(its dependencies borrowed from this one, so nothing is downloaded), and driven from another folder.

It must carry the shipped configs (model registry, prompts, section × view prior), install the jobs
and the app inside the ``medvid`` namespace, and put no generic top-level module (``pipelines``,
``apps``) into the user's environment.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDVID_CONFIG_DIR")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(REPO)], tmp, env)
    wheel = next((tmp / "dist").glob("medvid-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
                .stdout.strip())
    # Dependencies come from this environment's site-packages, appended after the new venv's own.
    (site / "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         tmp, env)
    work = tmp / "elsewhere"
    work.mkdir()
    return venv, env, work


def test_installed_wheel_layout(installed):
    venv, env, work = installed
    probe = ("import importlib.util, json, medvid, medvid.config as c, medvid.pipelines.ingest, medvid.apps.store;"
             "print(json.dumps({'medvid': medvid.__file__, 'configs': str(c.config_dir()),"
             "'generic': [m for m in ('pipelines', 'apps', 'configs') if importlib.util.find_spec(m)]}))")
    out = json.loads(_run([str(venv / "bin" / "python"), "-c", probe], work, env).stdout)
    assert out["medvid"].startswith(str(venv)) and out["configs"].startswith(str(venv))
    assert out["generic"] == []
    configs = Path(out["configs"])
    for shipped in ("ingest.yaml", "section_view_prior.yaml", "models/medvid-effnetlite0-minilm.yaml",
                    "prompts/cholec80_phases.yaml"):
        assert (configs / shipped).is_file(), shipped
    assert (Path(out["medvid"]).parent / "apps" / "pages").is_dir()


def test_installed_commands_run_from_another_folder(installed):
    venv, env, work = installed
    medvid = str(venv / "bin" / "medvid")
    assert "zero-shot" in _run([medvid, "--help"], work, env).stdout
    _run([medvid, "synth", "echo", "echo", "--studies", "2", "loops_per_study=2", "rows=48", "cols=64",
          "frames_min=4", "frames_max=6", "progress=false"], work, env)
    ingest = json.loads(_run([medvid, "ingest", "echo/dicom", "--out", "ingest", "reports=echo/reports.csv",
                              "progress=false"], work, env).stdout)
    assert ingest["videos"] == 4 and ingest["studies"] == 2
    _run([medvid, "synth", "surgery", "surgery", "--videos", "1", "duration_scale=0.2", "height=64", "width=80"],
         work, env)
    _run([str(venv / "bin" / "python"), "-c", "from medvid.models.factory import create_model; create_model("
          "{'pretrained': False, 'input_size': 64, 'temporal': 'mean'}).save_pretrained('model')"], work, env)
    zs = json.loads(_run([medvid, "zero-shot", "phase", "surgery", "--model", "model", "--out", "zs", "plots=false"],
                         work, env).stdout)
    assert zs["videos_done"] == 1 and (work / "zs" / "metrics.json").is_file()
    by_name = subprocess.run([medvid, "pretrain", "surgical_pretrain", "lectures.root=nowhere"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=300)  # a shipped config found by name
    assert by_name.returncode == 1 and "lectures.root does not exist" in by_name.stderr, by_name.stderr[-2000:]
