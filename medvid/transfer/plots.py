"""Learning curve: a metric against the labelled fraction, with fixed reference lines (zero-shot, chance)."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from medvid.zeroshot.plots import _save, plt


def learning_curve(path: str | os.PathLike, fractions: Sequence[float], curves: Mapping[str, Sequence[dict]],
                   lines: Mapping[str, float], ylabel: str, title: str = "") -> None:
    """``curves``: name → one ``{"mean", "sd"}`` per fraction (error bars = sd over seeds);
    ``lines``: name → a constant drawn across (zero-shot, chance, training mean)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    x = 100 * np.asarray(fractions, dtype=float)
    for name, points in curves.items():
        mean, sd = (np.array([p[k] for p in points], dtype=float) for k in ("mean", "sd"))
        ok = np.isfinite(mean)  # undefined points (e.g. AUROC with one class in the test set) are left out
        if ok.any():
            ax.errorbar(x[ok], mean[ok], yerr=np.nan_to_num(sd[ok]), marker="o", capsize=3, label=name)
    for (name, value), style in zip(lines.items(), ("--", ":", "-.", (0, (1, 3)))):
        if value is not None and np.isfinite(value):
            ax.axhline(value, linestyle=style, color="grey", label=f"{name} ({value:.3g})")
    ax.set_xscale("log")
    ax.set_xlim(x.min() / 1.6, x.max() * 1.6)
    ax.set_xticks(x, [f"{v:g}%" for v in x])
    ax.set_xlabel("labelled training data")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
