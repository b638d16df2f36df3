"""A simple laparoscopic cholecystectomy world, rendered frame by frame, and a Cholec80-layout writer.

The world is drawn in 2-D with Pillow over a procedural tissue texture: liver, gallbladder,
cystic duct and artery, fat, clips, burned liver bed, blood and irrigation fluid, seen through
a moving, zooming laparoscope with a round vignette. Each phase changes the anatomy in its own
way, and the seven Cholec80 tools are drawn with distinct shapes and colours, entering from
their own trocars with phase-typical probabilities. ``medvid.synth.lectures`` reuses
``SurgicalWorld`` so lectures show the same world the surgery videos test.

``style`` picks the look: ``"a"`` (the world medvid was developed on), ``"b"`` (a shifted world
for honest zero-shot evaluation: other tissue and tool colours and textures, tool shapes varied
within each class from video to video, a closer and more restless camera with exposure changes) or
``"random"``: a world drawn from wide distributions by its seed (``random_world``: look, lighting,
camera, phase durations and order swaps, tool co-occurrence), so every seed is a different world.
All styles share the events (phases, tools, anatomy changes), so annotations mean the same.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from medvid.io.video import write_video
from medvid.utils import atomic_write_text
from medvid.vocab import CHOLEC80_PHASES, CHOLEC80_TOOLS

FPS = 25
TOOL_STEP = 25  # tool annotations every 25th frame (1 s)

P = {name: i for i, name in enumerate(CHOLEC80_PHASES)}
T = {name: i for i, name in enumerate(CHOLEC80_TOOLS)}

# Phase durations (s) at scale 1: (min, max), drawn per video.
PHASE_SECONDS: dict[str, tuple[float, float]] = {
    "Preparation": (5, 9), "CalotTriangleDissection": (14, 22), "ClippingCutting": (8, 12),
    "GallbladderDissection": (14, 22), "GallbladderPackaging": (5, 8), "CleaningCoagulation": (6, 10),
    "GallbladderRetraction": (4, 7),
}

# Stationary probability that a tool is visible, per phase (phase-typical tools, as in Cholec80).
TOOL_PROB: dict[str, dict[str, float]] = {
    "Preparation": {"Grasper": 0.85, "Hook": 0.3},
    "CalotTriangleDissection": {"Grasper": 0.9, "Hook": 0.85},
    "ClippingCutting": {"Grasper": 0.85, "Clipper": 0.9, "Scissors": 0.9},  # clipper first, scissors last
    "GallbladderDissection": {"Grasper": 0.9, "Hook": 0.8, "Bipolar": 0.1},
    "GallbladderPackaging": {"Grasper": 0.8, "SpecimenBag": 0.95},
    "CleaningCoagulation": {"Irrigator": 0.8, "Bipolar": 0.6, "Grasper": 0.35},
    "GallbladderRetraction": {"Grasper": 0.8, "SpecimenBag": 0.9},
}
# Adjacent phases that may trade places, with the probability per video (Cholec80: packaging and cleaning).
PHASE_SWAPS: tuple[tuple[str, str, float], ...] = (("GallbladderPackaging", "CleaningCoagulation", 0.3),)
CLIP_TO_CUT = 0.6  # in ClippingCutting, the clipper works before this progress, the scissors after

# Tool look: shaft colour, tip colour, trocar angle (degrees, 0 = from the right, counter-clockwise).
TOOL_STYLE: dict[str, dict] = {
    "Grasper": dict(shaft=(55, 55, 60), tip=(200, 200, 205), angle=40, width=0.055),
    "Bipolar": dict(shaft=(20, 20, 25), tip=(40, 90, 235), angle=160, width=0.045),
    "Hook": dict(shaft=(25, 25, 25), tip=(235, 235, 240), angle=-20, width=0.04),
    "Scissors": dict(shaft=(30, 30, 35), tip=(215, 175, 50), angle=10, width=0.045),
    "Clipper": dict(shaft=(45, 45, 50), tip=(165, 70, 200), angle=-5, width=0.07),
    "Irrigator": dict(shaft=(225, 225, 230), tip=(60, 210, 235), angle=215, width=0.06),
    "SpecimenBag": dict(shaft=(240, 240, 235), tip=(30, 120, 230), angle=-60, width=0.05),
}


@dataclass(frozen=True)
class Style:
    """The look of a world: tissue palette and texture, tool looks, camera behaviour."""

    tissue: tuple[int, int, int]  # base colour of the background texture
    noise_scales: tuple[int, ...]
    vessels: tuple[int, int, int]
    n_vessels: int
    liver: tuple[int, int, int]
    gallbladder: tuple[int, int, int]
    fat: tuple[int, int, int]
    bed: tuple[int, int, int]  # burned liver bed
    duct: tuple[int, int, int]
    artery: tuple[int, int, int]
    blood: tuple[int, int, int]
    fluid: tuple[int, int, int]
    tools: dict[str, dict]
    pan: tuple[float, float, float]  # camera sway amplitudes (world px at 224): slow x, fast x, y
    pan_speed: float  # multiplies the sway frequencies
    zoom: tuple[float, float]  # mean, amplitude
    vignette: tuple[float, float, float]  # 1 - a*r^2 clipped, offset b, radius cut c: clip(b - a r^2) * (r < c)
    exposure: float = 0.0  # amplitude of slow brightness changes (auto exposure)
    vary_shapes: bool = False  # tool shapes drawn per video within each class
    light: tuple[float, float] = (0.0, 0.0)  # light falloff strength across the view and its direction (radians)
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour temperature of the light (per channel gain)
    organs: tuple[float, float] = (1.0, 1.0)  # liver and gallbladder size factors


@dataclass(frozen=True)
class Procedure:
    """How the operation unfolds: phase durations (s, min/max), adjacent phase swaps, tool probabilities."""

    phase_seconds: dict[str, tuple[float, float]]
    tool_prob: dict[str, dict[str, float]]
    swaps: tuple[tuple[str, str, float], ...]


PROCEDURE = Procedure(PHASE_SECONDS, TOOL_PROB, PHASE_SWAPS)


STYLES: dict[str, Style] = {
    "a": Style(tissue=(185, 85, 80), noise_scales=(4, 12, 40), vessels=(120, 30, 40), n_vessels=14,
               liver=(110, 35, 32), gallbladder=(140, 165, 70), fat=(235, 205, 120), bed=(70, 30, 20),
               duct=(235, 220, 160), artery=(200, 40, 45), blood=(150, 0, 10), fluid=(110, 170, 200),
               tools=TOOL_STYLE, pan=(18, 6, 14), pan_speed=1.0, zoom=(1.15, 0.12), vignette=(0.55, 1.25, 1.08)),
    "b": Style(tissue=(215, 140, 115), noise_scales=(6, 20, 64), vessels=(150, 60, 90), n_vessels=30,
               liver=(80, 28, 45), gallbladder=(95, 130, 95), fat=(245, 225, 160), bed=(95, 55, 35),
               duct=(250, 240, 205), artery=(170, 20, 60), blood=(95, 5, 20), fluid=(170, 205, 185),
               tools={
                   "Grasper": dict(shaft=(95, 100, 110), tip=(150, 155, 120), angle=140, width=0.05),
                   "Bipolar": dict(shaft=(60, 45, 30), tip=(70, 170, 120), angle=20, width=0.05),
                   "Hook": dict(shaft=(70, 70, 90), tip=(250, 200, 150), angle=200, width=0.035),
                   "Scissors": dict(shaft=(120, 115, 100), tip=(230, 120, 40), angle=170, width=0.05),
                   "Clipper": dict(shaft=(85, 60, 55), tip=(225, 80, 120), angle=195, width=0.065),
                   "Irrigator": dict(shaft=(185, 175, 120), tip=(160, 230, 255), angle=-30, width=0.05),
                   "SpecimenBag": dict(shaft=(215, 230, 240), tip=(240, 150, 40), angle=120, width=0.05),
               },
               pan=(30, 12, 24), pan_speed=1.8, zoom=(1.45, 0.22), vignette=(0.35, 1.1, 1.2), exposure=0.12,
               vary_shapes=True),
}


STYLE_CHOICES = (*STYLES, "random")


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0)))


def random_look(rng: np.random.Generator) -> Style:
    """A look drawn from wide distributions: tissue and organ colours, texture, vessels, tool colours, trocar
    angles and widths, lighting and tint, camera sway, speed and zoom, vignette, exposure, organ sizes."""
    hue = rng.uniform(-0.06, 0.1)  # reddish to orange tissue
    tissue = _rgb(hue, rng.uniform(0.3, 0.75), rng.uniform(0.55, 0.92))
    coarse = sorted(int(v) for v in (rng.integers(3, 8), rng.integers(9, 26), rng.integers(28, 90)))
    tool_hues = (rng.permutation(7) + rng.uniform(-0.3, 0.3, 7)) / 7 + rng.uniform()
    tools = {}
    for tool, h in zip(CHOLEC80_TOOLS, tool_hues):
        grey = rng.uniform(0.08, 0.85)
        tools[tool] = dict(shaft=_rgb(rng.uniform(), rng.uniform(0, 0.25), grey),
                           tip=_rgb(h, rng.uniform(0.35, 0.95), rng.uniform(0.6, 1.0)),
                           angle=float(rng.uniform(0, 360)), width=float(rng.uniform(0.035, 0.07)))
    return Style(
        tissue=tissue, noise_scales=tuple(coarse), vessels=_rgb(hue + rng.uniform(-0.05, 0.05), 0.7, rng.uniform(0.25, 0.55)),
        n_vessels=int(rng.integers(0, 40)), liver=_rgb(hue + rng.uniform(-0.05, 0.05), rng.uniform(0.5, 0.85), rng.uniform(0.25, 0.5)),
        gallbladder=_rgb(rng.uniform(0.12, 0.5), rng.uniform(0.25, 0.7), rng.uniform(0.4, 0.75)),
        fat=_rgb(rng.uniform(0.09, 0.17), rng.uniform(0.25, 0.65), rng.uniform(0.82, 1.0)),
        bed=_rgb(rng.uniform(0.0, 0.1), rng.uniform(0.5, 0.8), rng.uniform(0.2, 0.4)),
        duct=_rgb(rng.uniform(0.08, 0.2), rng.uniform(0.1, 0.4), rng.uniform(0.85, 1.0)),
        artery=_rgb(rng.uniform(-0.04, 0.03), rng.uniform(0.7, 0.95), rng.uniform(0.6, 0.85)),
        blood=_rgb(rng.uniform(-0.03, 0.02), rng.uniform(0.85, 1.0), rng.uniform(0.3, 0.6)),
        fluid=_rgb(rng.uniform(0.4, 0.6), rng.uniform(0.15, 0.5), rng.uniform(0.7, 0.95)),
        tools=tools, pan=tuple(float(v) for v in rng.uniform((4, 2, 4), (36, 14, 30))),
        pan_speed=float(rng.uniform(0.5, 2.2)), zoom=(float(rng.uniform(1.05, 1.6)), float(rng.uniform(0.03, 0.25))),
        vignette=(float(rng.uniform(0.2, 0.7)), float(rng.uniform(1.0, 1.3)), float(rng.uniform(1.0, 1.3))),
        exposure=float(rng.uniform(0.0, 0.15)), vary_shapes=True,
        light=(float(rng.uniform(0.0, 0.5)), float(rng.uniform(0, 2 * math.pi))),
        tint=tuple(float(v) for v in rng.uniform(0.85, 1.12, 3)), organs=tuple(float(v) for v in rng.uniform(0.75, 1.25, 2)))


def random_procedure(rng: np.random.Generator) -> Procedure:
    """Phase durations scaled per phase, swap probabilities and tool probabilities (with unusual tools joining
    some phases) drawn around Cholec80's; the clipper-before-scissors rule and phase meanings stay."""
    seconds = {p: (lo * f, hi * f * rng.uniform(1.0, 1.4)) for (p, (lo, hi)), f in
               zip(PHASE_SECONDS.items(), rng.uniform(0.45, 1.9, len(PHASE_SECONDS)))}
    probs: dict[str, dict[str, float]] = {}
    for phase, usual in TOOL_PROB.items():
        probs[phase] = {}
        for tool in CHOLEC80_TOOLS:
            base, extra = usual.get(tool, 0.0), rng.random() < 0.15
            if base:
                probs[phase][tool] = float(np.clip(base * rng.uniform(0.6, 1.1), 0.05, 0.97))
            elif extra and tool in ("Grasper", "Hook", "Bipolar", "Irrigator"):
                probs[phase][tool] = float(rng.uniform(0.05, 0.35))
    swaps = (("GallbladderPackaging", "CleaningCoagulation", float(rng.uniform(0.0, 0.7))),
             ("CleaningCoagulation", "GallbladderRetraction", float(rng.uniform(0.0, 0.3))))
    return Procedure(seconds, probs, swaps)


