"""The medvid command lists every job and turns bad configs into one clear error line."""
import subprocess
import sys

import pytest
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


def test_mistyped_settings_get_a_suggestion_and_options_a_hint(tmp_path):
    result = runner.invoke(app, ["train-views", "max_steps=3"])
    assert result.exit_code == 1 and "did you mean train.max_steps" in result.output
    proc = subprocess.run([sys.executable, "-m", "medvid.cli", "ingest", str(tmp_path), "--out", str(tmp_path / "o"),
                           "--min-frames", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "min_frames=VALUE" in " ".join(proc.stderr.split())
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("medvid ")


def test_zero_shot_validates_options_before_work_and_a_fixed_rerun_is_not_blocked(tmp_path):
    (tmp_path / "videos").mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "zs"
    base = ["zero-shot", "phase", str(tmp_path), "--model", str(model), "--out", str(out)]
    bad = runner.invoke(app, base + ["smoothing=hmmm"])
    assert bad.exit_code == 1 and "smoothing must be one of" in bad.output
    assert not out.exists()  # nothing left behind that could block the corrected command
    gpu = runner.invoke(app, base + ["device=cuda"])
    import torch

    if not torch.cuda.is_available():
        assert gpu.exit_code == 1 and "no CUDA GPU" in gpu.output and "Traceback" not in gpu.output


def test_missing_inputs_are_named_before_any_work(tmp_path):
    result = runner.invoke(app, ["train-views", f"ingest_dir={tmp_path}", f"dicom_root={tmp_path / 'nope'}"])
    assert result.exit_code == 1 and "dicom_root does not exist" in result.output
    result = runner.invoke(app, ["pretrain", "configs/surgical_pretrain.yaml", f"lectures.root={tmp_path}",
                                 f"lectures.pairs={tmp_path / 'pairs.jsonl'}"])
    assert result.exit_code == 1 and "lectures.pairs does not exist" in result.output


def _leaf_commands(group, path=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _leaf_commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def _jobs() -> list[tuple[str, str | None]]:
    import typer.main

    return sorted({cmd.callback.medvid_job for _, cmd in _leaf_commands(typer.main.get_command(app))
                   if hasattr(cmd.callback, "medvid_job")}, key=str)


@pytest.mark.parametrize("job,config_name", _jobs())
def test_every_setting_has_a_meaning(job, config_name):
    """Each job setting (nested ones included) carries its meaning as ``setting(default, help)`` metadata."""
    import importlib

    from medvid.config import describe_settings

    rows = describe_settings(importlib.import_module(f"medvid.pipelines.{job}").Config, config_name)
    assert rows and [key for key, _, _, meaning in rows if not meaning] == []


def test_every_job_lists_its_settings_in_help():
    """`--help` of every job shows its key=value settings with types, defaults and meanings."""
    import typer.main

    leaves = dict(_leaf_commands(typer.main.get_command(app)))
    unmarked = [" ".join(p) for p, cmd in leaves.items() if not hasattr(cmd.callback, "medvid_job")]
    assert not unmarked, f"commands without @_job: {unmarked}"
    help_text = runner.invoke(app, ["zero-shot", "phase", "--help"], terminal_width=200).output
    assert "smoothing=hmm (str) none | moving_average | median | hmm" in " ".join(help_text.split())
    draft = " ".join(runner.invoke(app, ["draft", "--help"], terminal_width=200).output.split())
    assert "drafting.knn_k=50 (int)" in draft and "encoding.loop_batch=16 (int)" in draft  # library settings, nested
    # Meanings come from the dataclass fields' setting(default, help) metadata, nested settings included.
    demo = " ".join(runner.invoke(app, ["demo", "--help"], terminal_width=200).output.split())
    assert "sizes.echo_steps=300 (int) optimizer steps of echo video-report pretraining" in demo
    synth = " ".join(runner.invoke(app, ["synth", "surgery", "--help"], terminal_width=200).output.split())
    assert "crf=23 (int) libx264 quality" in synth
    views = runner.invoke(app, ["train-views", "--help"], terminal_width=200).output
    assert "train.max_steps=" in views and "--out" in views


def test_a_setting_without_equals_is_one_clear_line(tmp_path):
    """`medvid draft X foo`: a word that is not key=value is a one-line error, not a traceback."""
    result = runner.invoke(app, ["synth", "surgery", str(tmp_path), "foo"])
    assert result.exit_code == 1 and "settings are key=value words, got: foo" in result.output
    assert "Traceback" not in result.output


def _job_commands() -> list[tuple[str, ...]]:
    import typer.main

    return sorted(p for p, cmd in _leaf_commands(typer.main.get_command(app)) if hasattr(cmd.callback, "medvid_job"))


@pytest.mark.parametrize("command", _job_commands(), ids=" ".join)
def test_help_prints_every_setting_as_written(command):
    """typer renders help as Rich markup: unescaped, `[a,b]` and `list[str]` vanish from `--help`."""
    import importlib

    import typer.main

    from medvid.config import describe_settings

    cmd = dict(_leaf_commands(typer.main.get_command(app)))[command]
    job, config_name = cmd.callback.medvid_job
    shown = " ".join(runner.invoke(app, [*command, "--help"], env={"COLUMNS": "2000"}).output.split())  # no folding
    assert "lists as key=[a,b];" in shown
    for key, kind, default, meaning in describe_settings(importlib.import_module(f"medvid.pipelines.{job}").Config,
                                                         config_name):
        assert " ".join(f"{key}={default} ({kind}) {meaning}".split()) in shown


def test_an_option_style_setting_gets_its_hint_once(tmp_path):
    """A nested command (`synth echo`) passes the error through two groups: the hint is still added once."""
    result = runner.invoke(app, ["synth", "echo", str(tmp_path), "--rows", "3"])
    assert result.exit_code == 2
    assert " ".join(result.output.split()).count("write rows=VALUE") == 1


@pytest.mark.parametrize("command,words,message", [
    (["synth", "echo"], ["studies=abc"], "studies=abc: expected int"),
    (["synth", "surgery"], ["ids=41,42"], "ids=41,42: expected list[int] (lists are written in brackets: ids=[a,b])"),
    (["synth", "echo"], ["studies=-3"], "studies=-3: must be >= 1"),
    (["synth", "echo"], ["studies=0"], "studies=0: must be >= 1"),
    (["synth", "lectures"], ["lectures=0"], "lectures=0: must be >= 1"),
])
def test_bad_setting_values_are_one_line_naming_setting_value_and_type(tmp_path, command, words, message):
    """A wrong type or an out-of-range count is refused before any work, in one line (no OmegaConf dump)."""
    out = tmp_path / "out"
    result = runner.invoke(app, [*command, str(out), *words])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "full_key" not in result.output and "object_type" not in result.output and "Errno" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_redirected_stderr_gets_plain_progress_lines_not_repaints(tmp_path):
    """`medvid JOB 2> log`: progress as plain log lines (start and end here), no carriage-return repaints."""
    log = tmp_path / "stderr.log"
    with open(log, "wb") as stderr:
        proc = subprocess.run([sys.executable, "-m", "medvid.cli", "synth", "echo", str(tmp_path / "synth"),
                               "--studies", "1", "loops_per_study=2", "rows=48", "cols=64", "frames_min=4",
                               "frames_max=4"], stdout=subprocess.PIPE, stderr=stderr, timeout=300)
    text = log.read_bytes()
    assert proc.returncode == 0, text[-2000:]
    assert b"\r" not in text and b"\x1b[" not in text
    lines = text.decode().splitlines()
    assert any(line.startswith("INFO medvid: synth echo: 0/2 loop") for line in lines)
    assert any(line.startswith("INFO medvid: synth echo: 2/2 loop") for line in lines)


def test_progress_is_silent_when_disabled(capsys):
    from medvid.utils import progress

    assert list(progress(range(3), enabled=False, desc="x")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_an_empty_split_names_the_video_numbers_it_takes_and_those_found(tmp_path):
    """`synth surgery` numbers from 01, `split=cholec80_40_8_32:test` takes 49-80: the error says so."""
    (tmp_path / "videos").mkdir()
    for number in (1, 2, 3, 4, 7):
        (tmp_path / "videos" / f"video{number:02d}.mp4").write_bytes(b"")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = runner.invoke(app, ["zero-shot", "phase", str(tmp_path), "--model", str(model), "--out",
                                 str(tmp_path / "zs"), "split=cholec80_40_8_32:test"])
    shown = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "cholec80_40_8_32:test takes video numbers 49-80; the folder holds video numbers 1-4, 7" in shown
    assert "split=null for every video" in shown


def test_redirected_progress_logs_start_and_end_not_every_refresh(caplog):
    """Training refreshes its bar every step (set_postfix): redirected, that is still one line at the start and
    one at the end, with the postfix, not a line per step."""
    import logging

    from medvid.utils import progress

    with caplog.at_level(logging.INFO, logger="medvid"):
        with progress(total=100, desc="train", unit="step") as bar:
            for _ in range(100):
                bar.update(1)
                bar.set_postfix(loss="0.5")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0].startswith("train: 0/100 step")
    assert lines[1].startswith("train: 100/100 step") and lines[1].endswith("loss=0.5]")
