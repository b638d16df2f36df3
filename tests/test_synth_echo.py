"""Synthetic echo studies: real DICOM files, findings visible in the pixels, reports consistent with labels."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom import dcmread

from echo_testdata import make_synth
from medvid.io.dicom import find_files
from medvid.io.regions import box_from_mask, estimate_sector_mask
from medvid.io.reports import parse_sections
from medvid.synth.echo import LABEL_COLUMNS, Findings, render_loop, sample_findings
from medvid.vocab import ECHO_SECTIONS, ECHO_VIEWS

NORMAL = Findings(ef=65, lv_dilation=False, la_dilation=False, pericardial_effusion=0, mitral_regurgitation=0,
                  tricuspid_regurgitation=0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    make_synth(out)
    return out


def _render(view: str, findings: Findings = NORMAL, seed: int = 0, n: int = 30, fps: float = 30.0) -> np.ndarray:
    frames, _ = render_loop(view, findings, n, fps, 96, 128, np.random.default_rng(seed), heart_rate=60.0,
                            overlay_text=("DOE^JANE P1234567", "2019-06-15"))
    return frames


def test_files_are_real_dicom_as_machines_write_them(synth):
    root = synth / "dicom"
    files = find_files(root)
    cines, stills, other = [], [], []
    for path in files:
        try:
            ds = dcmread(path)
        except Exception:  # noqa: BLE001
            other.append(path)
            continue
        (cines if int(ds.get("NumberOfFrames", 1)) > 1 else stills).append((path, ds))
    assert [p.name for p in other] == ["EXPORT_LOG.TXT"]
    assert len(cines) == 16 and len(stills) == 4
    syntaxes = {str(ds.file_meta.TransferSyntaxUID) for _, ds in cines}
    assert {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80"} <= syntaxes
    for path, ds in cines:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.3.1" and ds.Modality == "US"
        assert ds.PatientName and ds.PatientID and ds.PatientBirthDate and ds.InstitutionName
        assert "SequenceOfUltrasoundRegions" in ds and ("FrameTime" in ds or "FrameTimeVector" in ds)
        assert re.fullmatch(r"P\d{7}/\d{8}", "/".join(path.relative_to(root).parts[:-1]))
        arr = ds.pixel_array  # pydicom itself decodes every file we wrote
        assert arr.shape[:3] == (int(ds.NumberOfFrames), 96, 128)
        if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50":
            assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.LossyImageCompression == "01"
    assert any(p.suffix == "" for p, _ in cines) and any(p.suffix == ".dcm" for p, _ in cines)


def test_our_reader_matches_pydicom_on_every_synthetic_format(synth):
    """Lossless formats decode bit-exactly; JPEG within decoder rounding (Pillow vs pylibjpeg)."""
    from medvid.io.dicom import DicomCine

    seen = set()
    for path in find_files(synth / "dicom"):
        if path.name.startswith(("EXPORT", "SC")):
            continue
        cine = DicomCine(path)
        ds = dcmread(path)
        ref = ds.pixel_array[[0, cine.n_frames - 1]]
        if ref.ndim == 3:
            ref = np.repeat(ref[..., None], 3, axis=-1)
        diff = np.abs(cine.frames([0, cine.n_frames - 1]).astype(int) - ref.astype(int))
        lossy = ds.get("LossyImageCompression") == "01"
        if lossy:  # chroma upsampling differs between the two decoders at sharp colour edges
            assert diff.mean() < 0.5 and diff.max() <= 16, (cine.transfer_syntax.name, diff.max())
        else:
            assert diff.max() == 0, cine.transfer_syntax.name
        seen.add(cine.transfer_syntax.name)
    assert len(seen) >= 4


def test_same_seed_same_dataset(synth, tmp_path):
    make_synth(tmp_path / "again")
    for name in ("reports.csv", "labels.csv", "views.csv"):
        assert (synth / name).read_text() == (tmp_path / "again" / name).read_text()


def test_reports_agree_with_labels(synth):
    reports = pd.read_csv(synth / "reports.csv")
    labels = pd.read_csv(synth / "labels.csv").set_index("study_uid")
    assert list(labels.columns) == list(LABEL_COLUMNS)
    assert set(reports["split"]) <= {"train", "val", "test"}
    for uid, text in zip(reports["study_uid"], reports["report"]):
        sections = parse_sections(text)
        assert set(sections) <= set(ECHO_SECTIONS) and "Left Ventricle" in sections
        lab = labels.loc[uid]
        ef = int(re.search(r"(\d+) ?%", sections["Left Ventricle"]).group(1))
        assert abs(ef - lab["ef"]) <= 0.5 + 1e-9
        effusion = not sections["Pericardium"].lower().startswith(("no ", "there is no"))
        assert effusion == bool(lab["pericardial_effusion"])
        mr = re.match(r"(moderate|severe) mitral", sections["Mitral Valve"].lower()) is not None
        assert mr == bool(lab["mitral_regurgitation"])
        assert ("dilated" in sections["Left Ventricle"] or "enlarged" in sections["Left Ventricle"]) == bool(lab["lv_dilation"])


def test_report_phrasing_varies(tmp_path):
    from medvid.synth.echo import report_sections

    rng = np.random.default_rng(0)
    texts = {report_sections(NORMAL, rng)["Left Ventricle"] for _ in range(30)}
    assert len(texts) >= 4


def _dark_fraction(frames: np.ndarray) -> np.ndarray:
    return (frames.mean(axis=-1) < 25).mean(axis=(1, 2))


def test_ejection_fraction_drives_wall_motion():
    """The LV cavity (right upper quadrant of A4C) shrinks in systole by an amount that follows EF."""
    swing = {}
    for ef in (65, 45, 25):
        lv = _render("A4C", Findings(ef, False, False, 0, 0, 0))[:, 20:56, 70:88].mean(axis=-1) < 25
        dark = lv.mean(axis=(1, 2))
        swing[ef] = dark.max() - dark.min()
    assert swing[65] > 1.5 * swing[45] > 1.5 * 1.5 * swing[25]


def test_dilation_and_effusion_are_visible():
    base = _dark_fraction(_render("A4C", NORMAL)).mean()
    dilated = _dark_fraction(_render("A4C", Findings(65, True, False, 0, 0, 0))).mean()
    effusion = _dark_fraction(_render("A4C", Findings(65, False, False, 2, 0, 0))).mean()
    assert dilated > base + 0.01 and effusion > base + 0.02


def test_regurgitation_jet_only_when_present():
    def mosaic(frames):  # yellow / green / cyan jet colours, absent from laminar red/blue flow
        r, g, b = (frames[..., c].astype(int) for c in range(3))
        r, g, b = r[:, 8:80], g[:, 8:80], b[:, 8:80]  # the fan, not the green ECG strip below it
        spread = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
        return int(((g > 180) & (spread > 120)).sum())  # saturated green-ish hues; grey speckle has no spread

    assert mosaic(_render("Apical_Doppler", Findings(60, False, False, 0, 3, 0))) > 200
    assert mosaic(_render("Apical_Doppler", NORMAL)) < 20
    assert mosaic(_render("A4C", Findings(60, False, False, 0, 3, 0))) < 20  # greyscale views show no flow


def test_views_are_distinct():
    """A nearest-centroid classifier on 8x8-pooled single frames tells all 11 views apart on unseen
    seeds and findings: the views are learnable from coarse features."""
    def feature(view, seed):
        findings = sample_findings(np.random.default_rng(100 + seed))
        frame = _render(view, findings, seed=seed, n=4)[0].astype(float)
        return frame.reshape(12, 8, 16, 8, 3).mean(axis=(1, 3)).ravel()

    centroids = {v: np.mean([feature(v, s) for s in range(3)], axis=0) for v in ECHO_VIEWS}
    for view in ECHO_VIEWS:
        for seed in (3, 4):
            x = feature(view, seed)
            assert min(ECHO_VIEWS, key=lambda u: np.linalg.norm(x - centroids[u])) == view


def test_sector_estimate_excludes_text_and_ecg():
    frames, geometry = render_loop("A4C", NORMAL, 24, 30.0, 128, 160, np.random.default_rng(3), 70.0,
                                   ("DOE^JANE P1234567", "2019-06-15"))
    est = box_from_mask(estimate_sector_mask(frames))
    truth = geometry["sector_box"]
    assert est is not None
    x0, y0, x1, y1 = truth  # inside the true fan box (so no text above, no ECG below), covering most of it
    assert est[0] >= x0 - 3 and est[1] >= y0 - 3 and est[2] <= x1 + 3 and est[3] <= y1 + 3, (est, truth)
    assert (est[2] - est[0]) * (est[3] - est[1]) >= 0.8 * (x1 - x0) * (y1 - y0), (est, truth)


def test_cli_synth_echo(tmp_path):
    from typer.testing import CliRunner

    from medvid.cli import app

    result = CliRunner().invoke(app, ["synth", "echo", str(tmp_path / "s"), "--studies", "2", "--seed", "3",
                                      "loops_per_study=2", "frames_min=8", "frames_max=8", "progress=false"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "s" / "views.csv")) == 4


def test_required_views_are_in_every_study(tmp_path):
    from medvid.synth.echo import synthesize

    want = ["A4C", "Apical_Doppler", "Doppler_Parasternal_Short"]
    synthesize(tmp_path / "s", studies=3, seed=4, loops_per_study=4, rows=64, cols=80, frames_range=(4, 4),
               still_fraction=0.0, required_views=want)
    views = pd.read_csv(tmp_path / "s" / "views.csv")["view"].tolist()
    assert len(views) == 12
    for study in range(3):
        assert views[4 * study:4 * study + 3] == want and views[4 * study + 3] not in want
    with pytest.raises(ValueError, match="unknown views"):
        synthesize(tmp_path / "t", studies=1, required_views=["A7C"])
    # the default keeps the shipped behaviour: A4C and Parasternal_Long first
    synthesize(tmp_path / "d", studies=1, seed=4, loops_per_study=3, rows=64, cols=80, frames_range=(4, 4))
    assert pd.read_csv(tmp_path / "d" / "views.csv")["view"].tolist()[:2] == ["A4C", "Parasternal_Long"]


def _random_run(out: Path, seed: int) -> Path:
    from medvid.config import load_config
    from medvid.pipelines import synth_echo

    synth_echo.run(load_config(synth_echo.Config, "synth_echo", overrides=[
        f"out={out}", "studies=6", f"seed={seed}", "style=random", "loops_per_study=2", "rows=64", "cols=80",
        "frames_min=6", "frames_max=6", "progress=false", "still_fraction=0"]))
    return out


def test_random_echo_every_seed_is_another_world_and_the_same_seed_the_same():
    from medvid.synth.echo_world import random_echo_world

    (l1, r1), (l2, r2) = random_echo_world(1000), random_echo_world(1001)
    assert random_echo_world(1000) == (l1, r1)
    for axis in ("half_angle", "depth", "gain", "speckle_shape", "speckle_mix", "attenuation", "heart_rate", "systole",
                 "sharpness", "wall"):
        assert getattr(l1, axis) != getattr(l2, axis), axis  # geometry, gain, speckle, heart rate and cycle, wall motion
    looks = [random_echo_world(s)[0] for s in range(1000, 1010)]
    assert len({lk.tint for lk in looks}) > 2 and len({lk.section_order for lk in looks}) > 2  # colour maps, orders
    assert r1.pools != r2.pools and r1.omit != r2.omit  # report phrasing
    frames = [render_loop("A4C", NORMAL, 4, 30.0, 96, 128, np.random.default_rng(0), 60.0, look=lk)[0] for lk in (l1, l2)]
    assert np.abs(frames[0].astype(float) - frames[1].astype(float)).mean() > 5


def test_random_echo_keeps_ef_in_the_wall_motion():
    from medvid.synth.echo_world import random_echo_world

    for seed in (1000, 1001, 1002):
        look = random_echo_world(seed)[0]
        dark = {}
        for ef in (65, 25):  # the same rng: the same speckle and geometry, only the EF differs
            frames, geo = render_loop("A4C", Findings(ef, False, False, 0, 0, 0), 40, 30.0, 96, 128,
                                      np.random.default_rng(1), 60.0, look=look)
            dark[ef] = _dark_fraction(frames)
        ed, es = int(np.argmin(geo["contraction"])), int(np.argmax(geo["contraction"]))
        at_es = dark[25][es] - dark[65][es]  # a low EF leaves a larger cavity at end-systole ...
        assert at_es > 0.004 and abs(dark[25][ed] - dark[65][ed]) < at_es / 3, (seed, at_es)  # ... the same at end-diastole


def test_random_echo_reports_agree_with_labels_and_are_reproducible(tmp_path):
    from medvid.synth.echo_world import random_echo_world

    a = _random_run(tmp_path / "a", 1003)
    reports = pd.read_csv(a / "reports.csv")
    labels = pd.read_csv(a / "labels.csv").set_index("study_uid")
    order = random_echo_world(1003)[0].section_order
    for uid, text in zip(reports["study_uid"], reports["report"]):
        sections = parse_sections(text)
        names = [line.split(":")[0] for line in text.splitlines() if line.split(":")[0] in ECHO_SECTIONS]
        assert names == [n for n in order if n in sections]  # the world's section order
        ef = int(re.search(r"(\d+) ?(?:%|percent)", sections["Left Ventricle"]).group(1))
        assert abs(ef - labels.loc[uid]["ef"]) <= 0.5 + 1e-9
        lv = sections["Left Ventricle"].lower()
        assert bool(re.search(r"dilat|enlarg|increased", lv)) == bool(labels.loc[uid]["lv_dilation"])
        effusion = "no " not in sections["Pericardium"].lower() and "without" not in sections["Pericardium"].lower()
        assert effusion == bool(labels.loc[uid]["pericardial_effusion"])
    assert len([p for p in find_files(a / "dicom") if p.name.startswith("US")]) == 12
    b = _random_run(tmp_path / "b", 1003)
    for name in ("reports.csv", "labels.csv", "views.csv"):
        assert (a / name).read_text() == (b / name).read_text()
    c = _random_run(tmp_path / "c", 1004)
    assert (a / "reports.csv").read_text() != (c / "reports.csv").read_text()


def test_random_echo_is_refused_for_the_echonet_layout(tmp_path):
    from medvid.config import load_config
    from medvid.errors import MedvidError
    from medvid.pipelines import synth_echo

    for bad, match in (("layout=echonet", "layout=dicom"), ("style=b", "style must be one of")):
        with pytest.raises(MedvidError, match=match):
            synth_echo.run(load_config(synth_echo.Config, "synth_echo", overrides=[f"out={tmp_path}", "style=random", bad]))


def test_the_development_echo_world_stays_byte_identical():
    import hashlib

    from medvid.synth.echo import report_sections

    frames, _ = render_loop("Apical_Doppler", Findings(40, True, False, 1, 2, 0), 6, 30.0, 64, 80, np.random.default_rng(2),
                            70.0, ("X", "Y"))
    rng = np.random.default_rng(3)
    text = repr([report_sections(sample_findings(rng), rng) for _ in range(5)])
    digest = hashlib.sha256(frames.tobytes() + text.encode()).hexdigest()
    assert digest == "43ebe5141122ba21e8b7b3170e21990d29d0f1059057351db250350a3278c142"  # main's, before style=random