def random_world(seed: int) -> tuple[Style, Procedure]:
    """World ``seed`` of style ``"random"``: the same for every video and lecture made with that seed."""
    rng = np.random.default_rng([seed, 2028])
    return random_look(rng), random_procedure(rng)


def world_for(style: str, seed: int) -> tuple[Style, Procedure]:
    """The look and procedure of ``style`` (``STYLE_CHOICES``) for ``seed``."""
    if style == "random":
        return random_world(seed)
    if style not in STYLES:
        raise ValueError(f"style must be one of {list(STYLE_CHOICES)}, got {style!r}")
    return STYLES[style], PROCEDURE


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scales: Sequence[int] = (4, 12, 40)) -> np.ndarray:
    """Sum of bilinearly upsampled random grids in [0, 1]: a cheap organic texture."""
    acc = np.zeros((h, w), np.float32)
    for k, s in enumerate(scales):
        small = (rng.random((s, s)) * 255).astype(np.uint8)
        up = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR), np.float32) / 255
        acc += up / (k + 1)
    acc -= acc.min()
    return acc / max(acc.max(), 1e-6)


@dataclass
class Timeline:
    """What happens when: phase per frame and tool presence per second."""

    phases: np.ndarray  # (n_frames,) int64, index into CHOLEC80_PHASES
    tools: np.ndarray  # (n_seconds, 7) int64 0/1, presence during second k (annotated at frame 25k)
    fps: int = FPS

    @property
    def n_frames(self) -> int:
        return len(self.phases)


