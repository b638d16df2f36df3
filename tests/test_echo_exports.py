"""Echo exports as hospitals send them (issue 14): containers, object types, vendor SRs, accession joins,
calibration and layouts, cardiac-cycle sampling, burned-in text. Every case is a real DICOM file built
to match it (pydicom / highdicom), small enough to keep the whole file fast."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from echo_testdata import ingest
from medvid.io.dicom import DicomCine, DicomFileError, inspect_file
from medvid.transforms.contract import Sampling

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
STUDY, STUDY2 = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"


def us_cine(frames: np.ndarray, study_uid: str = STUDY, regions: list[dict] | None = None,
            sop_class: str = US_MULTIFRAME, fps: float = 30.0, **tags) -> Dataset:
    """A native RGB US multi-frame dataset (what a cart writes, minus JPEG) with optional regions."""
    t, h, w, _ = frames.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.PatientID, ds.PatientName, ds.AccessionNumber = "P1234567", "Doe^Jane", "ACC0001"
    ds.Modality, ds.Manufacturer = "US", "medvid-test"
    ds.Rows, ds.Columns, ds.NumberOfFrames = h, w, t
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.FrameTime, ds.FrameIncrementPointer = 1000.0 / fps, (0x0018, 0x1063)
    if regions:
        ds.SequenceOfUltrasoundRegions = [_region(**r) for r in regions]
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(frames, dtype=np.uint8).tobytes()
    return ds


def _region(box, spatial: int = 1, data_type: int = 1, dx: float = 0.03, dy: float = 0.03,
            units: tuple[int, int] = (3, 3), ref=(0, 0), value: tuple[float, float] | None = None) -> Dataset:
    r = Dataset()
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = box
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = spatial, data_type, 0
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx, dy
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = units
    r.ReferencePixelX0, r.ReferencePixelY0 = ref
    if value is not None:
        r.ReferencePixelPhysicalValueX, r.ReferencePixelPhysicalValueY = value
    return r


def moving_frames(t: int = 12, h: int = 64, w: int = 80, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    frames[:, 8:56, 10:70] = rng.integers(0, 255, (t, 48, 60, 1), dtype=np.uint8)
    frames[:, 0:6, 0:30] = 255  # burned-in text: static, outside the image
    return frames


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _reason(path: Path) -> str:
    with pytest.raises(DicomFileError) as info:
        inspect_file(path)
    return info.value.reason


# ------------------------------------------------------------------------------------ 1. containers, object types
def test_deflated_file_decodes_through_dcmread(tmp_path):
    ds = us_cine(moving_frames())
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = save(ds, tmp_path / "deflated.dcm")
    cine = inspect_file(path)
    assert cine.transfer_syntax.is_deflated and not cine.fast_path
    assert np.array_equal(cine.frames([3, 11]), moving_frames()[[3, 11]])


def test_files_without_preamble_or_file_meta_are_read_with_force(tmp_path):
    ds = us_cine(moving_frames())
    full = save(ds, tmp_path / "full.dcm").read_bytes()
    (tmp_path / "no_preamble").write_bytes(full[132:])  # no preamble, no 'DICM', file meta kept
    del ds.file_meta
    dcmwrite(tmp_path / "no_meta", ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    for name in ("no_preamble", "no_meta"):
        cine = inspect_file(tmp_path / name)
        assert cine.forced and cine.n_frames == 12, name
        assert np.array_equal(cine.frames([0, 5]), moving_frames()[[0, 5]]), name
    (tmp_path / "text").write_text("PATIENT LIST\nDoe^Jane 1234567\n")
    assert _reason(tmp_path / "text") == "not_dicom"  # forced read finds no SOP UID: still not DICOM


def test_archives_and_object_types_get_their_own_reasons(tmp_path):
    frames = moving_frames()
    with zipfile.ZipFile(tmp_path / "export.zip", "w") as z:
        z.writestr("US001.dcm", save(us_cine(frames), tmp_path / "inner.dcm").read_bytes())
    assert _reason(tmp_path / "export.zip") == "archive"
    sc = save(us_cine(frames, sop_class="1.2.840.10008.5.1.4.1.1.7.4"), tmp_path / "sc.dcm")
    assert _reason(sc) == "secondary_capture"
    vol = save(us_cine(frames, sop_class="1.2.840.10008.5.1.4.1.1.6.2"), tmp_path / "vol.dcm")
    assert _reason(vol) == "volume_3d"
    us_image = save(us_cine(frames, sop_class="1.2.840.10008.5.1.4.1.1.6.1"), tmp_path / "usimage.dcm")
    assert inspect_file(us_image).n_frames == 12  # multi-frame US Image is a cine
    private = us_cine(frames)
    del private.PixelData, private.NumberOfFrames
    block = private.private_block(0x7FE1, "GEMS_Ultrasound_MovieGroup_001", create=True)
    block.add_new(0x01, "OB", frames.tobytes())
    assert _reason(save(private, tmp_path / "private.dcm")) == "private_cine"
    data = save(us_cine(frames), tmp_path / "cut.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 5000])
    assert _reason(tmp_path / "cut.dcm") == "truncated"
    assert _reason(Path(get_testdata_file("test-SR.dcm", download=False))) == "structured_report"


# ------------------------------------------------------------------------------------ 2. vendor measurement SRs
LV = ("T-32600", "SRT", "Left Ventricle")
LA = ("T-32300", "SRT", "Left Atrium")
MITRAL = ("T-35300", "SRT", "Mitral Valve")
LVEF = ("10230-1", "LN", "Left Ventricular Ejection Fraction")
BIPLANE, TEICHHOLZ = ("125207", "DCM", "Method of Disks, Biplane"), ("125209", "DCM", "Teichholz")


def tid5200_sr(study_uid: str, measurements: list[tuple], accession: str = "ACC0001", image_uid: str | None = None):
    """A Comprehensive SR in TID 5200 form: an Adult Echocardiography Procedure Report container holding
    one container per section (TID 5202+), NUM items with a Measurement Method concept modifier and,
    optionally, the image they were measured on (INFERRED FROM)."""
    import highdicom as hd
    from pydicom.sr.coding import Code

    root = hd.sr.ContainerContentItem(name=Code("125200", "DCM", "Adult Echocardiography Procedure Report"),
                                      template_id="5200")
    root.ContentSequence = hd.sr.ContentSequence(is_root=False)
    sections: dict[tuple, Any] = {}
    for section, concept, value, unit, method in measurements:
        if section not in sections:
            sections[section] = hd.sr.ContainerContentItem(name=Code(*section), relationship_type="CONTAINS")
            sections[section].ContentSequence = hd.sr.ContentSequence()
            root.ContentSequence.append(sections[section])
        num = hd.sr.NumContentItem(name=Code(*concept), value=value, unit=Code(unit, "UCUM", unit),
                                   relationship_type="CONTAINS")
        children = []
        if method:
            children.append(hd.sr.CodeContentItem(name=Code("370129005", "SCT", "Measurement Method"),
                                                  value=Code(*method), relationship_type="HAS CONCEPT MOD"))
        if image_uid:
            children.append(hd.sr.ImageContentItem(name=Code("121112", "DCM", "Source of Measurement"),
                                                   referenced_sop_class_uid=US_MULTIFRAME,
                                                   referenced_sop_instance_uid=image_uid,
                                                   relationship_type="INFERRED FROM"))
        if children:
            num.ContentSequence = hd.sr.ContentSequence(children)
        sections[section].ContentSequence.append(num)
    evidence = Dataset()
    evidence.StudyInstanceUID, evidence.SeriesInstanceUID = study_uid, generate_uid()
    evidence.SOPClassUID, evidence.SOPInstanceUID = US_MULTIFRAME, image_uid or generate_uid()
    evidence.PatientID, evidence.PatientName, evidence.AccessionNumber = "P1234567", "Doe^Jane", accession
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID"):
        setattr(evidence, keyword, "")
    return hd.sr.ComprehensiveSR(evidence=[evidence], content=root, series_instance_uid=generate_uid(),
                                 series_number=99, sop_instance_uid=generate_uid(), instance_number=1,
                                 manufacturer="medvid-test", record_evidence=False)


def test_tid5200_sr_measurements_become_labels(tmp_path):
    from medvid.io.echo_sr import derive_labels, load_rules, read_measurements

    loop = us_cine(moving_frames())
    sr = tid5200_sr(STUDY, [(LV, LVEF, 62.0, "%", TEICHHOLZ), (LV, LVEF, 55.0, "%", BIPLANE),
                            (LV, LVEF, 57.0, "%", BIPLANE),
                            (LV, ("29436-3", "LN", "Left Ventricle Internal End Diastolic Dimension"), 48.0, "mm",
                             None),
                            (LV, ("18154-5", "LN", "Interventricular Septum Diastolic Thickness"), 0.9, "cm", None),
                            (LA, ("99VEND-1", "99VEND", "Left Atrium Systolic Volume Index"), 31.0, "ml/m2", None),
                            (MITRAL, ("99VEND-2", "99VEND", "E/e′"), 9.5, "{ratio}", None)],
                     image_uid=str(loop.SOPInstanceUID))
    root = tmp_path / "export"
    save(loop, root / "P1234567" / "US001")
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the vendor writes E/e′ with a prime
    sr.save_as(root / "P1234567" / "SR001")
    rows = read_measurements(root / "P1234567" / "SR001", "salt").rows
    assert len(rows) == 7 and {r["section"] for r in rows} == {"Left Ventricle", "Left Atrium", "Mitral Valve"}
    ef = [r for r in rows if r["concept_code"] == "LN:10230-1"]
    assert [(r["value"], r["method_code"]) for r in ef] == [(62.0, "DCM:125209"), (55.0, "DCM:125207"),
                                                            (57.0, "DCM:125207")]
    labels = derive_labels(pd.DataFrame(rows), load_rules())
    got = labels.iloc[0].to_dict()
    assert got["ef"] == pytest.approx(56.0) and got["ef_biplane"] == pytest.approx(56.0)  # biplane wins, averaged
    assert got["ef_teichholz"] == 62.0 and got["lvidd"] == pytest.approx(4.8) and got["ivsd"] == 0.9  # mm → cm
    assert got["la_volume_index"] == 31.0 and got["e_e_prime"] == 9.5

    out = tmp_path / "out"
    summary = ingest(root, out, "salt=salt")
    videos = pd.read_parquet(out / "videos.parquet")
    measured = pd.read_csv(out / "measurements.csv")
    assert len(measured) == 7 and set(measured["study_key"]) == set(videos["study_key"])
    assert set(measured["image_key"]) == set(videos["instance_key"])  # the loop it was measured on
    assert summary["measurement_files"] == 1 and summary["errors"] == 0
    assert summary["measurements_per_study"] == {videos["study_key"][0]: 7}
    labels = pd.read_csv(out / "labels.csv")
    assert labels["ef"].tolist() == [pytest.approx(56.0)] and summary["labels_matched"] == 1
    text = "".join(p.read_text() for p in (out / "measurements.csv", out / "labels.csv"))
    assert STUDY not in text and "P1234567" not in text and "ACC0001" not in text

    given = tmp_path / "labels.csv"  # a given labels CSV wins per column; measured phenotypes fill the rest
    given.write_text(f"study_uid,ef,reduced_ef\n{STUDY},40,1\n")
    ingest(root, tmp_path / "out2", "salt=salt", f"labels={given}")
    merged = pd.read_csv(tmp_path / "out2" / "labels.csv").iloc[0]
    assert merged["ef"] == 40 and merged["reduced_ef"] == 1 and merged["lvidd"] == pytest.approx(4.8)


# ------------------------------------------------------------------------------------ 3. accession joins
def test_companion_tables_join_by_accession(tmp_path):
    root = tmp_path / "export"
    study3 = "1.2.826.0.1.3680043.8.498.3"
    for i, (study, accession) in enumerate([(STUDY, "ACC1"), (STUDY2, "ACC1"), (study3, "ACC2")]):
        save(us_cine(moving_frames(seed=i), study_uid=study, AccessionNumber=accession), root / f"US{i}")
    (tmp_path / "reports.csv").write_text("accession,report,split\nACC1,Left Ventricle: normal.,train\n"
                                          "ACC9,Left Ventricle: not in this export.,test\n")
    (tmp_path / "labels.csv").write_text("accession,ef\nACC2,35\nACC1,60\n")
    out = tmp_path / "out"
    summary = ingest(root, out, "salt=salt", f"reports={tmp_path / 'reports.csv'}", f"labels={tmp_path / 'labels.csv'}")
    videos = pd.read_parquet(out / "videos.parquet")
    assert videos["accession_key"].str.startswith("ac_").all() and videos["accession_key"].nunique() == 2
    by_study = dict(zip(videos["study_key"], videos["accession_key"]))
    reports = pd.read_csv(out / "reports.csv")
    assert len(reports) == 2 and {by_study[k] for k in reports["study_key"]} == {by_study[videos["study_key"][0]]}
    assert set(videos.loc[videos["split"] == "train", "study_key"]) == set(reports["study_key"])
    labels = pd.read_csv(out / "labels.csv")
    assert sorted(labels["ef"]) == [35.0, 60.0, 60.0]  # one accession, two studies: both get its labels
    assert summary["reports_matched"] == 2 and summary["reports_unmatched"] == {"rows": 1, "row_numbers": [2]}
    assert summary["labels_matched"] == 3 and summary["labels_unmatched"]["rows"] == 0
    shared = (out / "videos.parquet").read_bytes() + (out / "reports.csv").read_bytes() + json.dumps(summary).encode()
    assert b"ACC1" not in shared and b"ACC9" not in shared


# ------------------------------------------------------------------------------------ 4. calibration, layouts
def _doppler_frames(t: int = 10) -> np.ndarray:
    rng = np.random.default_rng(1)
    frames = np.zeros((t, 96, 80, 3), dtype=np.uint8)
    frames[:, 0:4, 0:40] = 255  # burned-in text
    frames[:, 6:40, 10:70] = rng.integers(0, 255, (t, 34, 60, 1), dtype=np.uint8)  # 2-D reference image
    frames[:, 48:95, 0:80] = rng.integers(0, 255, (t, 47, 80, 1), dtype=np.uint8)  # spectral strip
    return frames


DOPPLER_REGIONS = [dict(box=(10, 6, 69, 39), spatial=1, data_type=1, dx=0.026, dy=0.026, ref=(40, 6)),
                   dict(box=(0, 48, 79, 94), spatial=3, data_type=3, dx=0.01, dy=2.5, units=(4, 7), ref=(0, 70))]


def test_regions_layouts_and_calibration_are_kept(tmp_path):
    from medvid.datasets.echo import EchoVideoDataset
    from medvid.transforms.clip import ClipPreprocess

    root = tmp_path / "export"
    cases = {
        "doppler": (_doppler_frames(), DOPPLER_REGIONS),
        "mmode": (_doppler_frames(), [DOPPLER_REGIONS[0], {**DOPPLER_REGIONS[1], "spatial": 2, "data_type": 1,
                                                          "units": (4, 3)}]),
        "dual": (moving_frames(), [dict(box=(10, 8, 39, 55)), dict(box=(40, 8, 69, 55), data_type=2)]),
        "color": (moving_frames(), [dict(box=(10, 8, 69, 55)), dict(box=(20, 10, 50, 40), data_type=2)]),
        "plain": (moving_frames(), [dict(box=(10, 8, 69, 55))]),
    }
    for i, (name, (frames, regions)) in enumerate(cases.items()):
        save(us_cine(frames, study_uid=f"{STUDY}.{i}", regions=regions), root / name)
    out = tmp_path / "out"
    ingest(root, out, "salt=salt", "keep_paths=true")
    videos = pd.read_parquet(out / "videos.parquet").set_index("path")
    assert videos["layout"].to_dict() == {"doppler": "spectral_doppler", "mmode": "m_mode", "dual": "dual_pane",
                                          "color": "color_doppler", "plain": "2d"}
    regions = json.loads(videos.at["doppler", "regions"])
    assert regions[1] == {"box": [0, 48, 80, 95], "spatial_format": "spectral", "data_type": "pw_doppler",
                          "delta_x": 0.01, "delta_y": 2.5, "units_x": "s", "units_y": "cm/s",
                          "reference_pixel": [0, 70]}
    assert regions[0]["delta_x"] == 0.026 and regions[0]["units_x"] == "cm"
    assert list(videos.at["doppler", "sector_box"]) == [0, 6, 80, 95]  # the spectral strip is inside the box
    assert list(videos.at["mmode", "sector_box"]) == [0, 6, 80, 95]

    loops = EchoVideoDataset(out, root, Sampling(4, frame_stride=1), preprocess=None, layouts=["spectral_doppler"])
    assert len(loops) == 1
    clip = loops[0]["video"]  # (3, T, H, W) at full size: the trace survives, the text does not
    assert clip[:, :, 48:95].abs().sum() > 0 and clip[:, :, 0:4, 0:40].abs().sum() == 0
    assert len(EchoVideoDataset(out, root, preprocess=None, layouts=["2d", "color_doppler"])) == 2
    with pytest.raises(ValueError, match="unknown layout"):
        EchoVideoDataset(out, root, layouts=["doppler"])

    pre = ClipPreprocess(size=48, crop="center_square", zoom=0.0)
    geo = pre.geometry(96, 80)  # an 80 px centred square → 48 px: 0.6 output px per source px
    assert geo == {"crop_box": (0, 8, 80, 88), "scale": (0.6, 0.6)}
    cm_per_output_px = regions[0]["delta_x"] / geo["scale"][0]
    assert cm_per_output_px == pytest.approx(0.026 / 0.6)


# ------------------------------------------------------------------------------------ 5. cardiac cycle
def test_clips_follow_the_cardiac_cycle(tmp_path):
    from medvid.datasets.echo import EchoVideoDataset, clip_indices
    from medvid.io.timing import cycle_span

    root = tmp_path / "export"
    frames = moving_frames(t=30)
    save(us_cine(frames, study_uid=STUDY, RWaveTimeVector=[100.0, 900.0], HeartRate=75), root / "rwave")
    save(us_cine(frames, study_uid=STUDY2, RWavePointer=[6, 21], HeartRate=90), root / "pointer")
    save(us_cine(frames, study_uid=f"{STUDY}.3", HeartRate=120), root / "hr")
    save(us_cine(frames, study_uid=f"{STUDY}.4"), root / "none")
    cines = {name: DicomCine(root / name) for name in ("rwave", "pointer", "hr", "none")}
    assert [c.cycle_source for c in cines.values()] == ["RWaveTimeVector", "RWavePointer", "HeartRate", "none"]
    assert np.allclose(cines["rwave"].r_wave_times, [0.1, 0.9]) and cines["rwave"].heart_rate == 75
    assert np.allclose(cines["pointer"].r_wave_times, [5 / 30, 20 / 30])

    idx = {name: clip_indices(c, 8, start="r_wave") for name, c in cines.items()}
    assert idx["rwave"].min() >= 3 and idx["rwave"].max() < 27 and len(set(idx["rwave"])) == 8  # R to R
    assert idx["pointer"].min() >= 5 and idx["pointer"].max() < 20
    assert idx["hr"].min() == 0 and idx["hr"].max() < 15  # one 0.5 s beat from the start
    assert idx["none"].max() >= 26  # the whole loop, no wrap-around
    assert cycle_span(1.0, [0.1, 0.5, 0.9], cycles=2)[:2] == (0.1, 0.9)
    assert cycle_span(1.0, [0.1], heart_rate=120)[2] == "heart_rate"

    out = tmp_path / "out"
    ingest(root, out, "salt=salt", "keep_paths=true")
    videos = pd.read_parquet(out / "videos.parquet").set_index("path")
    assert videos["cycle_source"].to_dict() == {"rwave": "RWaveTimeVector", "pointer": "RWavePointer",
                                                "hr": "HeartRate", "none": "none"}
    assert list(videos.at["rwave", "r_wave_times_s"]) == pytest.approx([0.1, 0.9])
    loops = EchoVideoDataset(out, root, Sampling(8), preprocess=None, start="r_wave", cycles=1)
    assert loops[0]["video"].shape == (3, 8, 64, 80)


# ------------------------------------------------------------------------------------ 6. burned-in text
def _fan_frames(t: int = 10) -> np.ndarray:
    """A sector of speckle (apex top centre, ±35°) with static text in the corner of its region box."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:64, 0:80]
    angle, radius = np.degrees(np.arctan2(xx - 40, yy - 4)), np.hypot(xx - 40, yy - 4)
    fan = (np.abs(angle) <= 35) & (radius <= 58) & (yy >= 4)
    frames = np.zeros((t, 64, 80, 3), dtype=np.uint8)
    frames[:, fan] = rng.integers(20, 255, (t, int(fan.sum()), 1), dtype=np.uint8)
    frames[:, 2:9, 2:22] = 250  # "DOE^JANE" burned in, inside the region's rectangle
    return frames


