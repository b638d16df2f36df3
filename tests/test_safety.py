"""Safety: key material is private and can live outside the output; paths read from tables stay
under their root."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from echo_testdata import ingest_synth, make_synth
from medvid.errors import MedvidError
from medvid.io.ingest_folder import KEY_DIR, IngestFolder
from medvid.utils import open_private, private_dir, resolve_under, write_jsonl


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_helpers(tmp_path):
    d = private_dir(tmp_path / "keys")
    assert _mode(d) == 0o700
    write_jsonl(d / "paths.jsonl", [{"a": 1}], private=True)
    assert _mode(d / "paths.jsonl") == 0o600
    (d / "cache.jsonl").write_text("x")
    os.chmod(d / "cache.jsonl", 0o644)  # an older, world-readable cache is tightened when reopened
    with open_private(d / "cache.jsonl", "a") as f:
        f.write("y")
    assert _mode(d / "cache.jsonl") == 0o600 and (d / "cache.jsonl").read_text() == "xy"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    make_synth(out)
    return out


def test_ingest_keys_are_private_and_can_live_outside_out(synth, tmp_path):
    out = tmp_path / "out"
    ingest_synth(synth, out)
    keys = out / KEY_DIR
    assert _mode(keys) == 0o700
    for name in ("salt.txt", "paths.jsonl", "scan_cache.jsonl", "README.txt"):
        assert _mode(keys / name) == 0o600, name
    outside, shared = tmp_path / "private_keys", tmp_path / "shareable"
    ingest_synth(synth, shared, f"keys_dir={outside}")
    assert not (shared / KEY_DIR).exists() and _mode(outside) == 0o700
    assert {p.name for p in outside.iterdir()} >= {"salt.txt", "paths.jsonl", "scan_cache.jsonl"}
    paths = IngestFolder(shared, keys_dir=outside).video_paths()
    assert paths and all(not Path(p).is_absolute() for p in paths.values())
    with pytest.raises(MedvidError, match="missing"):
        IngestFolder(shared).video_paths()


def test_resolve_under_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "v.dcm").write_text("x")
    (tmp_path / "secret.txt").write_text("s")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    (root / "inside_link").symlink_to(root / "a" / "v.dcm")
    assert resolve_under(root, "a/v.dcm") == root.resolve() / "a" / "v.dcm"
    assert resolve_under(root, "inside_link").exists()
    for bad in ("../secret.txt", "a/../../secret.txt", str(tmp_path / "secret.txt"), "link", ""):
        with pytest.raises(MedvidError, match="refusing path"):
            resolve_under(root, bad)


def test_datasets_refuse_paths_out_of_their_root(tmp_path):
    """A tampered table (``path`` column / ``pairs.jsonl``) cannot make a data set open files elsewhere."""
    import pandas as pd

    from medvid.datasets.echo import EchoVideoDataset
    from medvid.transforms.contract import Sampling
    from medvid.datasets.lectures import LecturePairDataset

    ingest_dir = tmp_path / "ingest"
    ingest_dir.mkdir()
    pd.DataFrame({"video_key": ["vi_1"], "study_key": ["st_1"], "path": ["../outside.dcm"], "split": ["train"],
                  "fps": [30.0], "n_frames": [16]}).to_parquet(ingest_dir / "videos.parquet")
    try:
        ds = EchoVideoDataset(ingest_dir, tmp_path / "dicom", Sampling(mask="none"), preprocess=None)
    except (MedvidError, KeyError, ValueError) as exc:  # the table is too thin for this reader: test the helper path
        pytest.skip(f"videos.parquet stub not accepted ({exc})")
    with pytest.raises(MedvidError):
        ds.clip(ds.videos.iloc[0])
    lectures = LecturePairDataset.__new__(LecturePairDataset)
    lectures.root, lectures._open, lectures._pid, lectures._max_open = tmp_path / "lectures", {}, os.getpid(), 2
    with pytest.raises(MedvidError, match="refusing path"):
        lectures._video("../../etc/passwd")


def test_echo_pretraining_splits_without_an_ingest_split(synth, tmp_path):
    """One split policy: studies without a split are held out by whole patient (else study), seeded."""
    import pandas as pd

    from medvid.training.data import load_echo_studies

    out = tmp_path / "ingest"
    ingest_synth(synth, out)
    reports = pd.read_csv(out / "reports.csv")
    reports.drop(columns=["split"], errors="ignore").to_csv(out / "reports.csv", index=False)
    videos = IngestFolder(out).read_videos()
    if "split" in videos:
        videos.assign(split="").to_parquet(out / "videos.parquet")
    studies = load_echo_studies(out, 0.25, 0.25, seed=1)
    assert studies and {s.split for s in studies} <= {"train", "val", "test"} and "train" in {s.split for s in studies}
    patient = dict(zip(videos["study_key"], videos["patient_key"]))
    by_patient: dict = {}
    for s in studies:
        by_patient.setdefault(patient[s.study_key], set()).add(s.split)
    assert all(len(v) == 1 for v in by_patient.values())  # a patient never straddles splits
    assert [s.split for s in load_echo_studies(out, 0.25, 0.25, seed=1)] == [s.split for s in studies]


def test_relative_message():
    from medvid.utils import relative_message

    root = Path("/data/hospital/cases")
    assert relative_message(MedvidError("/data/hospital/cases/p1/v.mp4: cannot decode"), root) == "p1/v.mp4: cannot decode"
    assert relative_message("/elsewhere/x.mp4: bad", root) == "/elsewhere/x.mp4: bad"


def test_surgical_errors_name_videos_relative_to_the_data_root(tmp_path, caplog, tiny_model):
    """A video that cannot be read is reported without the data root's absolute path (errors.jsonl, logs)."""
    import logging

    from medvid.config import load_config
    from medvid.pipelines import zero_shot

    model = tiny_model(input_size=32)
    data = tmp_path / "private_site_name" / "videos_root"
    data.mkdir(parents=True)
    (data / "broken.mp4").write_bytes(b"this is not a video")
    cfg = load_config(zero_shot.Config, "zero_shot", overrides=[f"data_root={data}", f"model={model}",
                                                                f"out={tmp_path / 'out'}"])
    with caplog.at_level(logging.INFO, logger="medvid"), pytest.raises(MedvidError, match="no video could"):
        zero_shot.run(cfg)
    errors = (tmp_path / "out" / "errors.jsonl").read_text()
    assert "broken" in errors and "private_site_name" not in errors
    assert "private_site_name" not in caplog.text


