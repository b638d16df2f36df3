"""Synthetic echocardiography studies written as real DICOM files, with reports and labels.

Each study is a fake patient with hidden findings (EF, LV/LA dilation, pericardial effusion,
mitral/tricuspid regurgitation). Each loop renders one of EchoPrime's 11 views with its own
geometry (fan angle, chamber layout), beating at the study's heart rate: LV wall motion amplitude
follows EF, dilation enlarges chambers, an effusion is a black band inside a bright pericardium,
regurgitation is a mosaic colour jet in the Doppler views. Around the fan sit what real exports
carry: burned-in fake PHI text, an ECG strip with a sweeping cursor, a colour bar.

Files are written as machines write them: mostly US Multi-frame JPEG Baseline ``YBR_FULL_422``
(Pillow, 4:2:2), plus RGB uncompressed, RLE Lossless, JPEG-LS and MONOCHROME2 loops, a few
single-frame screenshots, a non-DICOM file, in ``<PatientID>/<StudyDate>/`` folders. Reports are
in EchoPrime's sections (``medvid.io.reports.format_report``) with varied phrasing, under a header with the
study's fake identifiers (as in its DICOM tags), sometimes with a dated prior-study comparison, and a
signature line: the PHI that ``medvid ingest`` must scrub.

``EchoLook`` holds how the machines image and the readers write (probe geometry, gain, speckle, colour
map, heart rate and cycle shape, LV wall-motion pattern, report section order); ``DEFAULT_LOOK`` is the
world medvid was developed on, ``medvid.synth.echo_world`` draws other worlds from a seed.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLSLossless, PYDICOM_IMPLEMENTATION_UID,
                         RLELossless, UID, generate_uid)

from medvid.io.dicom import US_MULTIFRAME
from medvid.io.reports import format_report
from medvid.utils import atomic_path
from medvid.vocab import ECHO_VIEWS

US_IMAGE = UID("1.2.840.10008.5.1.4.1.1.6.1")
FORMATS = ("jpeg_ybr", "rgb", "rle", "jpegls", "mono")
LABEL_COLUMNS = ("ef", "reduced_ef", "lv_dilation", "la_dilation", "pericardial_effusion",
                 "mitral_regurgitation", "tricuspid_regurgitation")
DOPPLER_VIEWS = ("Apical_Doppler", "Doppler_Parasternal_Long", "Doppler_Parasternal_Short")

_FIRST = ("JANE", "JOHN", "MARIA", "AHMED", "WEI", "OLGA", "PEDRO", "AIKO", "LUCA", "FATIMA", "NOAH", "EMMA")
_LAST = ("DOE", "ROE", "SMITHSON", "KOWALSKA", "TANAKAWA", "OKONKWO", "LINDQVIST", "MORAIS", "HALVORSEN")
_VENDORS = (("SynthSonic", "EchoSim 9"), ("Acme Ultrasound", "CardioView X"), ("Phantom Medical", "PV-500"))


@dataclass
class Findings:
    """Hidden truth of a study; severities are 0 = none, 1 = mild/small, 2 = moderate, 3 = severe."""

    ef: float
    lv_dilation: bool
    la_dilation: bool
    pericardial_effusion: int
    mitral_regurgitation: int
    tricuspid_regurgitation: int

    def labels(self) -> dict[str, Any]:
        return {"ef": round(self.ef, 1), "reduced_ef": int(self.ef < 50), "lv_dilation": int(self.lv_dilation),
                "la_dilation": int(self.la_dilation), "pericardial_effusion": int(self.pericardial_effusion > 0),
                "mitral_regurgitation": int(self.mitral_regurgitation >= 2),
                "tricuspid_regurgitation": int(self.tricuspid_regurgitation >= 2)}


def sample_findings(rng: np.random.Generator) -> Findings:
    band = rng.choice(3, p=(0.55, 0.25, 0.20))
    ef = float(rng.uniform(*((55, 70), (38, 54), (15, 37))[band]))
    lv_dilation = bool(rng.random() < (0.12, 0.4, 0.75)[band])
    mr = int(rng.choice(4, p=(0.5, 0.15, 0.2, 0.15)))
    return Findings(
        ef=ef, lv_dilation=lv_dilation, la_dilation=bool(rng.random() < (0.6 if mr >= 2 else 0.2)),
        pericardial_effusion=int(rng.choice(3, p=(0.7, 0.15, 0.15))), mitral_regurgitation=mr,
        tricuspid_regurgitation=int(rng.choice(4, p=(0.6, 0.15, 0.15, 0.1))))


# ----------------------------------------------------------------------------------------------
# View geometry. Shapes are ellipses (cx, cy, a, b, angle°) in fan coordinates: x ∈ [-1, 1] across
# the fan's widest extent, y ∈ [0, 1] in depth. Chambers are (name, ellipse); "envelope" is the
# pericardial sac around them.
# ----------------------------------------------------------------------------------------------
_A4C = {"LV": (0.30, 0.40, 0.22, 0.30, 0), "RV": (-0.30, 0.43, 0.17, 0.27, 0),
        "LA": (0.28, 0.80, 0.19, 0.13, 0), "RA": (-0.28, 0.80, 0.17, 0.13, 0)}
_PLAX = {"LV": (-0.15, 0.55, 0.46, 0.17, 0), "RV": (-0.10, 0.27, 0.50, 0.08, 0),
         "AO": (0.50, 0.45, 0.26, 0.07, 0), "LA": (0.48, 0.73, 0.18, 0.13, 0)}
_PSAX = {"LV": (0.05, 0.58, 0.26, 0.26, 0), "RV": (-0.35, 0.38, 0.30, 0.12, -30)}
VIEW_GEOMETRY: dict[str, dict[str, Any]] = {
    "A4C": {"half_angle": 42, "chambers": _A4C, "envelope": (0.0, 0.58, 0.68, 0.46, 0)},
    "A2C": {"half_angle": 38, "chambers": {"LV": (0.0, 0.42, 0.26, 0.33, 0), "LA": (0.0, 0.84, 0.23, 0.12, 0)},
            "envelope": (0.0, 0.60, 0.42, 0.46, 0)},
    "A3C": {"half_angle": 40, "chambers": {"LV": (-0.12, 0.42, 0.24, 0.31, 0), "LA": (-0.18, 0.84, 0.2, 0.12, 0),
                                           "AO": (0.36, 0.68, 0.10, 0.26, -35)},
            "envelope": (0.0, 0.60, 0.58, 0.46, 0)},
    "A5C": {"half_angle": 36, "chambers": {**_A4C, "AO": (0.02, 0.66, 0.13, 0.28, 0)},
            "envelope": (0.0, 0.58, 0.68, 0.46, 0)},
    "Apical_Doppler": {"half_angle": 34, "chambers": _A4C, "envelope": (0.0, 0.58, 0.68, 0.46, 0),
                       "flow_box": (-0.55, 0.45, 0.6, 0.98), "jets": ("MR", "TR")},
    "Parasternal_Long": {"half_angle": 45, "chambers": _PLAX, "envelope": (0.05, 0.52, 0.85, 0.38, 0)},
    "Doppler_Parasternal_Long": {"half_angle": 45, "chambers": _PLAX, "envelope": (0.05, 0.52, 0.85, 0.38, 0),
                                 "flow_box": (0.1, 0.3, 0.8, 0.95), "jets": ("MR",)},
    "Parasternal_Short": {"half_angle": 45, "chambers": _PSAX, "envelope": (0.0, 0.55, 0.55, 0.4, 0)},
    "Doppler_Parasternal_Short": {
        "half_angle": 45, "chambers": {"AO": (0.0, 0.52, 0.16, 0.16, 0), "LA": (0.0, 0.80, 0.26, 0.1, 0),
                                       "RV": (0.15, 0.24, 0.48, 0.08, 10), "RA": (-0.45, 0.62, 0.14, 0.16, 0)},
        "envelope": (0.0, 0.55, 0.7, 0.42, 0), "flow_box": (-0.7, 0.4, -0.05, 0.85), "jets": ("TR",)},
    "SSN": {"half_angle": 32, "arch": (0.0, 0.68, 0.62, 0.42), "envelope": None, "chambers": {}},
    "Subcostal": {"half_angle": 45, "liver": 0.33, "chambers": {k: (x * 0.8 + 0.1, 0.35 + y * 0.6, a * 0.8, b * 0.8, 25)
                                                                for k, (x, y, a, b, _) in _A4C.items()},
                  "envelope": (0.1, 0.66, 0.6, 0.36, 25)},
}
# Where the regurgitant jet starts (valve) and points (into the atrium), per view and jet.
_JET_PATH = {("Apical_Doppler", "MR"): ((0.29, 0.70), (0.28, 0.92)),
             ("Apical_Doppler", "TR"): ((-0.29, 0.70), (-0.28, 0.92)),
             ("Doppler_Parasternal_Long", "MR"): ((0.35, 0.62), (0.55, 0.82)),
             ("Doppler_Parasternal_Short", "TR"): ((-0.3, 0.5), (-0.5, 0.7))}
# Chamber scale at end-diastole for the findings.
_DILATION = {"LV": 1.32, "LA": 1.4}


@dataclass(frozen=True)
class EchoLook:
    """How one world's machines image and its readers order their reports (defaults: the development world)."""

    half_angle: float = 0.0  # degrees added to each view's sector half angle
    depth: float = 1.0  # sector radius factor
    gain: float = 1.0
    speckle_shape: float = 4.0  # gamma shape of the speckle (lower: grainier), mean 1
    speckle_mix: tuple[float, float] = (0.7, 0.3)  # fixed and frame-to-frame speckle weights
    attenuation: float = 0.45  # brightness lost at full depth
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour map of the B-mode image (per channel gain)
    heart_rate: tuple[float, float] = (55.0, 105.0)  # beats per minute, drawn per study
    systole: float = 0.35  # share of the cycle in systole
    sharpness: float = 2.0  # exponent of the contraction curve
    wall: tuple[float, float] = (1.0, 1.0)  # LV shortening across / along its long axis (area kept: sum 2)
    section_order: tuple[str, ...] = ()  # report section order; empty: EchoPrime's


