"""Figures people look at: a phase ribbon per video and a confusion matrix (PNG, matplotlib Agg)."""
from __future__ import annotations

import os
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from medvid.utils import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def phase_ribbon(path: str | os.PathLike, times_s: np.ndarray, pred: np.ndarray, classes: Sequence[str],
                 gt: np.ndarray | None = None, title: str = "") -> None:
    """One coloured row per sequence — ground truth above (when known), prediction below — against
    time in minutes. Labels < 0 (unannotated) are drawn blank."""
    n = len(classes)
    colors = plt.get_cmap("tab10" if n <= 10 else "tab20").colors[:n]
    cmap = ListedColormap(colors).with_extremes(bad="white")
    rows = ([("ground truth", gt)] if gt is not None else []) + [("prediction", pred)]
    t = np.asarray(times_s, dtype=np.float64) / 60.0
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / 60
    extent_x = (t[0] - step / 2, t[-1] + step / 2) if len(t) else (0, 1)
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 0.6 + 0.55 * len(rows)), sharex=True, squeeze=False)
    for ax, (name, seq) in zip(axes[:, 0], rows):
        row = np.ma.masked_less(np.asarray(seq, dtype=np.float64)[None, :], 0)
        ax.imshow(row, aspect="auto", cmap=cmap, vmin=-0.5, vmax=n - 0.5, interpolation="nearest",
                  extent=(*extent_x, 0, 1))
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    axes[-1, 0].set_xlabel("time (min)")
    if title:
        axes[0, 0].set_title(title)
    fig.legend(handles=[Patch(color=cmap(i), label=c) for i, c in enumerate(classes)], loc="lower center",
               ncol=min(n, 4), bbox_to_anchor=(0.5, -0.45 - 0.12 * ((n - 1) // 4)), fontsize=8, frameon=False)
    _save(fig, path)


def confusion_matrix_plot(path: str | os.PathLike, gt: np.ndarray, pred: np.ndarray, classes: Sequence[str],
                          title: str = "") -> None:
    """Row-normalised confusion matrix (rows: ground truth) over all evaluated samples."""
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(classes), 1.0 + 0.7 * len(classes)))
    ConfusionMatrixDisplay.from_predictions(
        gt, pred, labels=list(range(len(classes))), display_labels=list(classes), normalize="true",
        values_format=".2f", cmap="Blues", ax=ax, colorbar=False, xticks_rotation=45)
    if title:
        ax.set_title(title)
    _save(fig, path)