@pytest.mark.parametrize("tamper, message", [
    ({"max_frames": 40_000_000}, r"tensor 'video\.temporal\.pos' is \[1, 8, 32\] in the weights, the config builds "
                                 r"\[1, 40000000, 32\]"),
    ({"temporal_layers": 3}, r"the config builds [\d,]+ values, the weights hold [\d,]+ \(absent: \['video\.temporal"),
], ids=["max_frames", "layers"])
def test_checkpoint_config_is_checked_against_the_weights_before_allocating(tiny_model, tmp_path, monkeypatch,
                                                                            tamper, message):
    """A tampered ``config.json`` (``max_frames`` 40,000,000 → 5 GB of position table) is refused with the tensor it
    mismatches, and the architecture is only ever built on the meta device (nothing allocated) before that."""
    import json
    import shutil

    import torch

    from medvid.models import factory
    from medvid.models.checkpoint import load_pretrained

    folder = tmp_path / "model"
    shutil.copytree(tiny_model(input_size=32, temporal="transformer", temporal_width=32, temporal_layers=1,
                               temporal_heads=2, max_frames=8), folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(tamper)
    (folder / "config.json").write_text(json.dumps(meta))
    devices: list[str] = []
    create_model = factory.create_model

    def spy(*args, **kwargs):  # the builder the checkpoint format calls for a video_text model
        devices.append(torch.empty(0).device.type)
        return create_model(*args, **kwargs)

    monkeypatch.setattr(factory, "create_model", spy)
    with pytest.raises(MedvidError, match=message):
        load_pretrained(folder)
    assert devices == ["meta"]


def test_security_page_names_only_tests_that_exist():
    """docs/security.md lists each guarantee with the test that holds it: every test it names must exist."""
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "security.md").read_text(encoding="utf-8")
    current, missing, count = None, [], 0
    for m in re.finditer(r"`(tests/[\w/]+\.py)?::(\w+)`", text):
        current = m.group(1) or current
        count += 1
        if not re.search(rf"^def {m.group(2)}\(", (root / current).read_text(encoding="utf-8"), re.M):
            missing.append(f"{current}::{m.group(2)}")
    assert count > 40 and not missing, missing