DEFAULT_LOOK = EchoLook()


@dataclass
class _Layout:
    rows: int
    cols: int
    apex: tuple[float, float]
    radius: float
    half_angle: float
    text_rows: int
    ecg_rows: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Bounding box (x0, y0, x1, y1) of the fan."""
        half = self.radius * np.sin(np.radians(self.half_angle))
        return (int(np.floor(self.apex[0] - half)), int(self.apex[1]),
                int(np.ceil(self.apex[0] + half)) + 1, int(np.ceil(self.apex[1] + self.radius)) + 1)

    def to_px(self, x: np.ndarray | float, y: np.ndarray | float) -> tuple[Any, Any]:
        half = self.radius * np.sin(np.radians(self.half_angle))
        return self.apex[0] + np.asarray(x) * half, self.apex[1] + np.asarray(y) * self.radius


def _layout(rows: int, cols: int, half_angle: float, depth: float = 1.0) -> _Layout:
    text_rows, ecg_rows = max(10, rows // 11), max(12, rows // 8)
    radius = (rows - text_rows - ecg_rows - 3) * depth
    radius = min(radius, (cols / 2 - 10) / np.sin(np.radians(half_angle)))
    return _Layout(rows, cols, (cols / 2.0, text_rows + 1.0), float(radius), half_angle, text_rows, ecg_rows)


class _Canvas:
    """Pixel grid in fan coordinates, with ellipse masks."""

    def __init__(self, lay: _Layout) -> None:
        self.lay = lay
        yy, xx = np.mgrid[0:lay.rows, 0:lay.cols].astype(np.float32)
        half = lay.radius * np.sin(np.radians(lay.half_angle))
        self.u = (xx - lay.apex[0]) / half
        self.v = (yy - lay.apex[1]) / lay.radius
        dx, dy = xx - lay.apex[0], yy - lay.apex[1]
        dist = np.hypot(dx, dy)
        angle = np.degrees(np.arctan2(dx, np.maximum(dy, 1e-6)))
        self.fan = (dist <= lay.radius) & (np.abs(angle) <= lay.half_angle) & (dy > 0)
        self.depth = np.clip(dist / lay.radius, 0, 1)

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
        t = np.radians(angle)
        du, dv = self.u - cx, self.v - cy
        ru, rv = du * np.cos(t) + dv * np.sin(t), -du * np.sin(t) + dv * np.cos(t)
        return (ru / (a * scale)) ** 2 + (rv / (b * scale)) ** 2 <= 1.0


def _contraction(t: np.ndarray | float, heart_rate: float, systole: float = 0.35, sharpness: float = 2.0) -> np.ndarray:
    """0 at end-diastole, 1 at end-systole; systole takes ``systole`` of the cycle."""
    phase = (np.asarray(t) * heart_rate / 60.0) % 1.0
    return np.where(phase < systole, np.sin(np.pi / 2 * phase / systole),
                    np.cos(np.pi / 2 * (phase - systole) / (1 - systole))) ** sharpness


def render_loop(view: str, findings: Findings, n_frames: int, fps: float, rows: int, cols: int,
                rng: np.random.Generator, heart_rate: float = 70.0, overlay_text: Sequence[str] = (),
                look: EchoLook = DEFAULT_LOOK) -> tuple[np.ndarray, dict]:
    """Render one cine loop in ``look`` → ``uint8 (T, rows, cols, 3)`` RGB and its geometry: sector/flow
    boxes, the per-frame ``contraction`` (0 = end-diastole, 1 = end-systole), the ``fan`` (apex x, apex y,
    radius, half width in pixels) and the ``jitter`` of the fan coordinates."""
    geo = VIEW_GEOMETRY[view]
    lay = _layout(rows, cols, geo["half_angle"] + rng.uniform(-2, 2) + look.half_angle, look.depth)
    cv = _Canvas(lay)
    jitter = rng.uniform(-0.03, 0.03, size=2)
    cv.u, cv.v = cv.u - jitter[0], cv.v - jitter[1]
    gain = rng.uniform(0.85, 1.15) * look.gain
    k = look.speckle_shape
    speckle = rng.gamma(k, 1 / k, size=(rows, cols)).astype(np.float32)
    fresh_speckle = rng.gamma(k, 1 / k, size=(16, rows, cols)).astype(np.float32)  # cycled: frames always differ
    attenuation = (1.0 - look.attenuation * cv.depth).astype(np.float32)
    es_ratio = (1.0 - findings.ef / 100.0) ** (1 / 3)  # LV linear size at end-systole vs end-diastole
    eff_band = (0.0, 0.07, 0.14)[findings.pericardial_effusion]
    times = np.arange(n_frames) / fps
    contraction = _contraction(times + rng.uniform(0, 1), heart_rate, look.systole, look.sharpness)
    overlay, overlay_mask = _static_overlay(lay, overlay_text, doppler="flow_box" in geo or view == "SSN")
    ecg = _ecg_trace(lay, heart_rate, fps, n_frames)
    frames = np.empty((n_frames, rows, cols, 3), dtype=np.uint8)
    flow_box_px = None
    if "flow_box" in geo:
        x0, y0, x1, y1 = geo["flow_box"]
        (px0, px1), (py0, py1) = lay.to_px(np.array([x0, x1]), np.array([y0, y1]))
        flow_box_px = (int(px0), int(py0), int(px1), int(py1))
    for f in range(n_frames):
        c = float(contraction[f])
        img = np.full((rows, cols), 0.26, dtype=np.float32)
        colour = np.zeros((rows, cols, 3), dtype=np.float32)
        has_colour = np.zeros((rows, cols), dtype=bool)
        if "liver" in geo:
            img[cv.v < geo["liver"]] = 0.5
        env = geo.get("envelope")
        if env is not None:
            beat = 1.0 - 0.05 * c
            lv_scale = _DILATION["LV"] if findings.lv_dilation else 1.0
            e = (*env[:4], env[4])
            env_scale = beat * (1.0 + 0.12 * (lv_scale - 1.0))
            img[cv.ellipse(*e, scale=env_scale * (1.10 + eff_band))] = 0.9  # pericardium
            img[cv.ellipse(*e, scale=env_scale * (1.05 + eff_band))] = 0.02 if eff_band else 0.26
            img[cv.ellipse(*e, scale=env_scale)] = 0.55  # myocardium
        for name, (cx, cy, a, b, ang) in geo["chambers"].items():
            scale = _DILATION.get(name, 1.0) if getattr(findings, f"{name.lower()}_dilation", False) else 1.0
            if name == "LV":
                scale *= 1.0 - (1.0 - es_ratio) * c
                if look.wall != (1.0, 1.0):  # the same area change, shared otherwise between the two axes
                    shrink = 1.0 - (1.0 - es_ratio) * c
                    a, b = a * shrink ** (look.wall[0] - 1), b * shrink ** (look.wall[1] - 1)
            elif name == "RV":
                scale *= 1.0 - 0.22 * c
            elif name in ("LA", "RA"):
                scale *= 0.9 + 0.15 * c
            if name == "LV" and findings.lv_dilation:
                cx, cy = cx, cy + 0.04
            wall = cv.ellipse(cx, cy, a * 1.25, b * 1.12, ang, scale)
            img[wall] = np.maximum(img[wall], 0.6)
            img[cv.ellipse(cx, cy, a, b, ang, scale)] = 0.04  # blood pool
            if name == "AO" and "flow_box" not in geo:
                img[cv.ellipse(cx, cy, a, b, ang, scale * 0.25)] = 0.7  # valve leaflets
        if "arch" in geo:
            cx, cy, a, b = geo["arch"]
            ring = cv.ellipse(cx, cy, a, b) & ~cv.ellipse(cx, cy, a * 0.66, b * 0.55) & (cv.v < cy)
            lumen = cv.ellipse(cx, cy, a * 0.9, b * 0.85) & ~cv.ellipse(cx, cy, a * 0.76, b * 0.7) & (cv.v < cy)
            img[ring] = 0.7
            img[lumen] = 0.04
            flow = (0.95, 0.15, 0.1) if c > 0.15 else (0.1, 0.25, 0.95)
            colour[lumen & cv.fan] = flow
            has_colour |= lumen & cv.fan
        if flow_box_px is not None:
            _draw_flow(view, geo, cv, findings, c, rng, colour, has_colour, flow_box_px)
        # Speckle decorrelates partly from frame to frame, as in real scans (the whole fan varies over time).
        fresh = fresh_speckle[f % len(fresh_speckle)]
        img = np.clip(img * (look.speckle_mix[0] * speckle + look.speckle_mix[1] * fresh) * attenuation * gain, 0, 1)
        img[~cv.fan] = 0.0
        rgb = np.repeat(img[..., None], 3, axis=-1)
        if look.tint != (1.0, 1.0, 1.0):
            rgb = np.clip(rgb * np.asarray(look.tint, np.float32), 0, 1)
        rgb[has_colour] = colour[has_colour]
        out = (rgb * 255.0).astype(np.uint8)
        out[overlay_mask] = overlay[overlay_mask]
        _draw_ecg(out, lay, ecg, f)
        frames[f] = out
    fan = (lay.apex[0], lay.apex[1], lay.radius, float(lay.radius * np.sin(np.radians(lay.half_angle))))
    return frames, {"sector_box": lay.box, "flow_box": flow_box_px, "contraction": contraction,
                    "fan": fan, "jitter": (float(jitter[0]), float(jitter[1]))}


def _draw_flow(view: str, geo: dict, cv: _Canvas, findings: Findings, c: float, rng: np.random.Generator,
               colour: np.ndarray, has_colour: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Colour Doppler inside the flow box: laminar inflow/outflow, mosaic regurgitant jets in systole."""
    x0, y0, x1, y1 = box
    inbox = np.zeros_like(has_colour)
    inbox[y0:y1, x0:x1] = True
    inbox &= cv.fan
    blood = np.zeros_like(has_colour)
    for cx, cy, a, b, ang in geo["chambers"].values():
        blood |= cv.ellipse(cx, cy, a, b, ang, 0.8)
    laminar = inbox & blood & (rng.random(has_colour.shape) < 0.85)
    colour[laminar] = (0.85, 0.1, 0.05) if c < 0.4 else (0.05, 0.2, 0.85)
    has_colour |= laminar
    severities = {"MR": findings.mitral_regurgitation, "TR": findings.tricuspid_regurgitation}
    for jet in geo.get("jets", ()):
        severity = severities[jet]
        if severity == 0 or c < 0.25:
            continue
        (sx, sy), (ex, ey) = _JET_PATH[(view, jet)]
        length = (0.35, 0.65, 1.0)[severity - 1] * c
        cx, cy = sx + (ex - sx) * length / 2, sy + (ey - sy) * length / 2
        ang = np.degrees(np.arctan2(ey - sy, ex - sx))
        a = max(np.hypot(ex - sx, ey - sy) * length / 2 * 1.6, 0.05)
        b = (0.05, 0.08, 0.12)[severity - 1]
        plume = cv.ellipse(cx, cy, a, b, ang) & cv.fan
        mosaic = np.array([(1.0, 0.95, 0.1), (0.1, 0.95, 0.3), (0.1, 0.9, 1.0), (1.0, 0.5, 0.0)], dtype=np.float32)
        colour[plume] = mosaic[rng.integers(0, len(mosaic), size=int(plume.sum()))]
        has_colour |= plume


