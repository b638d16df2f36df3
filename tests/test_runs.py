"""Resume only the same run: settings records, refusals that name the keys, failed starts that do not block."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from medvid.errors import MedvidError
from medvid.runs import claim_out, run_settings
from medvid.training.trainer import Trainer, TrainConfig
from tiny_training import PairData, TinyDual


def test_changed_settings_are_refused_with_the_keys_named(tmp_path):
    claim_out(tmp_path, "pretrain", {"train.lr": 0.001, "ingest_dir": "a"})
    assert claim_out(tmp_path, "pretrain", {"train.lr": 0.001, "ingest_dir": "a"}) is True
    with pytest.raises(MedvidError, match=r"train\.lr: 0\.001 → 0\.1.*overwrite=true"):
        claim_out(tmp_path, "pretrain", {"train.lr": 0.1, "ingest_dir": "a"})
    assert claim_out(tmp_path, "pretrain", {"train.lr": 0.1}, overwrite=True) is False
    assert json.loads((tmp_path / "settings.json").read_text()) == {"medvid_job": "pretrain", "train.lr": 0.1}


def test_a_start_that_left_no_results_does_not_block_the_corrected_run(tmp_path):
    claim_out(tmp_path, "pretrain", {"smoothing": "hmmm"})
    assert claim_out(tmp_path, "pretrain", {"smoothing": "hmm"}, has_results=False) is False


def test_paths_are_recorded_without_absolute_paths_and_compare_by_target(tmp_path, monkeypatch):
    data = tmp_path / "ingest"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    rel = run_settings({"ingest_dir": "ingest", "train": {"lr": 1.0, "progress": True}}, ignore=["train.progress"])
    absolute = run_settings({"ingest_dir": str(data), "train": {"lr": 1.0, "progress": False}},
                            ignore=["train.progress"])
    assert rel == absolute and set(rel) == {"ingest_dir", "train.lr"}
    assert str(tmp_path) not in json.dumps(rel)


def test_trainer_refuses_to_resume_checkpoints_of_other_settings(tmp_path):
    def fit(lr: float, resume: bool = True) -> dict:
        torch.manual_seed(0)
        cfg = TrainConfig(max_steps=4, batch_size=16, lr=lr, warmup_steps=0, checkpoint_every=2, eval_every=0,
                          progress=False, device="cpu")
        return Trainer(TinyDual(), PairData(64), cfg, tmp_path, settings={"train.lr": lr}).fit(resume=resume)

    assert fit(0.01)["step"] == 4
    with pytest.raises(MedvidError, match="train.lr"):
        fit(0.1)
    assert fit(0.1, resume=False)["step"] == 4  # resume=false starts afresh


def test_settings_added_by_a_newer_medvid_do_not_block_a_resume(tmp_path):
    claim_out(tmp_path, "pretrain", {"train.lr": 0.001})
    assert claim_out(tmp_path, "pretrain", {"train.lr": 0.001, "echo.val_fraction": 0.15}) is True


# ----------------------------------------------------------------------------- every job's OUT (claim_out)


def test_a_folder_nobody_proved_ours_is_refused_untouched_naming_its_entries(tmp_path):

    user = tmp_path / "mine"
    user.mkdir()
    for name in ("notes.txt", "reports.csv", "thesis.docx", "zz.png"):
        (user / name).write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(MedvidError, match=r"mine: it holds files that medvid ingest did not write "
                                              r"\(notes\.txt, reports\.csv, thesis\.docx and 1 more\); choose a new"):
            claim_out(user, "ingest", {"min_frames": 2}, overwrite=overwrite)
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt", "reports.csv", "thesis.docx", "zz.png"]
    (tmp_path / "empty").mkdir()
    assert claim_out(tmp_path / "empty", "ingest", {"min_frames": 2}) is False  # empty or absent: fine
    assert claim_out(tmp_path / "new", "ingest", {"min_frames": 2}) is False
    with pytest.raises(MedvidError, match="holds the output of medvid ingest, not medvid draft"):
        claim_out(tmp_path / "new", "draft", {"min_frames": 2}, overwrite=True)


SYNTH = ("studies=3", "loops_per_study=2", "rows=48", "cols=64", "frames_min=6", "frames_max=8", "still_fraction=0",
         "progress=false", "split_fractions=[0.34,0.33,0.33]")


def _synth(out, *extra):
    from medvid.config import load_config
    from medvid.pipelines import synth_echo as job

    return job.run(load_config(job.Config, "synth_echo", None, [f"out={out}", *SYNTH, *extra]))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 3-study export, its ingest, tiny models and a train-split bank."""
    from draft_testdata import build_bank, tiny_models
    from echo_testdata import ingest_synth

    root = tmp_path_factory.mktemp("outdirs")
    _synth(root / "synth")
    ingest_synth(root / "synth", root / "ingest")
    model, views = tiny_models(root)
    build_bank(root, model, views, root / "bank", "split=''")
    return {"root": root, "model": model, "views": views, "bank": root / "bank", "dicom": root / "synth" / "dicom",
            "ingest": root / "ingest", "synth": root / "synth"}


def _user_folder(path):
    path.mkdir()
    (path / "my_notes.txt").write_text("mine")
    return path


def test_jobs_refuse_a_users_folder_and_leave_it_untouched(world, tmp_path):
    from draft_testdata import draft_cfg
    from echo_testdata import ingest_synth
    from medvid.pipelines import draft as job

    for name, run in (("synth echo", lambda out: _synth(out)),
                      ("ingest", lambda out: ingest_synth(world["synth"], out)),
                      ("draft", lambda out: job.run(draft_cfg(world, out, "split=''")))):
        out = _user_folder(tmp_path / name.replace(" ", "_"))
        with pytest.raises(MedvidError, match=f"medvid {name} did not write \\(my_notes.txt\\)"):
            run(out)
        assert [p.name for p in out.iterdir()] == ["my_notes.txt"]