def test_fan_mask_blanks_text_inside_the_region_box_and_unlocated_loops_are_flagged(tmp_path):
    from medvid.datasets.echo import EchoVideoDataset

    root = tmp_path / "export"
    save(us_cine(_fan_frames(), study_uid=STUDY, regions=[dict(box=(0, 0, 79, 63))], BurnedInAnnotation="YES"),
         root / "fan")
    still = np.repeat(_fan_frames()[:1], 10, axis=0)  # nothing moves, no regions: the sector cannot be found
    save(us_cine(still, study_uid=STUDY2, BurnedInAnnotation="YES"), root / "still")
    out = tmp_path / "out"
    ingest(root, out, "salt=salt", "keep_paths=true")
    videos = pd.read_parquet(out / "videos.parquet").set_index("path")
    assert videos["burned_in_annotation"].to_dict() == {"fan": "YES", "still": "YES"}
    assert videos["sector_source"].to_dict() == {"fan": "regions", "still": "none"}
    assert videos["no_sector"].to_dict() == {"fan": False, "still": True}

    loops = EchoVideoDataset(out, root, Sampling(4, frame_stride=1), preprocess=None)  # mask="fan" by default
    assert len(loops) == 1  # the flagged loop is not passed to a model
    fan = loops[0]["video"]
    assert fan[:, :, 2:9, 2:22].abs().sum() == 0  # text in the region's corner blanked
    assert (fan[:, :, 30:50, 35:45] > 0).float().mean() > 0.9  # the image kept
    boxed = EchoVideoDataset(out, root, Sampling(4, frame_stride=1, mask="box"), preprocess=None)[0]["video"]
    assert boxed[:, :, 2:9, 2:22].abs().sum() > 0  # the rectangle alone would have let it through
    assert len(EchoVideoDataset(out, root, preprocess=None, keep_unmasked=True)) == 2
    assert len(EchoVideoDataset(out, root, Sampling(mask="none"), preprocess=None)) == 2


