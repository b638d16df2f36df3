"""Frozen-backbone feature caches: frame features computed once, memory-mapped afterwards.

With the frame backbone frozen, its output for a clip never changes, so a training run decodes
and encodes each clip once and then trains the temporal module, projections and attention on the
cached ``[T, F]`` features. That is what makes a useful run fit a 2-core CPU.

Layout of a cache folder::

    features.npy   float16 [N, T, F]   (np.load(..., mmap_mode="r"))
    mask.npy       bool    [N, T]      True = a real frame
    keys.json      ["<video_key or clip id>", ...]   row order
    meta.json      {"fingerprint": {...}, "n": N, "t": T, "f": F}   written last: marks a complete cache

While building, ``features.partial.npy``, ``mask.partial.npy`` and ``done.partial.npy`` (one flag per
row) are memory-mapped and flushed after every backbone call, and ``progress.json`` (fingerprint, size,
keys digest) is written once: a killed build resumes with the rows not yet done, and the bookkeeping
does not grow with the corpus. A cache whose fingerprint (backbone, preprocessing, data) differs is
rebuilt. Datasets that can decode video by video (``iter_clips``, e.g. lecture pairs) are read that
way: each video opened once and decoded front to back.
The text tower's features are cached in memory by :class:`TextFeatureCache` (locked text, LiT).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, get_worker_info

from medvid.errors import MedvidError
from medvid.utils import atomic_write_text

log = logging.getLogger("medvid")

_PARTIAL = ("features.partial.npy", "mask.partial.npy", "done.partial.npy")  # a build under way
# Frames per backbone call in cache_clips: a call's activations grow with its frames (EfficientNet-Lite0 at 224:
# ~7 MB a frame), so 8 echo clips of 17 frames in one call peaked at 3.3 GB; see docs/training.md.
FRAME_CHUNK = 32

class FeatureCache:
    """Read side: ``cache[key] -> (features [T, F] float32 tensor, mask [T] bool tensor)``."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        meta_path = self.dir / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no complete feature cache in {self.dir} (meta.json missing)")
        self.meta = json.loads(meta_path.read_text())
        self.features = np.load(self.dir / "features.npy", mmap_mode="r")
        self.mask = np.load(self.dir / "mask.npy")
        self.keys: list[str] = json.loads((self.dir / "keys.json").read_text())
        self.index = {k: i for i, k in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[-1])

    def __getitem__(self, key: str) -> tuple[Tensor, Tensor]:
        i = self.index[key]
        return torch.from_numpy(np.asarray(self.features[i], dtype=np.float32)), torch.from_numpy(self.mask[i].copy())


def _matches(directory: Path, fingerprint: dict[str, Any]) -> bool:
    meta = directory / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("fingerprint") == fingerprint