def _static_overlay(lay: _Layout, lines: Sequence[str], doppler: bool) -> tuple[np.ndarray, np.ndarray]:
    """Burned-in text in the top strip (fake PHI), depth marks, and a colour bar for flow views."""
    im = Image.new("RGB", (lay.cols, lay.rows))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(7, lay.text_rows - 2))
    if lines:
        draw.text((2, 0), lines[0], fill=(235, 235, 235), font=font)
        if len(lines) > 1:
            right = draw.textlength(lines[1], font=font)
            draw.text((lay.cols - right - 2, 0), lines[1], fill=(235, 235, 235), font=font)
    for k in range(1, 5):  # depth ticks left of the fan
        y = int(lay.apex[1] + k * lay.radius / 5)
        draw.line([(lay.box[0] - 4, y), (lay.box[0] - 1, y)], fill=(200, 200, 200))
    if doppler:
        x = lay.cols - 6
        for y in range(lay.text_rows + 4, lay.text_rows + 4 + lay.rows // 3):
            f = (y - lay.text_rows - 4) / (lay.rows / 3)
            draw.line([(x, y), (x + 3, y)], fill=(int(255 * (1 - f)), 40, int(255 * f)))
    arr = np.asarray(im)
    return arr, arr.any(axis=-1)


def _ecg_trace(lay: _Layout, heart_rate: float, fps: float, n_frames: int) -> np.ndarray:
    """ECG y-coordinate per column of the strip: a sweep of ``cols`` pixels over ~2 s."""
    t = np.linspace(0, 2.0, lay.cols)
    phase = (t * heart_rate / 60.0) % 1.0
    wave = (np.exp(-((phase - 0.02) / 0.012) ** 2) - 0.25 * np.exp(-((phase - 0.05) / 0.01) ** 2)
            + 0.2 * np.exp(-((phase - 0.3) / 0.04) ** 2) + 0.1 * np.exp(-((phase - 0.85) / 0.03) ** 2))
    mid = lay.rows - lay.ecg_rows / 2
    return np.clip(mid - wave * (lay.ecg_rows * 0.4), lay.rows - lay.ecg_rows, lay.rows - 1).astype(int)


def _draw_ecg(frame: np.ndarray, lay: _Layout, ecg: np.ndarray, f: int) -> None:
    """Draw the trace up to the sweep cursor (moves with time: the strip varies across frames)."""
    cursor = int((f * 7) % lay.cols)
    xs = np.arange(cursor + 1)
    frame[ecg[xs], xs] = (40, 230, 60)
    frame[lay.rows - lay.ecg_rows:, cursor] = (230, 230, 40)


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def report_sections(f: Findings, rng: np.random.Generator) -> dict[str, str]:
    """Report text per EchoPrime section, consistent with the findings, with varied phrasing."""
    ef = int(round(f.ef))
    grade = ("normal" if ef >= 55 else "mildly reduced" if ef >= 45 else "moderately reduced" if ef >= 35
             else "severely reduced")
    size = _pick(rng, ("moderately dilated", "dilated", "enlarged")) if f.lv_dilation else _pick(
        rng, ("normal in size", "normal in cavity size", "of normal size"))
    ef_phrase = _pick(rng, (f"LV ejection fraction is {ef}%.", f"The left ventricular ejection fraction is estimated at {ef}%.",
                            f"LVEF {ef}%.", f"Ejection fraction is approximately {ef} %."))
    lv = f"The left ventricle is {size}. {_pick(rng, ('Systolic function is', 'Global left ventricular systolic function is'))} {grade}. {ef_phrase}"
    wall = (_pick(rng, ("No regional wall motion abnormalities.", "Normal regional wall motion."))
            if ef >= 50 else _pick(rng, ("Global hypokinesis.", "Diffuse hypokinesis of the left ventricle.",
                                          "Global hypokinesis with no focal wall motion abnormality.")))
    sev = ("", "mild", "moderate", "severe")
    sections = {
        "Left Ventricle": lv,
        "Resting Segmental Wall Motion Analysis": wall,
        "Right Ventricle": _pick(rng, ("The right ventricle is normal in size and function.",
                                       "Normal right ventricular size and systolic function.")),
        "Left Atrium": (_pick(rng, ("The left atrium is dilated.", "Moderately dilated left atrium.",
                                    "Left atrial enlargement."))
                        if f.la_dilation else _pick(rng, ("The left atrium is normal in size.", "Normal left atrial size."))),
        "Right Atrium": "The right atrium is normal in size.",
        "Atrial Septum": _pick(rng, ("The interatrial septum appears intact.", "No atrial septal defect is seen.")),
        "Mitral Valve": (f"{sev[f.mitral_regurgitation].capitalize()} mitral regurgitation."
                         if f.mitral_regurgitation else _pick(rng, ("No mitral regurgitation.",
                                                                    "The mitral valve is normal without regurgitation."))),
        "Aortic Valve": _pick(rng, ("The aortic valve is trileaflet and opens normally.", "Normal aortic valve.")),
        "Tricuspid Valve": (_pick(rng, (f"{sev[f.tricuspid_regurgitation].capitalize()} tricuspid regurgitation.",
                                        f"There is {sev[f.tricuspid_regurgitation]} tricuspid regurgitation."))
                            if f.tricuspid_regurgitation else _pick(rng, ("No tricuspid regurgitation.",
                                                                          "Trivial tricuspid regurgitation."))),
        "Pulmonic Valve": "The pulmonic valve is not well seen.",
        "Pericardium": (_pick(rng, (f"There is a {('', 'small', 'moderate')[f.pericardial_effusion]} pericardial effusion.",
                                    f"{('', 'Small', 'Moderate')[f.pericardial_effusion]} circumferential pericardial effusion."))
                        if f.pericardial_effusion else _pick(rng, ("No pericardial effusion.",
                                                                   "There is no pericardial effusion."))),
        "Aorta": "The aortic root is normal in size.",
        "IVC": _pick(rng, ("The inferior vena cava is normal in size with normal respiratory variation.",
                           "Normal IVC size and collapsibility.")),
    }
    for optional in ("Pulmonic Valve", "Aorta", "IVC"):  # not every reader reports every section
        if rng.random() < 0.25:
            del sections[optional]
    return sections


def report_text(sections: dict[str, str], patient: dict, study: dict, rng: np.random.Generator,
                order: Sequence[str] = ()) -> str:
    """The full report as a reporting system exports it: a header with the study's fake identifiers (the
    same as its DICOM tags), the sections (in ``order``; empty: EchoPrime's), sometimes a prior-study
    comparison, a signature line."""
    day = date(int(study["date"][:4]), int(study["date"][4:6]), int(study["date"][6:]))
    birth = date(int(patient["birth_date"][:4]), int(patient["birth_date"][4:6]), int(patient["birth_date"][6:]))
    last, first = patient["name"].split("^")[:2]
    ref_last, ref_first = patient["physician"].split("^")[:2]
    reader = f"{_pick(rng, _FIRST)} {_pick(rng, _LAST)}"
    header = [f"{patient['institution']} - Echocardiography Laboratory",
              f"Patient: {_pick(rng, (f'{first} {last}', f'{last}, {first}', patient['name']))}   "
              f"MRN: {patient['id']}   DOB: {_pick(rng, (f'{birth:%m/%d/%Y}', birth.isoformat(), f'{birth:%d.%m.%Y}'))}",
              f"Accession: {study['accession']}   Study date: {_pick(rng, (f'{day:%m/%d/%Y}', f'{day:%B} {day.day}, {day.year}', study['date']))}",
              f"Referring physician: Dr. {ref_first.title()} {ref_last.title()}"]
    if rng.random() < 0.4:
        header.append(f"Sonographer: {_pick(rng, _FIRST).title()} {_pick(rng, _LAST).title()}, RDCS")
    body = dict(sections)
    if rng.random() < 0.5:
        prior = day - timedelta(days=int(rng.integers(90, 1500)))
        body["Left Ventricle"] += f" Compared with the prior study of {_pick(rng, (f'{prior:%m/%d/%Y}', f'{prior:%d %b %Y}'))}, " \
                                  "left ventricular function is unchanged."
    signed = day + timedelta(days=int(rng.integers(0, 2)))
    signature = (f"Electronically signed by DR {reader.upper()} on {signed:%m/%d/%Y} "
                 f"{int(rng.integers(7, 19)):02d}:{int(rng.integers(60)):02d}")
    text = (format_report(body) if not order else
            "\n".join(f"{name}: {' '.join(body[name].split())}" for name in order if body.get(name, "").strip()))
    return "\n".join([*header, "", text, "", signature])


# ----------------------------------------------------------------------------------------------
# DICOM writing
# ----------------------------------------------------------------------------------------------
def _base_dataset(sop_class: UID, sop_uid: str, transfer_syntax: UID, patient: dict, study: dict,
                  series_uid: str, series_number: int, instance_number: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.Modality = "US"
    ds.PatientName, ds.PatientID = patient["name"], patient["id"]
    ds.PatientBirthDate, ds.PatientSex = patient["birth_date"], patient["sex"]
    ds.InstitutionName = patient["institution"]
    ds.ReferringPhysicianName = patient["physician"]
    ds.AccessionNumber = study["accession"]
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study["uid"], study["date"], "101500"
    ds.StudyID = "1"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, series_number, instance_number
    ds.Manufacturer, ds.ManufacturerModelName = study["vendor"]
    return ds


def _set_pixels(ds: Dataset, frames: np.ndarray, fmt: str, quality: int) -> None:
    """Fill the image pixel module and Pixel Data in format ``fmt`` (see ``FORMATS``)."""
    n, rows, cols, _ = frames.shape
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if fmt == "mono":
        grey = np.round(frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = grey.tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    if fmt == "jpeg_ybr":
        encoded = []
        for frame in frames:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=1)
            encoded.append(buf.getvalue())
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate(encoded, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
        ds.LossyImageCompressionRatio = f"{frames.nbytes / max(1, sum(map(len, encoded))):.2f}"[:16]
        return
    ds.PhotometricInterpretation = "RGB"
    ds.PixelData = frames.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if fmt in ("rle", "jpegls"):
        ds.compress(RLELossless if fmt == "rle" else JPEGLSLossless, encoding_plugin="pylibjpeg" if fmt == "rle" else "",
                    generate_instance_uid=False)


def _regions(box: tuple[int, int, int, int], flow_box: tuple[int, int, int, int] | None, rows: int) -> DicomSequence:
    def region(b: tuple[int, int, int, int], data_type: int) -> Dataset:
        r = Dataset()
        r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = 1, data_type, 0
        r.RegionLocationMinX0, r.RegionLocationMinY0 = b[0], b[1]
        r.RegionLocationMaxX1, r.RegionLocationMaxY1 = b[2] - 1, b[3] - 1
        r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = 3  # cm
        r.PhysicalDeltaX = r.PhysicalDeltaY = 16.0 / rows
        r.ReferencePixelX0, r.ReferencePixelY0 = (b[0] + b[2]) // 2, b[1]
        return r

    items = [region(box, 1)]
    if flow_box is not None:
        items.append(region(flow_box, 2))
    return DicomSequence(items)


def write_cine(path: Path, frames: np.ndarray, fps: float, fmt: str, geometry: dict, base: Dataset,
               quality: int = 90, time_vector: bool = False) -> None:
    """Write a US Multi-frame file (atomically) with timing, regions and pixel data in ``fmt``."""
    ds = base
    ds.NumberOfFrames = len(frames)
    if time_vector:
        increments = [0.0] + [round(1000.0 / fps, 3)] * (len(frames) - 1)
        ds.FrameTimeVector = increments
        ds.FrameIncrementPointer = 0x00181065
    else:
        ds.FrameTime = f"{1000.0 / fps:.3f}"
        ds.FrameIncrementPointer = 0x00181063
    ds.CineRate = int(round(fps))
    ds.RecommendedDisplayFrameRate = int(round(fps))
    ds.SequenceOfUltrasoundRegions = _regions(geometry["sector_box"], geometry["flow_box"], frames.shape[1])
    _set_pixels(ds, frames, fmt, quality)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def write_still(path: Path, frame: np.ndarray, base: Dataset) -> None:
    """A single-frame US image (a measurement screenshot): present in studies, not a cine loop."""
    base.SOPClassUID = base.file_meta.MediaStorageSOPClassUID = US_IMAGE
    _set_pixels(base, frame[None], "rgb", 90)
    with atomic_path(path) as tmp:
        base.save_as(tmp, enforce_file_format=True)


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------
def _uid(rng: np.random.Generator) -> str:
    return generate_uid(entropy_srcs=[str(rng.integers(1 << 62))])


def _fake_patient(rng: np.random.Generator) -> dict:
    birth = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 365 * 60)))
    return {"name": f"{_pick(rng, _LAST)}^{_pick(rng, _FIRST)}", "id": f"P{int(rng.integers(10**6, 10**7)):07d}",
            "birth_date": birth.strftime("%Y%m%d"), "sex": _pick(rng, ("F", "M")),
            "institution": _pick(rng, ("SAINT SYNTHETIC HOSPITAL", "FAKEVILLE HEART CENTRE", "MOCK UNIVERSITY CLINIC")),
            "physician": f"{_pick(rng, _LAST)}^{_pick(rng, _FIRST)}^DR"}