def _loinc_check_digit(number: str) -> int:
    """LOINC's mod-10 check digit: from the right, every other digit doubled (digit sums), then 10 - sum mod 10."""
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return (10 - total % 10) % 10


def test_shipped_measurement_codes_are_valid():
    """Every LOINC code in configs/sr_measurements.yaml has a valid check digit (a typo in the code would
    silently match nothing), and every DICOM method code means what its comment says (pydicom's PS3.16)."""
    import yaml
    from pydicom.sr.codedict import codes

    from medvid.config import config_dir

    rules = yaml.safe_load((config_dir() / "sr_measurements.yaml").read_text())["phenotypes"]
    seen = set()
    for rule in (r for rs in rules.values() for r in rs):
        for key in ("code", "method"):
            if key in rule:
                scheme, value = rule[key].split(":")
                seen.add((scheme, value))
    assert ("LN", "18152-9") in seen  # LV posterior wall, diastole (once mistyped as 18152-8)
    for scheme, value in seen:
        assert scheme in ("LN", "DCM"), scheme
        if scheme == "LN":
            number, check = value.split("-")
            assert _loinc_check_digit(number) == int(check), value
    methods = {c.value for c in codes.CID12227.concepts.values()}  # CID 12227 (pydicom)
    assert {v for s, v in seen if s == "DCM"} <= methods
    tid5300 = {c.value for c in codes.CID12300.concepts.values()}  # CID 12300 pre-coordinated codes
    assert {"79991-6", "80007-8", "79969-2", "80032-6", "79996-5", "80001-1", "79984-1"} <= tid5300 & {v for _, v in seen}