def _is_cache(directory: Path) -> bool:
    """True when ``directory`` is a (complete or interrupted) medvid feature cache: its own markers only."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if isinstance(meta, dict) and "fingerprint" in meta:
            return True
    except (OSError, ValueError):
        pass
    return any((directory / name).is_file() for name in ("progress.json", *_PARTIAL))


ClipStream = Callable[[Sequence[int]], Iterable[tuple[int, Tensor, Tensor | None]]]
"""Rows still to encode -> ``(row, clip [3,T,H,W], frame_mask [T] or None)`` for each, in any order."""


def dataset_clips(dataset: Dataset, clip_fn: Callable[[Any], tuple[Tensor, Tensor | None]], *,
                  num_workers: int = 0, batch_size: int = 8) -> ClipStream:
    """A :data:`ClipStream` over a map-style dataset: item ``row`` through ``clip_fn`` (-> clip, frame mask),
    loaded by a ``DataLoader`` (``num_workers`` processes)."""

    def stream(rows: Sequence[int]) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        loader = DataLoader(Subset(dataset, list(rows)), batch_size=batch_size, num_workers=num_workers,
                            collate_fn=_collate)
        items = (item for batch in loader for item in batch)
        for row, item in zip(rows, items):
            yield (row, *clip_fn(item))

    return stream


class _Sharded(IterableDataset):
    """``dataset.iter_clips(rows, shard=(worker, workers))`` as an iterable each loader worker takes a share of."""

    def __init__(self, dataset: Any, rows: Sequence[int]):
        self.dataset, self.rows = dataset, list(rows)

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        info = get_worker_info()
        shard = (0, 1) if info is None else (info.id, info.num_workers)
        return self.dataset.iter_clips(self.rows, shard=shard)


def ordered_clips(dataset: Any, *, num_workers: int = 0) -> ClipStream:
    """A :data:`ClipStream` over a dataset with ``iter_clips(rows, shard)`` (each video decoded once, in order,
    e.g. :meth:`~medvid.datasets.lectures.LecturePairDataset.iter_clips`); workers take whole videos."""

    def stream(rows: Sequence[int]) -> Iterator[tuple[int, Tensor, Tensor | None]]:
        if num_workers == 0:
            items: Iterable = dataset.iter_clips(rows)
        else:
            items = DataLoader(_Sharded(dataset, rows), batch_size=None, num_workers=num_workers)
        for row, clip in items:
            yield int(row), clip, None

    return stream


def _collate(items: list) -> list:
    return items


@torch.inference_mode()
def build_feature_cache(
    encode_frames: Callable[[Tensor], Tensor],
    keys: Sequence[str],
    clips: ClipStream,
    directory: str | Path,
    fingerprint: dict[str, Any],
    *,
    n_frames: int,
    feature_dim: int,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> FeatureCache:
    """Encode the clip of every row (``keys[row]`` names it; ``clips`` streams them) once and write the
    cache; returns it. Reuses a complete cache with the same ``fingerprint``.

    ``batch_size`` clips go through ``encode_frames`` per call. Progress lives in memory-mapped files
    (features, frame masks, a done flag per row) flushed after every call, and ``progress.json``
    (fingerprint, size, keys digest) is written once, so bookkeeping stays O(batch) however large the
    corpus; a killed build resumes with the rows not yet flagged done.
    """
    out = Path(directory)
    fingerprint = json.loads(json.dumps(fingerprint, default=str))
    if _matches(out, fingerprint):
        return FeatureCache(out)
    if out.is_dir() and any(out.iterdir()) and not _is_cache(out):
        raise MedvidError(f"refusing to write a feature cache into {out}: it holds files that are not a medvid "
                          "feature cache; choose another cache_dir")
    keys = list(keys)
    if len(set(keys)) != len(keys):
        raise ValueError("feature cache keys are not unique")
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # ours (checked above): stale until this build completes
    n = len(keys)
    state = {"fingerprint": fingerprint, "n": n, "t": n_frames, "f": feature_dim,
             "keys": hashlib.sha1("\n".join(keys).encode()).hexdigest()}
    progress_path = out / "progress.json"
    paths = [out / name for name in _PARTIAL]
    resume = (progress_path.is_file() and all(p.is_file() for p in paths)
              and json.loads(progress_path.read_text()) == state)
    mode = "r+" if resume else "w+"
    feats, masks, done = (np.lib.format.open_memmap(p, mode=mode, dtype=dt, shape=shape) for p, dt, shape in zip(
        paths, (np.float16, np.bool_, np.bool_), ((n, n_frames, feature_dim), (n, n_frames), (n,))))
    if not resume:
        atomic_write_text(progress_path, json.dumps(state))
    todo = np.flatnonzero(~done).tolist()
    if resume:
        log.info("resuming feature cache at %d/%d clips", n - len(todo), n)
    bar = None
    if progress:
        from medvid.utils import progress

        bar = progress(total=n, initial=n - len(todo), unit="clip", desc="frame features")

    def flush(batch: list[tuple[int, Tensor, Tensor | None]]) -> None:
        frames, owners, slots = [], [], []
        rows = [row for row, _, _ in batch]
        block_mask = np.zeros((len(batch), n_frames), dtype=bool)
        for j, (row, clip, fmask) in enumerate(batch):
            t = clip.shape[1]
            if t > n_frames:
                raise ValueError(f"clip '{keys[row]}' has {t} frames, more than the cache's n_frames={n_frames}")
            m = torch.ones(t, dtype=torch.bool) if fmask is None else fmask.to(torch.bool)
            valid = torch.nonzero(m).flatten()
            frames.append(clip[:, valid].permute(1, 0, 2, 3))
            owners += [j] * len(valid)
            slots += valid.tolist()
            block_mask[j, valid.numpy()] = True
        enc = encode_frames(torch.cat(frames).to(device)).float().cpu().numpy().astype(np.float16)
        block = np.zeros((len(batch), n_frames, feature_dim), dtype=np.float16)
        block[owners, slots] = enc
        feats[rows], masks[rows] = block, block_mask
        feats.flush()
        masks.flush()
        done[rows] = True  # flagged only once the rows' features are on disk
        done.flush()
        if bar is not None:
            bar.update(len(batch))

    batch: list[tuple[int, Tensor, Tensor | None]] = []
    for item in clips(todo):
        batch.append(item)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if bar is not None:
        bar.close()
    if not done.all():
        raise RuntimeError(f"the clip stream left {int((~done).sum())} of {n} rows unencoded")
    del feats, masks, done
    atomic_write_text(out / "keys.json", json.dumps(keys))
    for p, name in zip(paths, ("features.npy", "mask.npy")):
        p.replace(out / name)
    paths[2].unlink()
    progress_path.unlink()
    atomic_write_text(out / "meta.json", json.dumps(
        {"fingerprint": fingerprint, "n": n, "t": n_frames, "f": feature_dim}, indent=1))
    return FeatureCache(out)


class TextFeatureCache:
    """Pooled text-tower features of a fixed set of strings, computed once (frozen text transformer).

    ``encode`` maps a batch of strings to ``[N, F]`` features (e.g. ``model.text`` on tokens).
    """

    def __init__(self, encode: Callable[[Sequence[str]], Tensor], texts: Sequence[str], batch_size: int = 64):
        unique = sorted(set(texts))
        self.index = {t: i for i, t in enumerate(unique)}
        chunks = [encode(unique[i:i + batch_size]).float().cpu() for i in range(0, len(unique), batch_size)]
        self.features = torch.cat(chunks) if chunks else torch.zeros(0, 0)

    def __call__(self, texts: Sequence[str]) -> Tensor:
        return self.features[[self.index[t] for t in texts]]

    def __contains__(self, text: str) -> bool:
        return text in self.index


def module_digest(module: torch.nn.Module) -> str:
    """Short hash of a module's weights (a cache built with other weights is stale)."""
    h = hashlib.sha1()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_clips(backbone: torch.nn.Module, feature_dim: int, dataset: Dataset, keys: Sequence[str],
                directory: str | Path, fingerprint: dict[str, Any], *, n_frames: int, batch_size: int = 8,
                num_workers: int = 0, device: torch.device | str = "cpu", progress: bool = True) -> FeatureCache:
    """Frame features of every clip of ``dataset`` (items with ``"video"``; ``keys[i]`` names item ``i``)
    under a frozen ``backbone`` (``[N,3,H,W] -> [N,F]``). Under ``torchrun`` rank 0 builds, the
    others wait; the fingerprint covers the backbone's weights and the key list. The backbone sees at most
    ``FRAME_CHUNK`` frames per call, however many ``batch_size`` clips hold (memory stays bounded)."""
    from medvid.training.distributed import barrier, rank

    fingerprint = {**fingerprint, "backbone": module_digest(backbone), "n_frames": n_frames,
                   "keys": hashlib.sha1("\n".join(keys).encode()).hexdigest()}
    if rank() == 0:
        backbone.to(device).eval()
        if hasattr(dataset, "iter_clips"):
            clips = ordered_clips(dataset, num_workers=num_workers)
        else:
            clips = dataset_clips(dataset, lambda item: (item["video"], None), num_workers=num_workers,
                                  batch_size=batch_size)
        # channels-last convolutions are ~1.3x faster on CPU (oneDNN); the weights go back afterwards
        backbone.to(memory_format=torch.channels_last)

        def encode(frames: Tensor) -> Tensor:
            return torch.cat([backbone(c.contiguous(memory_format=torch.channels_last))
                              for c in frames.split(FRAME_CHUNK)])

        try:
            build_feature_cache(encode, keys, clips, directory, fingerprint, n_frames=n_frames,
                                feature_dim=feature_dim, batch_size=batch_size, device=device, progress=progress)
        finally:
            backbone.to(memory_format=torch.contiguous_format)
    barrier()
    return FeatureCache(directory)
