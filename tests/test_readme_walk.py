"""The README's own-data steps, run as written on a fresh synthetic export (echo and surgery).

The commands are parsed from README.md's code blocks, so this test fails when the page drifts from the product.
The paths are read as the README says for synthetic data; only settings that each command documents in its
``--help`` are added, to keep the data and the training small.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# Small sizes, by command: every key is a documented setting of that job (`medvid JOB --help`).
SMALL = {
    "synth echo": ["studies=10", "loops_per_study=2", "rows=64", "cols=80", "frames_min=16", "frames_max=16",
                   "still_fraction=0", "split_fractions=[0.4,0.3,0.3]"],
    "synth lectures": ["lectures=3", "height=64", "width=64", "audio=false"],
    "synth surgery": ["videos=2", "height=64", "width=64", "duration_scale=0.2"],
    "train-views": ["train.max_steps=2", "train.batch_size=4", "model_overrides={input_size: 64}"],
    "pretrain": ["train.max_steps=2", "train.batch_size=4", "model_overrides={input_size: 64}"],
    "bank build": ["min_patients=2"],  # 4 training patients here: the default 5 is for real archives
}
# What the README's own-data section must go through (so a parse that finds nothing cannot pass).
STEPS = {"synth echo", "synth lectures", "synth surgery", "ingest", "train-views", "pretrain", "bank build",
         "bank calibrate", "draft", "evaluate drafts", "lectures index", "zero-shot phase", "zero-shot tools"}


def _own_data_blocks() -> list[str]:
    """The ```bash blocks of the README's "Your own data, step by step" section."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Your own data, step by step\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no 'Your own data, step by step' section"
    return re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)


def _command(line: str) -> str:
    """``synth echo``, ``ingest``, ``bank build`` …: the words after ``medvid`` that name the job."""
    words = shlex.split(line, comments=True)[1:]
    return " ".join(words[:2] if words[0] in {"synth", "bank", "zero-shot", "evaluate", "lectures"} else words[:1])


def _as_synthetic(line: str) -> str:
    """A README line with its /data paths read as the README says for the synthetic export, and small sizes."""
    line = line.replace("/data/echo_export", "data/echo/dicom")
    line = re.sub(r"/data/(\w+)\.csv", r"data/echo/\1.csv", line).replace("/data/", "data/")
    if not line.startswith("medvid "):
        return line
    line = re.sub(r"\s+#.*$", "", line)  # the README's trailing comments
    return " ".join([line, *map(shlex.quote, SMALL.get(_command(line), []))])


@pytest.mark.slow
@pytest.mark.timeout(3600)  # every job of the README in turn: 28 minutes on 2 cores shared by 8 jobs
def test_readme_own_data_steps_run_as_written(tmp_path):
    ran: list[str] = []
    lines = ["set -euo pipefail", f"medvid() {{ {shlex.quote(sys.executable)} -m medvid.cli \"$@\"; }}"]
    for block in _own_data_blocks():
        for line in block.splitlines():
            if not line.strip():
                continue
            if line.startswith("medvid "):
                if _command(line) == "transcribe":  # "if the lectures have no transcripts yet": these have
                    continue
                ran.append(_command(line))
            lines.append(_as_synthetic(line) + (" > /dev/null" if line.startswith("medvid ") else ""))
    assert STEPS <= set(ran), f"README steps missing: {sorted(STEPS - set(ran))}"
    proc = subprocess.run(["bash", "-c", "\n".join(lines)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=3500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "\r" not in proc.stderr  # redirected stderr: plain lines from every job, no repainting bars
    drafts = (tmp_path / "work/drafts/drafts.jsonl").read_text().splitlines()
    assert drafts and all(json.loads(row)["sections"] for row in drafts)
    assert (tmp_path / "work/zs_phase/metrics.json").is_file() and (tmp_path / "work/zs_tools/metrics.json").is_file()
    phase = json.loads((tmp_path / "work/zs_phase/metrics.json").read_text())
    assert "video49" in json.dumps(phase)  # the test split of cholec80_40_8_32 found the synthetic videos