# ------------------------------------------------------------------------------------ 5. vendor codecs, cut files
GE_PRIVATE = "1.2.840.113619.5.2"


def _ge_private(ds: Dataset, path: Path) -> Path:
    """``ds`` written as GE's private syntax: Implicit VR Little Endian dataset, that UID in the file meta."""
    ds.file_meta.TransferSyntaxUID = GE_PRIVATE
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return path


def test_ge_private_syntax_reads_with_big_endian_pixels(tmp_path):
    """16-bit samples are stored big endian (swapped here), 8-bit ones as they are; the dataset is implicit LE."""
    grey = np.random.default_rng(2).integers(0, 4096, (4, 16, 24), dtype=np.uint16)
    ds = us_cine(np.zeros((4, 16, 24, 3), dtype=np.uint8))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    del ds.PlanarConfiguration
    ds.PixelData = grey.astype(">u2").tobytes()
    cine = inspect_file(_ge_private(ds, tmp_path / "ge16.dcm"))
    assert cine.transfer_syntax == GE_PRIVATE and cine.n_frames == 4 and not cine.fast_path
    assert np.array_equal(cine.frames([3, 0])[..., 0], (grey[[3, 0]] >> 4).astype(np.uint8))
    rgb = moving_frames()
    cine = inspect_file(_ge_private(us_cine(rgb), tmp_path / "ge8.dcm"))
    assert np.array_equal(cine.frames([1, 11]), rgb[[1, 11]])


