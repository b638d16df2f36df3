"""The typed input contract of a model (``PretrainedCfg``) and the clip sampling it is fed (``Sampling``).

``PretrainedCfg`` is what timm calls ``pretrained_cfg``: the input a model's weights expect (frame size,
crop, zoom, per-channel mean/std on the 0–255 scale, channel order, resize) and, once a medvid job has
trained it, the sampling it was trained on (frames per clip, frame rate or native stride, sector mask,
short-loop rule, motion image). It travels with the weights as the ``pretrained_cfg`` object of a model
folder's ``config.json``; ``to_dict``/``from_dict`` read and write that JSON unchanged, keys this version
does not know included (kept in ``extra`` and written back as they were, never an error).

``Sampling`` is the value object the data sets take: which frames a clip holds and how they are masked.
``Sampling.recorded(cfg, ...)`` is a model's own sampling with the settings a job gives over it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional

from medvid.transforms.clip import MOTIONS, PRESETS, motion_frames

MASKS = ("fan", "box", "pixels", "none")  # sector masking: medvid.datasets.echo.load_clip
SHORT_CLIPS = ("wrap", "zero_pad_after_norm")  # a loop shorter than the clip: repeat it, or zeros (EchoPrime)
CHANNEL_ORDERS = ("RGB", "BGR")


def _floats(values: Any) -> Optional[tuple[float, ...]]:
    return None if values is None else tuple(float(v) for v in values)


@dataclass(frozen=True)
class PretrainedCfg:
    """A model's input contract; every field is optional (None = not recorded).

    Preprocessing: ``input_size``, ``crop`` (``center_square`` | ``none``), ``zoom``, ``mean``/``std`` (0–255),
    ``channel_order`` (``RGB`` | ``BGR``), ``interpolation``, ``preset`` (a publisher's exact pipeline, e.g.
    ``echoprime``), ``scale`` and ``layout`` (descriptive). Sampling as trained: ``num_frames``, ``fps`` or
    ``frame_stride``, ``mask``, ``short_clip``, ``motion``. Notes a publisher's contract carries:
    ``reference_crop``, ``output``, ``max_text_length``. ``extra``: keys this version does not know.
    """

    input_size: Optional[int] = None
    num_frames: Optional[int] = None
    fps: Optional[float] = None
    frame_stride: Optional[int] = None
    crop: Optional[str] = None
    zoom: Optional[float] = None
    reference_crop: Optional[str] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    scale: Optional[str] = None
    layout: Optional[str] = None
    channel_order: Optional[str] = None
    interpolation: Optional[str] = None
    short_clip: Optional[str] = None
    preset: Optional[str] = None
    mask: Optional[str] = None
    motion: Optional[str] = None
    output: Optional[str] = None
    max_text_length: Optional[int] = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean))
        object.__setattr__(self, "std", _floats(self.std))
        object.__setattr__(self, "extra", dict(self.extra))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "PretrainedCfg":
        """The contract as ``config.json`` stores it; unknown keys go to ``extra`` (kept, never an error)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        data = dict(data or {})
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The JSON ``config.json`` stores: recorded fields only (a recorded training sampling — ``mask`` set —
        keeps both ``fps`` and ``frame_stride``, one of them null, as it always has), then ``extra``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                continue
            if value is None and not (f.name in ("fps", "frame_stride") and self.mask is not None):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return {**out, **self.extra}

    def with_training_sampling(self, sampling: "Sampling", channel_order: str = "RGB") -> "PretrainedCfg":
        """This contract with the sampling a training job used (frames, frame rate or native stride, mask,
        motion image) and the channel order it fed; crop/size/normalisation stay what training took from it."""
        from dataclasses import replace

        return replace(self, num_frames=int(sampling.num_frames),
                       fps=None if sampling.fps is None else float(sampling.fps),
                       frame_stride=None if sampling.fps is not None else sampling.frame_stride,
                       mask=sampling.mask, channel_order=channel_order, motion=sampling.motion)


@dataclass(frozen=True)
class Sampling:
    """Which frames a clip holds and how they are masked.

    ``num_frames`` frames at ``fps`` (seconds-based, so 30 and 60 fps loops give clips of equal duration)
    or, with ``fps`` None, every ``frame_stride``-th native frame (None = every frame); ``mask`` the sector
    masking (``MASKS``); ``short_clip`` how a loop shorter than the clip is filled (``SHORT_CLIPS``);
    ``motion`` a motion image appended as one extra last frame (``MOTIONS``). ``fps`` wins over
    ``frame_stride`` when both are given.
    """

    num_frames: int = 16
    fps: Optional[float] = None
    frame_stride: Optional[int] = None
    mask: str = "fan"
    short_clip: str = "wrap"
    motion: str = "none"

    def __post_init__(self) -> None:
        if int(self.num_frames) < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.mask not in MASKS:
            raise ValueError(f"mask must be one of {MASKS}, got {self.mask!r}")
        if self.short_clip not in SHORT_CLIPS:
            raise ValueError(f"short_clip must be one of {SHORT_CLIPS}, got {self.short_clip!r}")
        if self.motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {self.motion!r}")
        object.__setattr__(self, "num_frames", int(self.num_frames))
        object.__setattr__(self, "fps", float(self.fps) if self.fps else None)
        object.__setattr__(self, "frame_stride",
                           None if self.fps or self.frame_stride is None else int(self.frame_stride))

    @property
    def clip_frames(self) -> int:
        """Frames each clip holds: ``num_frames`` plus the motion image, if any."""
        return self.num_frames + motion_frames(self.motion)

    @classmethod
    def of_preset(cls, name: str) -> "Sampling":
        """The sampling of a published model's preset (``medvid.transforms.clip.PRESETS``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        p = PRESETS[name]
        return cls(p["num_frames"], p["fps"], p["frame_stride"])

    @classmethod
    def recorded(cls, cfg: PretrainedCfg | None, num_frames: int | None = None, fps: float | None = None,
                 frame_stride: int | None = None, mask: str | None = None, short_clip: str | None = None,
                 motion: str | None = None) -> "Sampling":
        """The clips a model is fed: a setting given here wins, else what ``cfg`` recorded, else EchoPrime's
        sampling (16 frames, every 2nd native frame, fan mask, wrap, no motion image)."""
        c = cfg or PretrainedCfg()
        if fps is None and frame_stride is None:
            fps, frame_stride = c.fps, c.frame_stride
            frame_stride = None if fps else int(frame_stride or 2)
        return cls(int(num_frames or c.num_frames or 16), fps, frame_stride, mask or c.mask or "fan",
                   short_clip or c.short_clip or "wrap", motion or c.motion or "none")