def tool_track(rng: np.random.Generator, phase_names: Sequence[str], progress: Sequence[float],
               tool_prob: dict[str, dict[str, float]] = TOOL_PROB) -> np.ndarray:
    """Tool presence per second ``(n_seconds, 7)`` given each second's phase name and phase progress.

    Each tool is a two-state Markov chain with the phase's stationary probability (``tool_prob``)
    and a mean dwell of about 4 s; at least one tool is always in view.
    """
    tools = np.zeros((len(phase_names), len(CHOLEC80_TOOLS)), np.int64)
    state = np.zeros(len(CHOLEC80_TOOLS), bool)
    for k, (name, prog) in enumerate(zip(phase_names, progress)):
        for tool, ti in T.items():
            p = tool_prob[name].get(tool, 0.0)
            if name == "ClippingCutting" and tool in ("Clipper", "Scissors"):
                p = p if (tool == "Clipper") == (prog < CLIP_TO_CUT) else 0.0
            flip_on, flip_off = min(1.0, p / (1 - p + 1e-9) / 4), 0.25
            state[ti] = (rng.random() >= flip_off) if state[ti] else (rng.random() < flip_on)
            if p == 0.0:
                state[ti] = False
        if not state.any():  # keep the phase's main tool in view
            state[T[max(tool_prob[name], key=tool_prob[name].get)]] = True
        tools[k] = state
    return tools