def _video_stream(frames: np.ndarray, codec: str, container: str) -> bytes:
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10"} if codec.startswith("libx") else {"qscale": "2"}
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def _smooth_frames(t: int = 12, h: int = 64, w: int = 80) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([np.stack([(xx * 3 + 10 * k) % 256, (yy * 4) % 256, np.full_like(xx, 128)], -1)
                     for k in range(t)]).astype(np.uint8)


def video_cine(frames: np.ndarray, syntax: str, codec: str = "libx264", container: str = "h264",
               padding: bytes = b"") -> Dataset:
    """A US multi-frame dataset whose Pixel Data is one encoded video stream in three fragments."""
    from pydicom.encaps import encapsulate

    ds = us_cine(frames)
    ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation = syntax, "YBR_PARTIAL_420"
    ds.PixelData = encapsulate([_video_stream(frames, codec, container) + padding], fragments_per_frame=3)
    ds["PixelData"].VR = "OB"
    return ds


@pytest.mark.parametrize("syntax,codec,container", [
    ("1.2.840.10008.1.2.4.102", "libx264", "h264"), ("1.2.840.10008.1.2.4.107", "libx265", "hevc"),
    ("1.2.840.10008.1.2.4.100", "mpeg2video", "mpeg2video")])
def test_video_cines_decode_with_pyav(tmp_path, syntax, codec, container):
    frames = _smooth_frames()
    cine = inspect_file(save(video_cine(frames, syntax, codec, container), tmp_path / "video.dcm"))
    assert cine.transfer_syntax == syntax and cine.n_frames == 12
    got = cine.frames([11, 0, 5, 5]).astype(int)
    assert got.shape == (4, 64, 80, 3)
    assert np.abs(got - frames[[11, 0, 5, 5]]).mean() < 8  # lossy, but each frame is the right one
    assert np.abs(got[0] - frames[11]).mean() < np.abs(got[0] - frames[5]).mean()