def test_overwrite_never_deletes_a_real_export_that_looks_like_synthetic_output(tmp_path):
    """An EchoNet-Dynamic folder holds FileList.csv, VolumeTracings.csv and Videos/ as synth echo writes them:
    only a record naming the job proves a folder ours, so overwrite=true leaves the user's data alone."""
    real = tmp_path / "EchoNet-Dynamic"
    (real / "Videos").mkdir(parents=True)
    (real / "FileList.csv").write_text("FileName,EF,Split\n0X1,55,TRAIN\n")
    (real / "VolumeTracings.csv").write_text("FileName,X1,Y1,X2,Y2,Frame\n")
    (real / "Videos" / "0X1.avi").write_bytes(b"a real patient's video")
    before = sorted((p.relative_to(real), p.read_bytes()) for p in real.rglob("*") if p.is_file())
    with pytest.raises(MedvidError, match="medvid synth echo did not write"):
        _synth(real, "layout=echonet", "overwrite=true")
    assert sorted((p.relative_to(real), p.read_bytes()) for p in real.rglob("*") if p.is_file()) == before


def test_ingest_resumes_the_same_settings_and_refuses_others_naming_old_and_new(world, tmp_path):
    from echo_testdata import ingest, ingest_synth

    out = tmp_path / "ingest"
    first = ingest_synth(world["synth"], out)
    assert ingest_synth(world["synth"], out)["reused_from_cache"] == first["files"]  # resume: the scan cache
    with pytest.raises(MedvidError, match=r"min_frames: 2 → 40.*reports: #[0-9a-f]+ → \"\".*overwrite=true"):
        ingest(world["dicom"], out, "min_frames=40")
    assert (out / "reports.csv").is_file() and len(pd.read_parquet(out / "videos.parquet")) == first["videos"]
    assert ingest(world["dicom"], out, "min_frames=7", "overwrite=true")["videos"] < first["videos"]
    assert not (out / "reports.csv").exists()  # the earlier run's table, retired by the rewrite
    assert str(world["root"]) not in (out / "settings.json").read_text()  # OUT stays shareable: no path, no salt


def test_bank_build_refuses_other_settings_and_replaces_its_own_bank_on_overwrite(world, tmp_path):
    import shutil

    from draft_testdata import build_bank

    bank = tmp_path / "bank"
    shutil.copytree(world["bank"], bank)
    studies = json.loads((bank / "manifest.json").read_text())
    with pytest.raises(MedvidError, match=r"split: \"\" → val.*overwrite=true"):
        build_bank(world["root"], world["model"], world["views"], bank, "split=val")
    assert json.loads((bank / "manifest.json").read_text()) == studies
    with pytest.raises(MedvidError, match=r"split='testing': .* it holds test, train, val"):
        build_bank(world["root"], world["model"], world["views"], bank, "split=testing", "overwrite=true")
    assert build_bank(world["root"], world["model"], world["views"], bank, "split=val", "overwrite=true")["studies"] == 1


def test_draft_split_typo_is_refused_before_work_and_does_not_block_the_fix(world, tmp_path):
    from draft_testdata import draft_cfg
    from medvid.pipelines import draft as job

    out = tmp_path / "drafts"
    with pytest.raises(MedvidError, match=r"split='testing': .* it holds test, train, val"):
        job.run(draft_cfg(world, out, "split=testing"))
    assert not out.exists()
    assert job.run(draft_cfg(world, out, "split=test"))["drafts_total"] == 1
    with pytest.raises(MedvidError, match=r"split: test → train.*overwrite=true"):
        job.run(draft_cfg(world, out, "split=train"))
    summary = job.run(draft_cfg(world, out, "split=train", "overwrite=true"))
    assert summary["drafts_total"] == 1 and summary["drafted_now"] == 1
    assert len(list((out / "drafts").glob("*.txt"))) == 1  # the test split's draft went with its run


def test_evaluate_claims_its_out_like_every_job(world, tmp_path):
    from draft_testdata import build_bank, draft_cfg
    from medvid.config import load_config
    from medvid.pipelines import draft as draft_job, evaluate as job

    drafts, train_bank = tmp_path / "drafts", tmp_path / "train_bank"
    build_bank(world["root"], world["model"], world["views"], train_bank, "split=train")
    draft_job.run(draft_cfg({**world, "bank": train_bank}, drafts, "split=test"))  # a study the bank does not hold

    def evaluate(*extra):
        return job.run(load_config(job.Config, "evaluate", None, [f"drafts={drafts}", f"ingest={world['ingest']}",
                                                                  *extra]))

    with pytest.raises(MedvidError, match=r"medvid evaluate did not write \(my_notes.txt\)"):
        evaluate(f"out={_user_folder(tmp_path / 'mine')}")
    evaluate()
    evaluate()  # the same settings: written again
    with pytest.raises(MedvidError, match=r"seed: 0 → 1.*overwrite=true"):
        evaluate("seed=1")
    assert evaluate("seed=1", "overwrite=true")["out"] == str(drafts / "evaluation")


def test_synth_echo_refuses_other_settings_and_overwrite_replaces_its_export(tmp_path):
    out = tmp_path / "synth"
    _synth(out)
    first = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    _synth(out)  # the same settings: the same files again
    with pytest.raises(MedvidError, match=r"seed: 0 → 5.*overwrite=true"):
        _synth(out, "seed=5")
    _synth(out, "seed=5", "overwrite=true")
    again = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(again) == len(first) and again != first  # the seed-0 patients' folders are gone, not mixed in