def make_timeline(rng: np.random.Generator, duration_scale: float = 1.0, fps: int = FPS,
                  procedure: Procedure = PROCEDURE) -> Timeline:
    """Random phase durations in Cholec80 order (adjacent phases of ``procedure.swaps`` trade places
    sometimes) and tool tracks."""
    order = list(CHOLEC80_PHASES)
    for a, b, prob in procedure.swaps:
        i, j = order.index(a), order.index(b)
        if rng.random() < prob and abs(i - j) == 1:
            order[i], order[j] = order[j], order[i]
    lengths = [max(int(round(rng.uniform(*procedure.phase_seconds[p]) * duration_scale * fps)), fps) for p in order]
    phases = np.concatenate([np.full(n, P[p], np.int64) for p, n in zip(order, lengths)])
    n_sec = int(math.ceil(len(phases) / TOOL_STEP))
    starts = {P[p]: s for p, s in zip(order, np.cumsum([0] + lengths[:-1]))}
    sec_phase = [CHOLEC80_PHASES[int(phases[k * TOOL_STEP])] for k in range(n_sec)]
    sec_prog = [(k * TOOL_STEP - starts[P[n]]) / lengths[order.index(n)] for k, n in zip(range(n_sec), sec_phase)]
    tools = tool_track(rng, sec_phase, sec_prog, procedure.tool_prob)
    return Timeline(phases=phases, tools=tools, fps=fps)