def test_a_video_stream_is_read_only_up_to_the_bound(tmp_path):
    """A small header over a long stream: the joined fragments stop at ``max_bytes`` (too_large)."""
    ds = video_cine(_smooth_frames(), "1.2.840.10008.1.2.4.102", padding=bytes(400_000))
    path = save(ds, tmp_path / "long.dcm")
    with pytest.raises(DicomFileError, match="too_large: video stream longer than"):
        inspect_file(path, max_bytes=300_000)
    assert inspect_file(path).n_frames == 12


def _cut_frames(detail: str) -> tuple[int, int]:
    import re

    found = re.search(r"(\d+) of (\d+) frame\(s\) readable", detail)
    assert found, detail
    return int(found.group(1)), int(found.group(2))


def test_cut_files_are_truncated_with_the_frames_still_readable(tmp_path):
    """A JPEG loop cut mid-frame (with a basic offset table), a cut deflated file and a cut H.264 stream are
    `truncated`, and the detail says how many leading frames still decode; the files are not kept (see
    docs/echo_data.md)."""
    jpeg = Path(get_testdata_file("examples_ybr_color.dcm", download=False)).read_bytes()  # 30 frames
    (tmp_path / "jpeg.dcm").write_bytes(jpeg[: int(len(jpeg) * 0.6)])
    deflated = us_cine(moving_frames())
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = save(deflated, tmp_path / "full_deflated.dcm").read_bytes()
    (tmp_path / "deflated.dcm").write_bytes(data[: int(len(data) * 0.5)])
    data = save(video_cine(_smooth_frames(), "1.2.840.10008.1.2.4.102"), tmp_path / "full_video.dcm").read_bytes()
    (tmp_path / "video.dcm").write_bytes(data[: len(data) - 300])
    for name, total in (("jpeg.dcm", 30), ("deflated.dcm", 12), ("video.dcm", 12)):
        with pytest.raises(DicomFileError) as info:
            inspect_file(tmp_path / name)
        assert info.value.reason == "truncated", (name, str(info.value))
        readable, frames = _cut_frames(info.value.detail)
        assert frames == total and 0 < readable < total, (name, info.value.detail)
        if name != "deflated.dcm":  # deflated: counted from the bytes present (pydicom decodes it whole)
            cine = DicomCine(tmp_path / name)
            cine.frames([readable - 1])
            with pytest.raises(Exception):  # noqa: B017 - whatever the codec raises at the cut
                cine.frames([readable])


def test_vendor_codecs_and_cut_files_through_ingest(tmp_path):
    """A mixed export: GE private syntax and H.264 loops are rows; a cut JPEG loop is an error row (batch goes on)."""
    root = tmp_path / "export"
    _ge_private(us_cine(moving_frames(), study_uid=STUDY), root / "ge.dcm")
    save(video_cine(_smooth_frames(), "1.2.840.10008.1.2.4.102"), root / "h264.dcm")
    jpeg = Path(get_testdata_file("examples_ybr_color.dcm", download=False)).read_bytes()
    (root / "cut.dcm").write_bytes(jpeg[: int(len(jpeg) * 0.6)])
    summary = ingest(root, tmp_path / "out", "salt=s")
    videos = pd.read_parquet(tmp_path / "out" / "videos.parquet")
    assert sorted(videos["transfer_syntax"]) == ["1.2.840.10008.1.2.4.102", GE_PRIVATE]
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert summary["videos"] == 2 and [e["reason"] for e in errors] == ["truncated"]
    assert _cut_frames(errors[0]["detail"])[1] == 30


US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# A PW Doppler still: a small 2-D reference image over a spectral strip, seconds along x, cm/s along y (velocity
# up: negative delta), the zero-velocity baseline 20 rows into the strip; an M-mode still: seconds and cm.
PW_STILL = [dict(box=(10, 6, 69, 39), dx=0.026, dy=0.026, ref=(30, 0), value=(0.0, 0.0)),
            dict(box=(0, 48, 79, 94), spatial=3, data_type=3, dx=0.01, dy=-2.5, units=(4, 7), ref=(0, 20),
                 value=(0.0, 0.0))]
