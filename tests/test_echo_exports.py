"""Echo exports as hospitals send them (issue 14): containers, object types, vendor SRs, accession joins,
calibration and layouts, cardiac-cycle sampling, burned-in text. Every case is a real DICOM file built
to match it (pydicom / highdicom), small enough to keep the whole file fast."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from echo_testdata import ingest
from medvid.io.dicom import DicomCine, DicomFileError, inspect_file

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
            units: tuple[int, int] = (3, 3), ref=(0, 0)) -> Dataset:
    r = Dataset()
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = box
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = spatial, data_type, 0
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx, dy
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = units
    r.ReferencePixelX0, r.ReferencePixelY0 = ref
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
