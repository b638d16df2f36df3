"""Surgical recognition metrics as the jobs report them: a phase variant's strict and relaxed blocks, and
tool average precision — one definition for ``medvid zero-shot`` and ``medvid probe``."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medvid.metrics import relaxed_phase_metrics, strict_phase_metrics, tool_average_precision

TOLERANCE_S = 10.0  # relaxed metrics: boundary tolerance (M2CAI 2016)


def phase_results(pairs: Sequence[tuple[np.ndarray, np.ndarray]], names: Sequence[str], n_classes: int,
                  fps: float, tolerance_s: float = TOLERANCE_S, exceptions: bool = True) -> dict[str, Any]:
    """Strict and relaxed metrics of annotated ``(gt, pred)`` pairs, one per video named in ``names``, each
    block with a ``protocol`` string saying which it is; ``exceptions``: the Cholec80 transition exceptions."""
    strict = strict_phase_metrics(pairs)
    strict["per_video"] = dict(zip(names, strict["per_video"]))
    relaxed = relaxed_phase_metrics(pairs, n_classes, fps, tolerance_s, exceptions)
    relaxed["per_video_accuracy"] = dict(zip(names, relaxed["per_video_accuracy"]))
    return {
        "strict": {"protocol": "strict (unrelaxed): accuracy and macro-F1 per video, averaged over videos "
                               "(SurgVLP family); macro-F1 over the phases present in the video's ground "
                               "truth or prediction (sklearn f1_score average='macro')", **strict},
        "relaxed": {"protocol": f"relaxed (M2CAI 2016): {tolerance_s:g} s boundary tolerance at "
                                f"{fps:g} fps" + (" with the Cholec80 transition exceptions" if exceptions else "") +
                                "; per-phase Jaccard/precision/recall averaged over videos containing the "
                                "phase (NaN when absent), then over phases", **relaxed},
        "n_videos": len(pairs), "n_samples": int(sum(len(g) for g, _ in pairs)),
    }


def tool_results(gts: Sequence[np.ndarray], scores: Sequence[np.ndarray], classes: Sequence[str]) -> dict[str, Any]:
    """Per-tool AP and mAP over all annotated samples ``[N_v, C]`` of all videos, with each tool's prevalence."""
    y = np.concatenate(gts)
    r = tool_average_precision(y, np.concatenate(scores))
    return {"protocol": "per-tool average precision over all evaluated frames of all videos; mAP = mean "
                        "over tools present; a random scorer's AP is the tool's prevalence",
            "ap": dict(zip(classes, r["ap"])), "map": r["map"], "prevalence": dict(zip(classes, y.mean(0))),
            "n_videos": len(gts), "n_samples": int(sum(len(g) for g in gts))}
