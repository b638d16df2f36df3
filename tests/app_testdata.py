"""Shared review-app test data: a small synthetic echo export through the real ingest (its reports carrying the
fake patients' names), a drafts fixture written to docs/drafting_contract.md, and real zero-shot outputs.
Not a test module: test files import it by name."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from medvid.config import load_config
from medvid.io.echo_sr import MEASUREMENT_COLUMNS
from medvid.io.ingest_folder import MEASUREMENTS, IngestFolder
from echo_testdata import ingest_synth, make_synth

SECTIONS = ("Left Ventricle", "Mitral Valve", "Aortic Valve")


def write_drafts(ingest_dir: Path, out: Path, foreign_study: str = "st_00000000000000ff", drafted: int = 2) -> dict:
    """drafts.jsonl (``drafted`` studies + one drafted from other data + one corrupt line), drafts/*.txt,
    errors.jsonl (the next study), per the drafting contract. Returns which study is in which state."""
    videos = pd.read_parquet(ingest_dir / "videos.parquet")
    keys = sorted(videos["study_key"].unique())
    drafted, failed, undrafted = keys[:drafted], keys[drafted], keys[drafted + 1:]
    lines = []
    for n, key in enumerate([*drafted, foreign_study]):
        loops = videos[videos["study_key"] == key]
        vids = ([{"video_key": v, "view": view or "A4C", "view_confidence": 0.9 - 0.1 * i, "view_source": "classifier"}
                 for i, (v, view) in enumerate(zip(loops["video_key"], loops["view"]))]
                or [{"video_key": "vi_00000000000000aa", "view": "A4C", "view_confidence": 0.8,
                     "view_source": "classifier"}])
        w = np.linspace(1, 2, len(vids))
        sections = {}
        for s, name in enumerate(SECTIONS):
            ws = np.roll(w, s) / np.roll(w, s).sum()
            sections[name] = {"text": f"{name} text of draft {n}. LVEF {35 + 20 * (n % 3)}%.",
                              "neighbours": [{"study_key": k, "similarity": 0.9 - 0.05 * j}
                                             for j, k in enumerate(k for k in keys if k != key)][:3],
                              "videos": [{**v, "weight": float(x)} for v, x in zip(vids, ws)]}
        ef = 35.0 + 20 * (n % 3)
        lines.append(json.dumps({
            "study_key": key, "status": "draft", "sections": sections,
            "phenotypes": {"ef": {"kind": "numeric", "value": ef, "method": "knn", "k": 50, "n": 12},
                           "reduced_ef": {"kind": "binary", "score": 0.8 if ef < 40 else 0.1, "threshold": 0.42,
                                          "call": int(ef < 40), "method": "knn", "k": 50, "n": 12}},
            "findings": {"ejection_fraction": {"kind": "numeric", "value": ef + 3, "method": "zero_shot"}},
            "videos": vids,
            "provenance": {"model": {"name": "tiny-echo", "fingerprint": "abc123def4567890"},
                           "created": "2026-11-29T23:10:00+00:00", "medvid_version": "0.1.0"},
            "text_path": f"drafts/{key}.txt", "sr_path": f"drafts/{key}.sr.dcm"}))
        (out / "drafts").mkdir(parents=True, exist_ok=True)
        (out / "drafts" / f"{key}.txt").write_text("DRAFT\n" + "\n".join(f"{k}: {v['text']}" for k, v in
                                                                           sections.items()) + "\n")
    lines.insert(1, '{"study_key": "st_broken", "sections": ')  # a line cut by a kill
    (out / "drafts.jsonl").write_text("\n".join(lines) + "\n")
    (out / "errors.jsonl").write_text(json.dumps({"study_key": failed, "reason": "no_loops_decoded",
                                                  "detail": "0 of 4 loops"}) + "\n")
    return {"drafted": drafted, "failed": failed, "undrafted": undrafted, "foreign": foreign_study,
            "low_ef": drafted[0], "high_ef": drafted[1]}


BIPLANE = "Method of Disks, Biplane"


def edit_draft(drafts_jsonl: Path, study_key: str, edit) -> None:
    """Rewrite one study's line of a drafts.jsonl in place: ``edit(row)`` changes the parsed row."""
    lines = drafts_jsonl.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f'{{"study_key": "{study_key}"'):
            row = json.loads(line)
            edit(row)
            lines[i] = json.dumps(row)
    drafts_jsonl.write_text("\n".join(lines) + "\n")


def write_measurements(ingest_dir: Path, key: str) -> dict:
    """``measurements.csv`` (docs/echo_data.md) for study ``key``, written by the ingest's table writer: LVEF on the
    study's first loop (current, and an earlier SR's replaced value), LVIDd on a still that is not a loop, an E/A
    ratio naming no image, and another study's row. Returns the first loop's key and instance key."""
    videos = pd.read_parquet(ingest_dir / "videos.parquet")
    loop = videos[videos["study_key"] == key].iloc[0]
    other = sorted(set(videos["study_key"]) - {key})[0]
    base = {"study_key": key, "instance_key": "vi_00000000000000c1", "section": "Left Ventricle",
            "method_code": "", "method_meaning": "", "site_meaning": "", "image_mode": "2D mode", "derivation": "",
            "selected": False, "replaced": False}
    lvef = {"concept_code": "LN:18043-0", "concept_meaning": "Left Ventricular Ejection Fraction by US",
            "unit": "%", "method_code": "DCM:125207", "method_meaning": BIPLANE, "image_key": loop["instance_key"]}
    rows = [{**base, **lvef, "value": 62.0, "selected": True},
            {**base, **lvef, "value": 40.0, "instance_key": "vi_00000000000000c0", "replaced": True},
            {**base, "concept_code": "LN:29436-3", "concept_meaning": "LVIDd", "value": 5.1, "unit": "cm",
             "derivation": "Mean", "image_key": "vi_00000000000000d1"},
            {**base, "section": "Mitral Valve", "concept_code": "LN:18038-0", "concept_meaning": "E/A ratio",
             "value": 1.3, "unit": "{ratio}", "image_mode": "Doppler", "image_key": ""},
            {**base, "study_key": other, "concept_code": "LN:18043-0", "concept_meaning": "LVEF of another study",
             "value": 33.0, "unit": "%", "image_key": ""}]
    IngestFolder(ingest_dir).write_table(MEASUREMENTS, pd.DataFrame(rows, columns=MEASUREMENT_COLUMNS))
    return {"video_key": loop["video_key"], "instance_key": loop["instance_key"]}


def zero_shot_outputs(surgery: Path, model: Path) -> None:
    """Real `medvid zero-shot phase` and `tools` runs of ``model`` (a tiny untrained checkpoint) on one short video."""
    from medvid.pipelines import synth_surgery, zero_shot

    synth_surgery.run(load_config(synth_surgery.Config, "synth_surgery", overrides=[
        f"out={surgery / 'cholec80'}", "videos=1", "seed=3", "duration_scale=0.3", "height=96", "width=128"]))
    for task in ("phase", "tools"):
        zero_shot.run(load_config(zero_shot.Config, "zero_shot", overrides=[
            f"task={task}", f"data_root={surgery / 'cholec80'}", f"model={model}",
            f"out={surgery / f'zero_shot_{task}'}", "plots=false"]))


def build_outputs(base: Path, model: Path) -> dict:
    """Synthetic echo export + ingest + drafts + zero-shot outputs of ``model`` under ``base``; returns paths
    and states."""
    synth, data = base / "synth", base / "data"
    make_synth(synth)
    ingest_synth(synth, data / "ingest")
    # Report text carrying the fake patients' names: the app must never show it.
    phi = _phi(synth / "dicom")
    rep = pd.read_csv(data / "ingest" / "reports.csv")
    rep["report"] = rep["report"] + " Reported for " + phi[0] + "."
    rep.to_csv(data / "ingest" / "reports.csv", index=False)
    states = write_drafts(data / "ingest", data / "draft_out")
    zero_shot_outputs(data / "surgery", model)
    return {"data": data, "dicom": synth / "dicom", "phi": phi, **states}


def build_worklist(base: Path, drafted: int = 11) -> dict:
    """A small synthetic export of ``drafted + 1`` studies (two short loops each) through the real ingest, every
    study but the last drafted: a morning's worklist for the scripted browser review."""
    from medvid.synth.echo import synthesize

    synth, data = base / "synth", base / "data"
    synthesize(synth, studies=drafted + 1, seed=5, loops_per_study=2, rows=64, cols=80, frames_range=(10, 14),
               still_fraction=0.0)
    ingest_synth(synth, data / "ingest")
    return {"data": data, "dicom": synth / "dicom",  # the draft made from other data sorts last
            **write_drafts(data / "ingest", data / "draft_out", "st_ffffffffffffffff", drafted=drafted)}


def _phi(dicom_root: Path) -> list[str]:
    """Identifying values in the synthetic DICOM tags (names, IDs, institution, physician)."""
    values = set()
    for path in dicom_root.rglob("*"):
        if path.is_file() and path.name != "EXPORT_LOG.TXT":
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for tag in ("PatientName", "PatientID", "InstitutionName", "ReferringPhysicianName"):
                if ds.get(tag):
                    values.add(str(ds.get(tag)))
            values.update(str(ds.PatientName).split("^"))
    return sorted(v for v in values if len(v) >= 4)
