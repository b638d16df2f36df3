"""The medvid command lists every job and turns bad configs into one clear error line."""
import subprocess
import sys

from typer.testing import CliRunner

from medvid.cli import app

runner = CliRunner()


def test_help_lists_the_jobs():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for job in ["demo", "ingest", "synth", "transcribe", "lectures", "pretrain", "train-views", "zero-shot"]:
        assert job in result.output
    sub = runner.invoke(app, ["synth", "--help"])
    assert all(kind in sub.output for kind in ["echo", "surgery", "lectures"])


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "medvid.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "zero-shot" in out.stdout


def test_unknown_config_key_is_a_clean_error(tmp_path):
    result = runner.invoke(app, ["ingest", str(tmp_path), "--out", str(tmp_path / "o"), "no_such_key=1"])
    assert result.exit_code == 1
    assert "no_such_key" in result.output
    assert "Traceback" not in result.output


def test_summary_is_json_on_stdout_and_logs_on_stderr(tmp_path):
    """Unix streams: `medvid JOB > summary.json` captures data only; logs and progress go to stderr."""
    import json

    out = tmp_path / "synth"
    proc = subprocess.run([sys.executable, "-m", "medvid.cli", "synth", "echo", str(out), "--studies", "1",
                           "loops_per_study=2", "rows=48", "cols=64", "frames_min=4", "frames_max=4"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["studies"] == 1 and summary["loops"] == 2
    failed = subprocess.run([sys.executable, "-m", "medvid.cli", "ingest", str(tmp_path / "missing"), "--out",
                             str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "missing" in failed.stderr and "Traceback" not in failed.stderr