MMODE_STILL = [PW_STILL[0], dict(box=(0, 48, 79, 94), spatial=2, data_type=1, dx=0.005, dy=0.02, units=(4, 3),
                                 ref=(0, 0), value=(0.0, 0.0))]


def _still_export(root: Path) -> dict[str, str]:
    """A study with one loop, a PW Doppler still, an M-mode still, a 2-D screenshot without regions, a one-frame
    Secondary Capture and a measurement SR whose caliper names the Doppler still; the SOP UIDs by name."""
    still = _doppler_frames(1)
    files = {"loop": us_cine(moving_frames(), regions=[dict(box=(10, 8, 69, 55))]),
             "pw": us_cine(still, regions=PW_STILL, sop_class=US_IMAGE),
             "mmode": us_cine(still, regions=MMODE_STILL, sop_class=US_IMAGE),
             "shot": us_cine(still, sop_class=US_IMAGE),
             "worksheet": us_cine(still, sop_class=SECONDARY_CAPTURE)}
    for name, ds in files.items():
        save(ds, root / name)
    sr = tid5200_sr(STUDY, [(("29468-4", "LN", "Aortic Valve"), ("11726-7", "LN", "Peak Velocity"), 120.0, "cm/s",
                             None)], image_uid=str(files["pw"].SOPInstanceUID))
    save(sr, root / "sr")
    return {name: str(ds.SOPInstanceUID) for name, ds in files.items()}


def test_doppler_and_mmode_stills_are_kept_with_their_calibration(tmp_path):
    from medvid.datasets.echo import EchoVideoDataset
    from medvid.utils import pseudonym

    uids = _still_export(tmp_path / "export")
    out = tmp_path / "out"
    summary = ingest(tmp_path / "export", out, "salt=salt", "keep_paths=true")
    assert summary["videos"] == 1 and summary["stills"] == 3
    assert summary["stills_by_type"] == {"spectral_doppler": 1, "m_mode": 1, "2d": 1}
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["path"], e["reason"]) for e in errors] == [("worksheet", "single_frame")]  # a capture is no still
    stills = pd.read_csv(out / "stills.csv", keep_default_na=False).set_index("path")
    assert list(stills.columns[:9]) == ["study_key", "still_key", "instance_key", "series_key", "patient_key",
                                        "file_key", "still_type", "calibrated", "rows"]
    assert stills["still_type"].to_dict() == {"pw": "spectral_doppler", "mmode": "m_mode", "shot": "2d"}
    assert stills["calibrated"].to_dict() == {"pw": True, "mmode": True, "shot": False}
    assert {"frames", "fps", "video_key"}.isdisjoint(stills.columns)
    assert stills.at["pw", "instance_key"] == pseudonym(uids["pw"], "salt", prefix="vi_")
    spectral = json.loads(stills.at["pw", "regions"])[1]
    assert spectral == {"box": [0, 48, 80, 95], "spatial_format": "spectral", "data_type": "pw_doppler",
                        "delta_x": 0.01, "delta_y": -2.5, "units_x": "s", "units_y": "cm/s", "reference_pixel": [0, 20],
                        "reference_value": [0.0, 0.0], "baseline_y": 68.0, "calibrated": True}
    mmode = json.loads(stills.at["mmode", "regions"])[1]
    assert (mmode["units_x"], mmode["units_y"], mmode["delta_y"], mmode["baseline_y"]) == ("s", "cm", 0.02, 48.0)
    assert json.loads(stills.at["pw", "sector_box"]) == [0, 6, 80, 95]
    assert stills.at["shot", "sector_box"] == "" and json.loads(stills.at["shot", "regions"]) == []

    # the caliper on the Doppler still resolves to its row; stills never become clips
    measurements = pd.read_csv(out / "measurements.csv")
    assert list(measurements["image_key"]) == [stills.at["pw", "instance_key"]]
    videos = pd.read_parquet(out / "videos.parquet")
    assert list(videos["video_key"]) == [pseudonym(uids["loop"], "salt", prefix="vi_")]
    assert len(EchoVideoDataset(out, tmp_path / "export", preprocess=None)) == 1


def test_a_real_single_frame_us_image_is_a_calibrated_2d_still(tmp_path):
    """pydicom-data's OBXXXX1A.dcm: a one-frame US Image (RGB, 600×800) with a calibrated 2-D region (cm) and an
    ECG trace region."""
    root = tmp_path / "export"
    root.mkdir()
    (root / "IMG0001").symlink_to(get_testdata_file("OBXXXX1A.dcm", download=False))
    save(us_cine(moving_frames(), regions=[dict(box=(10, 8, 69, 55))]), root / "loop")
    out = tmp_path / "out"
    assert ingest(root, out, "salt=salt", "follow_symlinks=true")["stills"] == 1
    still = pd.read_csv(out / "stills.csv").iloc[0]
    assert (still["still_type"], bool(still["calibrated"]), still["rows"], still["cols"]) == ("2d", True, 600, 800)
    image, ecg = json.loads(still["regions"])
    assert (image["units_x"], image["units_y"], image["delta_x"]) == ("cm", "cm", pytest.approx(0.0262287877))
    assert image["reference_pixel"] == [340, 36] and image["baseline_y"] == 96.0  # the transducer row: depth 0
    assert (ecg["spatial_format"], ecg["data_type"], ecg["calibrated"]) == ("waveform", "ecg_trace", False)


