"""Vendor measurement SRs in the forms carts send them (TID 5200 with method modifiers, TID 5300 / CID 12300,
Enhanced SR, "not measured" items, by-reference items, corrected versions, UCUM units, calipers on images),
read item by item into measurements and labels (medvid.io.echo_sr)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medvid.io.echo_sr import convert_unit, current_measurements, derive_labels, load_rules, read_measurements

COMPREHENSIVE, ENHANCED = "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.22"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
STUDY = "1.2.826.0.1.3680043.8.498.77"
LV = ("T-32600", "SRT", "Left Ventricle")
LVEF_US = ("18043-0", "LN", "Left Ventricular Ejection Fraction by US")
BIPLANE, TEICHHOLZ = ("125207", "DCM", "Method of Disks, Biplane"), ("125209", "DCM", "Teichholz")
METHOD = ("370129005", "SCT", "Measurement Method")


def code(value: str, scheme: str, meaning: str) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = value, scheme, meaning
    return ds


def item(relation: str, kind: str, name: tuple | None, *children: Dataset, **attrs) -> Dataset:
    ds = Dataset()
    ds.RelationshipType, ds.ValueType = relation, kind
    if name:
        ds.ConceptNameCodeSequence = [code(*name)]
    for k, v in attrs.items():
        setattr(ds, k, v)
    if children:
        ds.ContentSequence = list(children)
    return ds


def num(name: tuple, value: float | None, unit: str, *children: Dataset) -> Dataset:
    """A NUM item; ``value=None`` is the standard "not measured" form (empty value, a qualifier)."""
    ds = item("CONTAINS", "NUM", name, *children)
    if value is None:
        ds.MeasuredValueSequence = []
        ds.NumericValueQualifierCodeSequence = [code("114006", "DCM", "Measurement failure")]
    else:
        mv = Dataset()
        mv.NumericValue, mv.MeasurementUnitsCodeSequence = str(value), [code(unit, "UCUM", unit)]
        ds.MeasuredValueSequence = [mv]
    return ds


def mod(name: tuple, value: tuple) -> Dataset:
    return item("HAS CONCEPT MOD", "CODE", name, ConceptCodeSequence=[code(*value)])


def image(uid: str, relation: str = "INFERRED FROM") -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = US_MULTIFRAME, uid
    return item(relation, "IMAGE", None, ReferencedSOPSequence=[ref])


def container(name: tuple, *children: Dataset, relation: str = "CONTAINS") -> Dataset:
    return item(relation, "CONTAINER", name, *children, ContinuityOfContent="SEPARATE")


def sr_file(path: Path, content: list[Dataset], sop_class: str = COMPREHENSIVE, verified: bool = True,
            complete: bool = True, when: str = "20240101120000", instance: int = 1) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = STUDY, generate_uid(), "SR"
    ds.PatientID, ds.PatientName, ds.InstanceNumber = "P7654321", "Roe^Rich", instance
    ds.ContentDate, ds.ContentTime = when[:8], when[8:]
    ds.VerificationFlag = "VERIFIED" if verified else "UNVERIFIED"
    ds.CompletionFlag = "COMPLETE" if complete else "PARTIAL"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [code("125200", "DCM", "Adult Echocardiography Procedure Report")]
    ds.ContentSequence = content
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def labels_of(*paths: Path, refused: Counter | None = None) -> dict:
    rows = [r for p in paths for r in read_measurements(p, "salt").rows]
    table = derive_labels(current_measurements(rows), load_rules(), refused)
    return table.iloc[0].drop("study_key").dropna().to_dict() if len(table) else {}


def test_tid5200_lvef_by_two_methods_fills_each_method_and_prefers_biplane(tmp_path):
    sr = sr_file(tmp_path / "sr.dcm", [container(LV, num(LVEF_US, 58, "%", mod(METHOD, BIPLANE)),
                                                  num(LVEF_US, 64, "%", mod(METHOD, TEICHHOLZ)))])
    got = labels_of(sr)
    assert got["ef"] == 58 and got["ef_biplane"] == 58 and got["ef_teichholz"] == 64  # not their mean, 61
    assert "ef_single_plane" not in got


def test_tid5300_precoordinated_codes_become_labels(tmp_path):
    pre = container(("125301", "DCM", "Pre-coordinated Measurements"),
                    num(("79991-6", "LN", "Left ventricular ejection fraction biplane (MOD)"), 55, "%"),
                    num(("80007-8", "LN", "Left ventricular internal diastolic dimension - 2D"), 48, "mm"),
                    num(("79969-2", "LN", "Interventricular septum diastolic dimension 2D"), 1.0, "cm"),
                    num(("80032-6", "LN", "Left ventricular posterior wall diastolic thickness"), 9, "mm"),
                    num(("79996-5", "LN", "Left ventricular end diastolic volume biplane (MOD)"), 120, "ml"),
                    num(("80001-1", "LN", "Left ventricular end systolic volume biplane (MOD)"), 54, "ml"),
                    num(("79984-1", "LN", "Left atrial end systolic volume biplane (MOD) / BSA"), 30, "ml/m2"))
    got = labels_of(sr_file(tmp_path / "sr.dcm", [pre], sop_class=ENHANCED))  # an Enhanced SR reads the same
    assert got == pytest.approx({"ef": 55, "ef_biplane": 55, "lvidd": 4.8, "ivsd": 1.0, "lvpwd": 0.9, "lvedv": 120,
                                 "lvesv": 54, "la_volume_index": 30})


def test_not_measured_and_by_reference_items_are_skipped_and_counted_not_the_whole_sr(tmp_path):
    by_ref = item("CONTAINS", "NUM", None, ReferencedContentItemIdentifier=[1, 1])
    sr = sr_file(tmp_path / "sr.dcm", [container(LV, num(LVEF_US, None, "%"), by_ref,
                                                  num(("29436-3", "LN", "LVIDd"), 5.1, "cm"))])
    reading = read_measurements(sr, "salt")
    assert [r["concept_code"] for r in reading.rows] == ["LN:29436-3"]
    assert reading.skipped == {"not_measured": 1, "by_reference": 1}
    assert labels_of(sr) == {"lvidd": 5.1}


def test_a_corrected_version_replaces_the_earlier_one_and_is_recorded(tmp_path):
    first = sr_file(tmp_path / "a.dcm", [container(LV, num(LVEF_US, 40, "%", mod(METHOD, BIPLANE)),
                                                    num(("29436-3", "LN", "LVIDd"), 5.0, "cm"))],
                    when="20240101120000", instance=1)
    later = sr_file(tmp_path / "b.dcm", [container(LV, num(LVEF_US, 55, "%", mod(METHOD, BIPLANE)))],
                    when="20240101150000", instance=2)
    assert labels_of(first, later) == {"ef": 55, "ef_biplane": 55, "lvidd": 5.0}  # not 47.5; LVIDd only in the first
    table = current_measurements(r for p in (first, later) for r in read_measurements(p, "salt").rows)
    assert table["replaced"].tolist() == [True, False, False] and "_version" not in table
    unverified = sr_file(tmp_path / "c.dcm", [container(LV, num(LVEF_US, 30, "%", mod(METHOD, BIPLANE)))],
                         when="20240102090000", instance=3, verified=False)
    assert labels_of(first, later, unverified)["ef"] == 55  # VERIFIED wins over a later UNVERIFIED one
    partial = sr_file(tmp_path / "d.dcm", [container(LV, num(LVEF_US, 35, "%", mod(METHOD, BIPLANE)))],
                      when="20240102100000", instance=4, complete=False)
    assert labels_of(first, later, partial)["ef"] == 55  # COMPLETE wins over a later PARTIAL one


def test_ucum_units_convert_and_what_cannot_is_refused_with_a_reason(tmp_path):
    assert convert_unit(120, "cm3", "ml") == pytest.approx(120)
    assert convert_unit(48, "mm", "cm") == pytest.approx(4.8)
    assert convert_unit(0.58, "{ratio}", "%") == pytest.approx(58)
    assert convert_unit(120, "mm[Hg]", "ml") is None and convert_unit(58, "", "%") is None
    sr = sr_file(tmp_path / "sr.dcm", [container(LV, num(("18026-5", "LN", "LVEDV"), 130, "cm3"),
                                                  num(("18148-7", "LN", "LVESV"), 50, "mm[Hg]"))])
    refused: Counter = Counter()
    assert labels_of(sr, refused=refused) == pytest.approx({"lvedv": 130})
    assert refused == {"lvesv: mm[Hg] → ml": 1}


def test_calipers_keep_their_image_derivation_image_mode_and_selection(tmp_path):
    loop = generate_uid()
    caliper = item("INFERRED FROM", "SCOORD", None, image(loop, "SELECTED FROM"), GraphicType="POLYLINE",
                   GraphicData=[10.0, 10.0, 40.0, 40.0])
    mode = mod(("399264008", "SCT", "Image Mode"), ("399064001", "SCT", "2D mode"))
    mean = mod(("121401", "DCM", "Derivation"), ("373098007", "SCT", "Mean"))
    chosen = mod(("121404", "DCM", "Selection Status"), ("121410", "DCM", "User chosen value"))
    lvidd = ("29436-3", "LN", "LVIDd")
    sr = sr_file(tmp_path / "sr.dcm", [container(LV, num(lvidd, 4.9, "cm", caliper, mode),
                                                  num(lvidd, 5.3, "cm", mode), num(lvidd, 5.1, "cm", mean, mode),
                                                  num(LVEF_US, 50, "%"), num(LVEF_US, 62, "%", chosen))])
    rows = read_measurements(sr, "salt").rows
    assert rows[0]["image_key"].startswith("vi_") and rows[0]["image_mode"] == "2D mode" and not rows[1]["image_key"]
    assert rows[2]["derivation"] == "Mean" and rows[4]["selected"] and not rows[3]["selected"]
    got = labels_of(sr)
    assert got["lvidd"] == 5.1 and got["ef"] == 62  # the vendor's mean; the operator's chosen value


def test_someone_elses_sr_with_a_malformed_item_is_read_item_by_item():
    reading = read_measurements(get_testdata_file("test-SR.dcm", download=False), "salt")  # dcmtk's test SR
    assert [(r["concept_meaning"], r["unit"]) for r in reading.rows] == [("Diameter", "cm")] * 2
    assert all(r["study_key"].startswith("st_") and r["instance_key"].startswith("vi_") for r in reading.rows)


def test_ingest_resolves_versions_counts_skips_and_shares_no_identifier(tmp_path):
    from echo_testdata import ingest, make_synth

    make_synth(tmp_path / "synth")
    root = tmp_path / "synth" / "dicom"
    headers = (pydicom.dcmread(p, stop_before_pixels=True, force=True) for p in sorted(root.rglob("*")) if p.is_file())
    study = next(str(ds.StudyInstanceUID) for ds in headers if ds.get("Modality") == "US")
    for name, ef, when, instance in (("SR_A", 40, "20240101120000", 1), ("SR_B", 55, "20240101150000", 2)):
        sr = sr_file(root / "sr" / name, [container(LV, num(LVEF_US, ef, "%", mod(METHOD, BIPLANE)),
                                                    num(LVEF_US, None, "%"))], when=when, instance=instance)
        ds = pydicom.dcmread(sr)
        ds.StudyInstanceUID = study
        ds.save_as(sr, enforce_file_format=True)
    summary = ingest(root, tmp_path / "out", "salt=salt")
    assert summary["measurement_files"] == 2 and summary["measurements_replaced"] == 1
    assert summary["measurement_items_skipped"] == {"not_measured": 2} and summary["measurement_units_refused"] == {}
    labels = pd.read_csv(tmp_path / "out" / "labels.csv")
    assert labels["ef"].dropna().tolist() == [55.0]
    text = (tmp_path / "out" / "measurements.csv").read_text()
    assert study not in text and "20240101" not in text and "P7654321" not in text and "Roe" not in text


def test_measurements_csv_holds_no_date_or_uid(tmp_path):
    sr = sr_file(tmp_path / "sr.dcm", [container(LV, num(LVEF_US, 58, "%", mod(METHOD, BIPLANE)))])
    table = current_measurements(read_measurements(sr, "salt").rows)
    text = table.to_csv(index=False)
    assert STUDY not in text and "20240101" not in text and "P7654321" not in text
    assert list(table.columns)[:3] == ["study_key", "instance_key", "image_key"]
    assert isinstance(pydicom.dcmread(sr).ContentSequence[0], Dataset) and isinstance(table, pd.DataFrame)