@dataclass
class SurgicalWorld:
    """One patient's anatomy and one camera in ``style`` (a name in ``STYLES`` or a drawn ``Style``), rendered
    at ``size`` = (height, width)."""

    rng: np.random.Generator
    size: tuple[int, int] = (224, 224)
    style: str | Style = "a"
    _tex: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.style, Style) and self.style not in STYLES:
            raise ValueError(f"style must be one of {sorted(STYLES)}, got {self.style!r}")
        st = self.look = self.style if isinstance(self.style, Style) else STYLES[self.style]
        rng, (h, w) = self.rng, self.size
        self.H, self.W = 2 * h, 2 * w  # world canvas, camera looks at part of it
        n = _smooth_noise(rng, self.H, self.W, st.noise_scales)
        base = np.array(st.tissue, np.float32) * rng.uniform(0.85, 1.1)
        tint = rng.uniform(-12, 12, 3)
        tex = base[None, None] * (0.7 + 0.5 * n[..., None]) + tint
        # thin dark vessels
        img = Image.fromarray(np.clip(tex, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(st.n_vessels):
            x, y = rng.uniform(0, self.W), rng.uniform(0, self.H)
            pts = [(x, y)]
            for _ in range(6):
                x, y = x + rng.uniform(-30, 30) * w / 224, y + rng.uniform(-30, 30) * h / 224
                pts.append((x, y))
            d.line(pts, fill=st.vessels, width=max(1, w // 110))
        self._tex = np.asarray(img.filter(ImageFilter.GaussianBlur(1)))
        s = w / 224
        self.s = s
        cx, cy = self.W / 2 + rng.uniform(-15, 15) * s, self.H / 2 + rng.uniform(-10, 10) * s
        lv, g = st.organs
        self.liver = (cx, cy - 60 * s, 190 * s * lv, 75 * s * lv)  # ellipse centre/radii (world px)
        self.gb = (cx + rng.uniform(-10, 10) * s, cy + 5 * s, 62 * s * g, 26 * s * g, rng.uniform(-0.5, -0.2))
        self.liver_col = tuple(int(c) for c in np.array(st.liver) * rng.uniform(0.85, 1.15))
        self.gb_col = tuple(int(c) for c in np.array(st.gallbladder) * rng.uniform(0.9, 1.1))
        self.cam_phase = rng.uniform(0, 2 * math.pi, 4)
        self.tool_angle = {k: math.radians(v["angle"] + rng.uniform(-12, 12)) for k, v in st.tools.items()}
        self.tool_phase = {k: rng.uniform(0, 2 * math.pi, 3) for k in st.tools}
        yy, xx = np.mgrid[0:h, 0:w]
        r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
        a, b, c = st.vignette
        self._vignette = np.clip(b - a * r ** 2, 0, 1) * (r < c)
        self._light = None  # uneven light (falloff from one side) and its colour, for drawn looks
        if st.light[0] or st.tint != (1.0, 1.0, 1.0):
            ramp = ((xx - w / 2) / w * math.cos(st.light[1]) + (yy - h / 2) / h * math.sin(st.light[1]))
            self._light = ((1 - st.light[0] * ramp)[..., None] * np.array(st.tint)).astype(np.float32)
        # tool shape within its class: jaw length, jaw width, opening, blade curve, hook bend (1 = style a's)
        self.shape = {k: dict(length=1.0, jaw=1.0, opening=1.0, curve=1.0, bend=1.0, fenestrated=True)
                      for k in st.tools}
        if st.vary_shapes:
            for k in st.tools:
                self.shape[k] = dict(length=rng.uniform(0.7, 1.5), jaw=rng.uniform(0.6, 1.5), opening=rng.uniform(0.5, 1.4),
                                     curve=rng.uniform(-2.0, 3.0), bend=rng.uniform(0.4, 1.6),
                                     fenestrated=bool(rng.random() < 0.5))
            self.exposure_phase = rng.uniform(0, 2 * math.pi)

    # ---- geometry -----------------------------------------------------------------------
    def _camera(self, t: float, focus: tuple[float, float]) -> tuple[float, float, float]:
        a, st = self.cam_phase, self.look
        px, pf, py = (v * self.s for v in st.pan)
        k = st.pan_speed
        cx = focus[0] + px * math.sin(0.21 * k * t + a[0]) + pf * math.sin(0.9 * k * t + a[1])
        cy = focus[1] + py * math.sin(0.17 * k * t + a[2])
        zoom = st.zoom[0] + st.zoom[1] * math.sin(0.13 * k * t + a[3])
        return cx, cy, zoom

    def _ellipse(self, cx, cy, rx, ry, rot=0.0, n=40) -> list[tuple[float, float]]:
        th = np.linspace(0, 2 * math.pi, n, endpoint=False)
        x, y = rx * np.cos(th), ry * np.sin(th)
        c, s = math.cos(rot), math.sin(rot)
        return list(zip(cx + c * x - s * y, cy + s * x + c * y))

    # ---- rendering ----------------------------------------------------------------------
    def render(self, t: float, phase: int, progress: float, tools: Sequence[int] | np.ndarray) -> np.ndarray:
        """The frame at time ``t`` (s) in ``phase`` (index) at ``progress`` in [0, 1] with ``tools`` visible."""
        h, w = self.size
        s = self.s
        name = CHOLEC80_PHASES[phase]
        gx, gy, grx, gry, grot = self.gb
        neck = (gx - math.cos(grot) * grx * 0.9, gy - math.sin(grot) * grx * 0.9)
        focus = {"Preparation": (gx, gy - 10 * s), "CalotTriangleDissection": neck, "ClippingCutting": neck,
                 "GallbladderDissection": (gx, gy - 15 * s)}.get(name, (gx, gy - 25 * s))
        cx, cy, zoom = self._camera(t, focus)
        # world canvas -> camera: crop a window around (cx, cy) of size (w, h)/zoom and scale it up.
        vw, vh = w / zoom, h / zoom
        x0, y0 = min(max(cx - vw / 2, 0), self.W - vw), min(max(cy - vh / 2, 0), self.H - vh)
        img = Image.fromarray(self._tex).resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + vw, y0 + vh))
        d = ImageDraw.Draw(img)

        def sc(pts):  # world -> screen
            return [((x - x0) * zoom, (y - y0) * zoom) for x, y in pts]

        lx, ly, lrx, lry = self.liver
        d.polygon(sc(self._ellipse(lx, ly, lrx, lry)), fill=self.liver_col)
        order = CHOLEC80_PHASES.index(name)
        # burned liver bed: grows through gallbladder dissection, stays afterwards
        bed = progress if name == "GallbladderDissection" else (1.0 if order > P["GallbladderDissection"] else 0.0)
        if bed > 0:
            d.polygon(sc(self._ellipse(gx, gy - 8 * s, grx * (0.3 + 0.8 * bed), gry * 0.9, grot)), fill=self.look.bed)
            for k in range(int(6 * bed)):
                a = self.tool_phase["Hook"][0] + k
                d.ellipse(self._box(sc([(gx + grx * 0.6 * math.cos(a), gy - 8 * s + gry * 0.5 * math.sin(a))])[0], 3 * s * zoom),
                          fill=(25, 15, 10))
        # cystic duct (pale) and artery (red) from the neck down-left; exposed during Calot dissection
        duct_end = (neck[0] - 55 * s, neck[1] + 70 * s)
        art_end = (neck[0] - 25 * s, neck[1] + 78 * s)
        show_structures = order >= P["CalotTriangleDissection"] and order <= P["GallbladderDissection"]
        cut = order > P["ClippingCutting"] or (name == "ClippingCutting" and progress > CLIP_TO_CUT + 0.1)
        if show_structures or order > P["GallbladderDissection"]:
            for end, col, wid in ((duct_end, self.look.duct, 9), (art_end, self.look.artery, 6)):
                a, b = sc([neck, end])
                if cut:
                    mid = (a[0] + 0.45 * (b[0] - a[0]), a[1] + 0.45 * (b[1] - a[1]))
                    mid2 = (a[0] + 0.6 * (b[0] - a[0]), a[1] + 0.6 * (b[1] - a[1]))
                    if order <= P["GallbladderDissection"]:
                        d.line([a, mid], fill=col, width=int(wid * s * zoom))
                    d.line([mid2, b], fill=col, width=int(wid * s * zoom))
                else:
                    d.line([a, b], fill=col, width=int(wid * s * zoom))
                n_clips = 0 if order < P["ClippingCutting"] else (3 if order > P["ClippingCutting"] else int(min(progress / CLIP_TO_CUT, 1) * 3.99))
                for k in range(n_clips):
                    f = (0.32, 0.64, 0.74)[k]
                    if cut and f < 0.5 and order > P["GallbladderDissection"]:
                        continue
                    p = (a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]))
                    r = 5 * s * zoom
                    d.rectangle([p[0] - r, p[1] - r / 2.5, p[0] + r, p[1] + r / 2.5], fill=(235, 235, 245), outline=(90, 90, 100))
        # gallbladder: attached until dissection ends, then in the bag
        if order <= P["GallbladderDissection"]:
            lift = (progress * 25 * s) if name == "GallbladderDissection" else 0.0
            d.polygon(sc(self._ellipse(gx + lift * 0.5, gy + lift, grx, gry, grot)), fill=self.gb_col)
            d.polygon(sc(self._ellipse(gx + lift * 0.5 + grx * 0.2, gy + lift - gry * 0.3, grx * 0.45, gry * 0.25, grot)),
                      fill=tuple(min(255, c + 45) for c in self.gb_col))
        # fat over the triangle: full in preparation, removed through Calot dissection
        fat = 1.0 if order == P["Preparation"] else (1 - progress if name == "CalotTriangleDissection" else 0.0)
        if fat > 0:
            rng = np.random.default_rng(int(self.tool_phase["Grasper"][0] * 1000))
            for k in range(int(round(9 * fat))):
                fx = neck[0] - rng.uniform(5, 50) * s
                fy = neck[1] + rng.uniform(0, 65) * s
                d.polygon(sc(self._ellipse(fx, fy, rng.uniform(12, 22) * s, rng.uniform(8, 14) * s, rng.uniform(0, 3))),
                          fill=self.look.fat)
        if name == "GallbladderPackaging" and "SpecimenBag" not in [CHOLEC80_TOOLS[i] for i in np.flatnonzero(np.asarray(tools))]:
            # the detached gallbladder lies free on the liver until it goes into the bag
            d.polygon(sc(self._ellipse(gx + 20 * s, gy + 30 * s, grx * 0.8, gry * 1.1, grot + 0.6)), fill=self.gb_col)
        if name == "GallbladderRetraction":  # the umbilical trocar port the bag leaves through
            port = sc([(gx + 40 * s, gy + 30 * s)])[0]
            d.ellipse(self._box(port, 26 * s * zoom), fill=(150, 150, 155))
            d.ellipse(self._box(port, 18 * s * zoom), fill=(15, 15, 20))
        if name == "CleaningCoagulation":
            for k in range(4):
                a = self.cam_phase[k] * 3
                d.ellipse(self._box(sc([(gx + 40 * s * math.cos(a), gy + 25 * s * math.sin(a))])[0], (9 + 4 * (1 - progress)) * s * zoom),
                          fill=self.look.blood)
        present = [CHOLEC80_TOOLS[i] for i in np.flatnonzero(np.asarray(tools))]
        if "SpecimenBag" in present:
            self._draw_bag(d, t, name, progress, (w, h))
        if "Irrigator" in present:  # pooled irrigation fluid
            d.ellipse(self._box((w * 0.45, h * 0.62), 22 * s), fill=self.look.fluid)
        for tool in ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator"):
            if tool in present:
                self._draw_tool(d, tool, t, (w, h), sc([focus])[0])
        frame = np.asarray(img, np.float32)
        if "Hook" in present and name in ("CalotTriangleDissection", "GallbladderDissection"):
            haze = 0.18 + 0.1 * math.sin(1.7 * t)
            frame = frame * (1 - haze) + 215 * haze
        if self.look.exposure:
            frame *= 1 + self.look.exposure * math.sin(0.23 * t + self.exposure_phase)
        if self._light is not None:
            frame *= self._light
        frame *= self._vignette[..., None]
        return np.clip(frame, 0, 255).astype(np.uint8)

    @staticmethod
    def _box(c: tuple[float, float], r: float) -> list[float]:
        return [c[0] - r, c[1] - r, c[0] + r, c[1] + r]

    def _draw_bag(self, d: ImageDraw.ImageDraw, t: float, phase: str, progress: float, wh) -> None:
        w, h = wh
        s = self.s
        if phase == "GallbladderRetraction":  # bag pulled towards the trocar, out of view
            bx, by = w * (0.5 + 0.35 * progress), h * (0.55 + 0.35 * progress)
        else:
            bx, by = w * 0.55 + 6 * s * math.sin(t), h * 0.6
        r = 34 * s
        d.polygon(self._ellipse(bx, by, r * 1.1, r * 0.8, 0.3), fill=self.look.tools["SpecimenBag"]["shaft"], outline=(180, 180, 175))
        if phase == "GallbladderPackaging" and progress < 0.8:  # gallbladder going into the bag
            d.polygon(self._ellipse(bx - r * (1 - progress), by - r * 0.6, 22 * s, 11 * s, -0.3), fill=self.gb_col)
        d.line([(bx - r, by - r * 0.55), (bx + r, by - r * 0.55)], fill=self.look.tools["SpecimenBag"]["tip"], width=max(2, int(5 * s)))
        # the bag's string runs to the trocar
        ang = self.tool_angle["SpecimenBag"]
        d.line([(bx + r * 0.8, by - r * 0.5), (w / 2 + w * math.cos(ang), h / 2 - h * math.sin(ang))],
               fill=self.look.tools["SpecimenBag"]["tip"], width=max(1, int(2 * s)))

    def _draw_tool(self, d: ImageDraw.ImageDraw, tool: str, t: float, wh, focus) -> None:
        w, h = wh
        st, shape = self.look.tools[tool], self.shape[tool]
        ang = self.tool_angle[tool]
        ph = self.tool_phase[tool]
        # trocar outside the frame; tip near the focus, moving
        tx = min(max(focus[0], 0.25 * w), 0.75 * w) + 0.12 * w * math.sin(0.7 * t + ph[0]) + 0.12 * w * math.cos(ang)
        ty = min(max(focus[1], 0.25 * h), 0.75 * h) + 0.1 * h * math.sin(0.5 * t + ph[1]) - 0.12 * h * math.sin(ang)
        ox, oy = w / 2 + 1.2 * w * math.cos(ang), h / 2 - 1.2 * h * math.sin(ang)
        sw = max(3, int(st["width"] * w))
        d.line([(ox, oy), (tx, ty)], fill=st["shaft"], width=sw)
        ux, uy = tx - ox, ty - oy
        norm = math.hypot(ux, uy) or 1.0
        ux, uy = ux / norm, uy / norm  # pointing towards the tip
        nx, ny = -uy, ux
        L = 0.09 * w * shape["length"]
        tip = st["tip"]
        if tool in ("Grasper", "Bipolar", "Scissors", "Clipper"):
            opening = (0.35 + 0.25 * math.sin(2.1 * t + ph[2])) * (0.6 if tool == "Bipolar" else 1.0) * shape["opening"]
            jaw_w = max(2, int(sw * (0.45 if tool != "Clipper" else 0.7) * shape["jaw"]))
            for sgn in (1, -1):
                ex = tx + L * (ux * math.cos(opening) + sgn * nx * math.sin(opening))
                ey = ty + L * (uy * math.cos(opening) + sgn * ny * math.sin(opening))
                if tool == "Scissors":  # curved blades: two segments
                    c = shape["curve"]
                    mx, my = (tx + ex) / 2 + sgn * nx * 2 * c, (ty + ey) / 2 + sgn * ny * 2 * c
                    d.line([(tx, ty), (mx, my), (ex + nx * 4 * c, ey + ny * 4 * c)], fill=tip, width=jaw_w, joint="curve")
                else:
                    d.line([(tx, ty), (ex, ey)], fill=tip, width=jaw_w)
            if tool == "Grasper" and shape["fenestrated"]:  # fenestrated jaws: dark windows
                d.ellipse(self._box((tx + ux * L * 0.55, ty + uy * L * 0.55), sw * 0.2), fill=(40, 40, 45))
            if tool == "Clipper":  # a clip loaded between the jaws and a coloured collar
                d.line([(tx + ux * L * 0.5 - nx * 4, ty + uy * L * 0.5 - ny * 4), (tx + ux * L * 0.5 + nx * 4, ty + uy * L * 0.5 + ny * 4)],
                       fill=(240, 240, 250), width=max(2, sw // 3))
                d.line([(tx - ux * L * 0.6, ty - uy * L * 0.6), (tx - ux * L * 0.2, ty - uy * L * 0.2)], fill=tip, width=sw + 2)
            if tool == "Bipolar":
                d.line([(tx - ux * L * 0.5, ty - uy * L * 0.5), (tx, ty)], fill=tip, width=sw)
        elif tool == "Hook":  # L-shaped electrode
            ex, ey = tx + ux * L * 0.7, ty + uy * L * 0.7
            b = 0.4 * shape["bend"]
            d.line([(tx, ty), (ex, ey), (ex + nx * L * b, ey + ny * L * b)], fill=tip, width=max(2, sw // 2), joint="curve")
        elif tool == "Irrigator":  # open tube with a water jet
            ex, ey = tx + ux * L * 0.4, ty + uy * L * 0.4
            d.line([(tx, ty), (ex, ey)], fill=st["shaft"], width=sw)
            for k in range(5):
                f = 1.0 + 0.35 * k
                jx, jy = tx + ux * L * f, ty + uy * L * f
                d.ellipse(self._box((jx + nx * 3 * math.sin(5 * t + k), jy + ny * 3 * math.sin(5 * t + k)), sw * 0.35), fill=tip)


def render_video_frames(world: SurgicalWorld, timeline: Timeline):
    """Yield the frames of ``timeline`` one by one (uint8 HWC)."""
    starts = {}
    for f in range(timeline.n_frames):
        p = int(timeline.phases[f])
        if p not in starts:
            idx = np.flatnonzero(timeline.phases == p)
            starts[p] = (idx[0], len(idx))
        s0, n = starts[p]
        yield world.render(f / timeline.fps, p, (f - s0) / n, timeline.tools[f // TOOL_STEP])


def write_annotations(root: Path, name: str, timeline: Timeline) -> None:
    """Cholec80 phase (every frame, names) and tool (every 25th frame, 0/1) files."""
    lines = ["Frame\tPhase"] + [f"{f}\t{CHOLEC80_PHASES[p]}" for f, p in enumerate(timeline.phases.tolist())]
    atomic_write_text(root / "phase_annotations" / f"{name}-phase.txt", "\n".join(lines) + "\n")
    rows = ["Frame\t" + "\t".join(CHOLEC80_TOOLS)]
    for k in range(int(math.ceil(timeline.n_frames / TOOL_STEP))):
        rows.append(f"{k * TOOL_STEP}\t" + "\t".join(str(int(v)) for v in timeline.tools[k]))
    atomic_write_text(root / "tool_annotations" / f"{name}-tool.txt", "\n".join(rows) + "\n")


def synthesize_video(root: str | Path, video_id: int, seed: int, size: tuple[int, int] = (224, 224),
                     duration_scale: float = 1.0, crf: int = 23, style: str = "a") -> dict:
    """Write ``videos/videoNN.mp4`` and its annotations under ``root`` in ``style`` (``STYLE_CHOICES``; with
    ``"random"`` the world is ``random_world(seed)``); returns a summary row."""
    root = Path(root)
    name = f"video{video_id:02d}"
    look, procedure = world_for(style, seed)
    rng = np.random.default_rng([seed, video_id])
    timeline = make_timeline(rng, duration_scale=duration_scale, procedure=procedure)
    world = SurgicalWorld(rng, size=tuple(size), style=look)
    n = write_video(root / "videos" / f"{name}.mp4", render_video_frames(world, timeline), FPS, crf=crf, gop=2 * FPS)
    write_annotations(root, name, timeline)
    return {"video": name, "frames": n, "seconds": n / FPS}