def _splits(n: int, rng: np.random.Generator, fractions: Sequence[float]) -> list[str]:
    n_val = max(1, int(round(n * fractions[1]))) if n >= 3 else 0
    n_test = max(1, int(round(n * fractions[2]))) if n >= 3 else 0
    labels = ["val"] * n_val + ["test"] * n_test + ["train"] * (n - n_val - n_test)
    return [labels[i] for i in rng.permutation(n)]


def synthesize(out: str | os.PathLike, studies: int = 24, seed: int = 0, loops_per_study: int = 6,
               rows: int = 128, cols: int = 160, frames_range: Sequence[int] = (32, 64),
               fps_choices: Sequence[float] = (30.0, 50.0, 60.0),
               format_weights: dict[str, float] | None = None, still_fraction: float = 0.5,
               split_fractions: Sequence[float] = (0.7, 0.15, 0.15), jpeg_quality: int = 90,
               progress: Callable[[int], None] | None = None,
               required_views: Sequence[str] = ("A4C", "Parasternal_Long"), look: EchoLook = DEFAULT_LOOK,
               sections: Callable[[Findings, np.random.Generator], dict[str, str]] = report_sections) -> dict[str, Any]:
    """Write ``studies`` synthetic echo studies under ``out/dicom`` plus reports/labels/views CSVs, imaged in
    ``look`` and reported with ``sections`` (``medvid.synth.echo_world`` draws both for other worlds).

    Every study holds ``required_views`` (in that order, up to ``loops_per_study``), the rest of its loops
    drawn from the other EchoPrime views.

    Returns a summary. Deterministic for a given ``seed`` (UIDs included).
    """
    out = Path(out)
    weights = format_weights or {"jpeg_ybr": 0.7, "rgb": 0.08, "rle": 0.08, "jpegls": 0.04, "mono": 0.1}
    unknown = set(weights) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; known: {FORMATS}")
    fmt_names, fmt_p = list(weights), np.array(list(weights.values()), dtype=float) / sum(weights.values())
    must = list(dict.fromkeys(required_views))
    if set(must) - set(ECHO_VIEWS):
        raise ValueError(f"unknown views {sorted(set(must) - set(ECHO_VIEWS))}; known: {list(ECHO_VIEWS)}")
    rng = np.random.default_rng(seed)
    text_rng = np.random.default_rng([seed, 1])  # report headers/signatures: keeps ``rng``'s stream unchanged
    dicom_root = out / "dicom"
    split_of = _splits(studies, rng, split_fractions)
    reports, labels, views = [], [], []
    n_loops = n_stills = n_frames_total = 0
    formats_used: dict[str, int] = {}
    pending = [f for f, p in zip(fmt_names, fmt_p) if p > 0]  # every format in use appears at least once
    for s in range(studies):
        patient, findings = _fake_patient(rng), sample_findings(rng)
        study_date = (date(2015, 1, 1) + timedelta(days=int(rng.integers(0, 3000)))).strftime("%Y%m%d")
        study = {"uid": _uid(rng), "date": study_date, "accession": f"A{int(rng.integers(10**7, 10**8))}",
                 "vendor": _VENDORS[int(rng.integers(len(_VENDORS)))]}
        folder = dicom_root / patient["id"] / study_date
        heart_rate = float(rng.uniform(*look.heart_rate))
        others = [v for v in ECHO_VIEWS if v not in must]
        chosen = must + [others[i] for i in rng.permutation(len(others))[: max(0, loops_per_study - len(must))]]
        series_uid = _uid(rng)
        for k, view in enumerate(chosen[:loops_per_study]):
            fps = float(rng.choice(fps_choices))
            n = int(rng.integers(frames_range[0], frames_range[1] + 1))
            colour_view = view in DOPPLER_VIEWS or view == "SSN"  # colour flow is never exported in greyscale
            eligible = [f for f in pending if not (f == "mono" and colour_view)]
            fmt = eligible[0] if eligible else str(rng.choice(fmt_names, p=fmt_p))
            if fmt == "mono" and colour_view:
                fmt = "jpeg_ybr"
            if fmt in pending:
                pending.remove(fmt)
            text = (f"{patient['name']} {patient['id']}", f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}")
            frames, geometry = render_loop(view, findings, n, fps, rows, cols, rng, heart_rate, text, look)
            sop_uid = _uid(rng)
            base = _base_dataset(US_MULTIFRAME, sop_uid, JPEGBaseline8Bit, patient, study, series_uid, 1, k + 1)
            name = f"US{k + 1:03d}" + (".dcm" if rng.random() < 0.5 else "")
            write_cine(folder / name, frames, fps, fmt, geometry, base, jpeg_quality,
                       time_vector=bool(rng.random() < 0.1))
            views.append({"sop_instance_uid": sop_uid, "view": view})
            formats_used[fmt] = formats_used.get(fmt, 0) + 1
            n_loops += 1
            n_frames_total += n
            if progress:
                progress(1)
        if rng.random() < still_fraction:
            base = _base_dataset(US_IMAGE, _uid(rng), ExplicitVRLittleEndian, patient, study, series_uid, 1, 99)
            write_still(folder / "SC001", frames[0], base)
            n_stills += 1
        reports.append({"study_uid": study["uid"], "report": report_text(sections(findings, rng), patient, study,
                                                                         text_rng, look.section_order),
                        "split": split_of[s]})
        labels.append({"study_uid": study["uid"], **findings.labels()})
    if studies:
        (dicom_root / "EXPORT_LOG.TXT").write_text("Export finished. 0 errors.\n", encoding="utf-8")
    _write_csv(out / "reports.csv", ["study_uid", "report", "split"], reports)
    _write_csv(out / "labels.csv", ["study_uid", *LABEL_COLUMNS], labels)
    _write_csv(out / "views.csv", ["sop_instance_uid", "view"], views)
    return {"out": str(out), "dicom_root": str(dicom_root), "studies": studies, "loops": n_loops,
            "stills": n_stills, "frames": n_frames_total, "formats": formats_used}


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


__all__ = ["DEFAULT_LOOK", "EchoLook", "Findings", "FORMATS", "LABEL_COLUMNS", "VIEW_GEOMETRY", "render_loop", "report_sections", "report_text",
           "sample_findings", "synthesize", "write_cine"]