def test_a_still_renders_masked_with_its_geometry(tmp_path):
    from PIL import Image

    from medvid.io.render import RenderError, render_still_png

    path = save(us_cine(_doppler_frames(1), regions=PW_STILL, sop_class=US_IMAGE), tmp_path / "pw")
    png, geometry = render_still_png(DicomCine(path), max_side=40)
    assert geometry == {"crop_box": (0, 6, 80, 95), "scale": (36 / 80, 40 / 89)}  # the 80×89 image regions
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (36, 40)
    with Image.open(io.BytesIO(render_still_png(DicomCine(path))[0])) as im:
        shown = np.asarray(im)
    assert shown.shape == (89, 80, 3) and shown[48 - 6:].any()  # full size: the spectral strip is shown
    assert not shown[:, :10].any() or not shown[:40 - 6, :10].any()  # beside the 2-D image, above the strip: blank
    shot = save(us_cine(_doppler_frames(1), sop_class=US_IMAGE), tmp_path / "shot")
    with pytest.raises(RenderError, match="no imaging sector"):
        render_still_png(DicomCine(shot))


def _fileset_export(root: Path, tmp: Path) -> dict[str, Path]:
    """A DICOMDIR-based export written by pydicom's FileSet (PT*/ST*/SE*/IM* files, no extension): a loop, a
    PW Doppler still and a measurement SR; then, as exports come: one listed file removed, one record pointing
    outside the root, one folder renamed to lower case, and a file the DICOMDIR does not list."""
    from pydicom import dcmread
    from pydicom.fileset import FileSet

    study = dict(StudyDate="20240101", StudyTime="120000", StudyID="1", SeriesNumber=1, InstanceNumber=1,
                 PatientBirthDate="", PatientSex="", ReferringPhysicianName="")
    items = {"loop": us_cine(moving_frames(), regions=[dict(box=(10, 8, 69, 55))], **study),
             "loop2": us_cine(moving_frames(seed=1), regions=[dict(box=(10, 8, 69, 55))], **study),
             "gone": us_cine(moving_frames(seed=2), **study),
             "pw": us_cine(_doppler_frames(1), regions=PW_STILL, sop_class=US_IMAGE, **study)}
    fs = FileSet()
    written = {name: save(ds, tmp / name) for name, ds in items.items()}
    instances = {name: fs.add(path) for name, path in written.items()}
    fs.write(root)
    paths = {name: root / Path(*inst.ReferencedFileID) for name, inst in instances.items()}
    paths["gone"].unlink()
    index = dcmread(root / "DICOMDIR")
    hostile = next(r for r in index.DirectoryRecordSequence
                   if r.get("ReferencedSOPInstanceUIDInFile") == items["loop2"].SOPInstanceUID)
    hostile.ReferencedFileID = ["..", "outside", "IM0"]
    index.save_as(root / "DICOMDIR")
    series = paths["loop"].parent
    series.rename(series.with_name(series.name.lower()))  # media copied onto a case-sensitive file system
    save(us_cine(moving_frames(seed=3), **study), root / "EXTRA" / "IMG0001")  # not listed
    return paths


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # the hostile record
def test_a_dicomdir_export_is_read_through_its_index(tmp_path):
    root = tmp_path / "export"
    _fileset_export(root, tmp_path / "src")
    out = tmp_path / "out"
    summary = ingest(root, out, "salt=salt", "keep_paths=true")
    assert summary["dicomdir"] == {"listed": 4, "listed_found": 2, "missing": 1, "outside_root": 1, "not_listed": 2}
    assert summary["index_files"] == 1 and summary["files"] == 7  # DICOMDIR + 4 found + missing + refused
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["reason"] for e in errors) == ["missing_file", "outside_root"]  # the DICOMDIR is no error
    assert next(e for e in errors if e["reason"] == "outside_root")["path"] == "../outside/IM0"
    videos = pd.read_parquet(out / "videos.parquet")
    assert summary["videos"] == len(videos) == 3 and summary["stills"] == 1  # listed, not listed, refused-but-found
    assert "EXTRA/IMG0001" in set(videos["path"])
    assert not (tmp_path / "outside").exists()


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # the hostile record
def test_read_dicomdir_refuses_paths_out_of_the_root(tmp_path):
    from pydicom import dcmread

    from medvid.io.dicom import read_dicomdir

    root = tmp_path / "export"
    paths = _fileset_export(root, tmp_path / "src")
    save(us_cine(moving_frames()), tmp_path / "secret" / "IM0")
    (root / "LINK").symlink_to(tmp_path / "secret", target_is_directory=True)
    index = dcmread(root / "DICOMDIR")
    index.DirectoryRecordSequence[-1].ReferencedFileID = ["LINK", "IM0"]  # a link inside the root leading out
    index.save_as(root / "DICOMDIR")
    found = read_dicomdir(root / "DICOMDIR", root)
    assert sorted(found.outside) == ["../outside/IM0", "LINK/IM0"] and len(found.missing) == 1
    assert {p.name for p in found.files} <= {paths["loop"].name, paths["pw"].name}
    assert all(p.resolve().is_relative_to(root.resolve()) for p in found.files)
    assert any(p.parent.name.islower() for p in found.files)  # matched ignoring case
    assert read_dicomdir(root / "EXTRA" / "IMG0001", root) is None  # not an index
