"""Frozen-backbone feature caches: frame features computed once, memory-mapped afterwards.

With the frame backbone frozen, its output for a clip never changes, so a training run decodes
and encodes each clip once and then trains the temporal module, projections and attention on the
cached ``[T, F]`` features. That is what makes a useful run fit a 2-core CPU.

Layout of a cache folder::

    features.npy   float16 [N, T, F]   (np.load(..., mmap_mode="r"))
    mask.npy       bool    [N, T]      True = a real frame
    keys.json      ["<video_key or clip id>", ...]   row order
    meta.json      {"fingerprint": {...}, "n": N, "t": T, "f": F}   written last: marks a complete cache

A build that is killed resumes from its last flushed chunk (``features.partial.npy`` +
``progress.json``); a cache whose fingerprint (backbone, preprocessing, data) differs is rebuilt.
The text tower's features are cached in memory by :class:`TextFeatureCache` (locked text, LiT).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from medvid.errors import MedvidError
from medvid.utils import atomic_path, atomic_write_text

log = logging.getLogger("medvid")

ClipFn = Callable[[Any], tuple[str, Tensor, Tensor | None]]  # item -> (key, clip [3,T,H,W], frame_mask [T])


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
    return (directory / "progress.json").is_file() or (directory / "features.partial.npy").is_file()


def _collate(items: list) -> list:
    return items


@torch.no_grad()
def build_feature_cache(
    encode_frames: Callable[[Tensor], Tensor],
    dataset: Dataset,
    clip_fn: ClipFn,
    directory: str | Path,
    fingerprint: dict[str, Any],
    *,
    n_frames: int,
    feature_dim: int,
    batch_size: int = 8,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> FeatureCache:
    """Encode every item of ``dataset`` once (``clip_fn`` extracts key, clip and frame mask) and
    write the cache; returns it. Reuses a complete cache with the same ``fingerprint``."""
    out = Path(directory)
    fingerprint = json.loads(json.dumps(fingerprint, default=str))
    if _matches(out, fingerprint):
        return FeatureCache(out)
    if out.is_dir() and any(out.iterdir()) and not _is_cache(out):
        raise MedvidError(f"refusing to write a feature cache into {out}: it holds files that are not a medvid "
                          "feature cache; choose another cache_dir")
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # ours (checked above): stale until this build completes
    n = len(dataset)
    partial, progress_path = out / "features.partial.npy", out / "progress.json"
    done, keys, masks = 0, [], np.zeros((n, n_frames), dtype=bool)
    state = json.loads(progress_path.read_text()) if progress_path.is_file() else {}
    if partial.is_file() and state.get("fingerprint") == fingerprint and state.get("n") == n:
        done, keys = int(state["done"]), list(state["keys"])
        masks[:done] = np.asarray(state["mask"], dtype=bool).reshape(-1, n_frames)[:done]
        feats = np.lib.format.open_memmap(partial, mode="r+")
        log.info("resuming feature cache at %d/%d clips", done, n)
    else:
        feats = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(n, n_frames, feature_dim))
    loader = DataLoader(Subset(dataset, range(done, n)), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_collate)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=done, unit="clip", desc="frame features")
    for items in loader:
        rows = [clip_fn(item) for item in items]
        frames, owners, slots = [], [], []
        for j, (key, clip, fmask) in enumerate(rows):
            t = clip.shape[1]
            if t > n_frames:
                raise ValueError(f"clip '{key}' has {t} frames, more than the cache's n_frames={n_frames}")
            m = torch.ones(t, dtype=torch.bool) if fmask is None else fmask.to(torch.bool)
            valid = torch.nonzero(m).flatten()
            frames.append(clip[:, valid].permute(1, 0, 2, 3))
            owners += [j] * len(valid)
            slots += valid.tolist()
            masks[done + j, valid.numpy()] = True
            keys.append(key)
        enc = encode_frames(torch.cat(frames).to(device)).float().cpu().numpy().astype(np.float16)
        block = np.zeros((len(rows), n_frames, feature_dim), dtype=np.float16)
        block[owners, slots] = enc
        feats[done:done + len(rows)] = block
        feats.flush()
        done += len(rows)
        atomic_write_text(progress_path, json.dumps(
            {"fingerprint": fingerprint, "n": n, "done": done, "keys": keys, "mask": masks[:done].ravel().tolist()}))
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()
    if len(set(keys)) != len(keys):
        raise ValueError("feature cache keys are not unique")
    del feats
    with atomic_path(out / "mask.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, masks)
    atomic_write_text(out / "keys.json", json.dumps(keys))
    partial.replace(out / "features.npy")
    progress_path.unlink(missing_ok=True)
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


class KeyedClips(Dataset):
    """``{"key", "video"}`` items from a clip dataset and its row keys (the input :func:`cache_clips` encodes)."""

    def __init__(self, dataset: Dataset, keys: Sequence[str]):
        if len(keys) != len(dataset):
            raise ValueError(f"{len(keys)} keys for {len(dataset)} items")
        self.dataset, self.keys = dataset, list(keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {"key": self.keys[i], "video": self.dataset[i]["video"]}


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
    others wait; the fingerprint covers the backbone's weights and the key list."""
    from medvid.training.distributed import barrier, rank

    fingerprint = {**fingerprint, "backbone": module_digest(backbone), "n_frames": n_frames,
                   "keys": hashlib.sha1("\n".join(keys).encode()).hexdigest()}
    if rank() == 0:
        backbone.to(device).eval()
        build_feature_cache(backbone, KeyedClips(dataset, keys), lambda item: (item["key"], item["video"], None),
                            directory, fingerprint, n_frames=n_frames, feature_dim=feature_dim,
                            batch_size=batch_size, num_workers=num_workers, device=device, progress=progress)
    barrier()
    return FeatureCache(directory)
