"""Drafting's encode stage (96.6 % of ``medvid draft``'s time on CPUs): the old path against the current one,
in one process, on the same decoded loops.

* ``old``: what ``StudyEncoder.encode_loops`` did before (frames in NCHW float32 through the frame backbone
  under ``torch.no_grad``, then the temporal module) — written out here as the baseline.
* ``fp32``: ``StudyEncoder(precision="fp32")``: frame backbone with its batch norms folded into the
  convolutions (``fold_batchnorm``), channels-last, under ``inference_mode``.
* ``bf16``: ``StudyEncoder(precision="bf16")``: the same under bf16 autocast (only where the CPU has
  native bf16; the temporal module and projection stay float32).

Model: the default frozen-backbone model (packaged EfficientNet-Lite0 + MiniLM, 16 frames at 224²);
loops: synthetic studies (256x320, 32-48 frames, decoded once by ``LoopClips`` and kept in memory).
Rounds interleave the paths (the machine is shared: ratios within a round are what counts); the best
time per path is reported, with per-loop CPU seconds, speed-up over ``old``, the encode stage of a
200-study x 60-loop night on 2 cores (CPU time / 2), and what each path does to the meaning: cosine of its video
embeddings to ``old``'s and whether each loop's nearest other loop stays the same.

Usage: ``python bench/draft.py --work /tmp/draft_bench [--loops 8] [--rounds 2]``. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def _loops(work: Path, n: int):
    from medvid.config import load_config
    from medvid.io.ingest_folder import IngestFolder
    from medvid.models.factory import create_model
    from medvid.pipelines import ingest
    from medvid.report.encode import LoopClips
    from medvid.synth.echo import synthesize
    from medvid.transforms.contract import Sampling

    synth = work / "synth"
    if not (synth / "reports.csv").is_file():
        synthesize(synth, studies=max(1, -(-n // 11)), seed=5, loops_per_study=11, rows=256, cols=320,
                   frames_range=(32, 48), still_fraction=0.0)
    if not IngestFolder(work / "ingest").exists():
        ingest.run(load_config(ingest.Config, "ingest", None, [f"dicom_root={synth / 'dicom'}", f"out={work / 'ingest'}",
                                                               f"views={synth / 'views.csv'}", "progress=false"]))
    model = create_model("medvid-effnetlite0-minilm", pretrained=True).eval()
    studies = sorted(set(IngestFolder(work / "ingest").read_videos()["study_key"]))
    loops = LoopClips(work / "ingest", synth / "dicom", studies, model, Sampling.recorded(model.pretrained_cfg))
    clips = torch.stack([loops[i]["clip"] for i in range(min(n, len(loops)))])
    return model, clips


def _old(model, clips: torch.Tensor) -> torch.Tensor:
    """The encode path before channels-last/inference_mode/bf16 (``StudyEncoder.encode_loops`` until now)."""
    with torch.no_grad():
        n, _, t = clips.shape[:3]
        feats = model.encode_frames(clips.permute(0, 2, 1, 3, 4).flatten(0, 1)).float().view(n, t, -1)
        return model.encode_video_from_features(feats).float()


def _timed(fn) -> tuple[float, float, torch.Tensor]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


def _nearest(emb: torch.Tensor) -> torch.Tensor:
    sim = emb @ emb.T
    sim.fill_diagonal_(-2)
    return sim.argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/draft_bench"))
    ap.add_argument("--loops", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="loops per backbone call (encoding.loop_batch)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.device import resolve_precision
    from medvid.report.encode import StageTimer, StudyEncoder

    model, clips = _loops(args.work, args.loops)
    att = ViewInformedAttention.from_prior_file(learnable=False)
    paths = {"old": lambda x: _old(model, x)}
    bf16_native = resolve_precision("auto", torch.device("cpu")) == "bf16"
    # StudyEncoder converts the model to channels-last in place: time "old" on its own copy of the weights
    import copy

    for precision in ("fp32", "bf16") if bf16_native else ("fp32",):
        enc = StudyEncoder(copy.deepcopy(model), att, precision=precision)
        paths[precision] = lambda x, enc=enc: enc.encode_loops(x, None, StageTimer())[0]
    best = {k: [float("inf"), float("inf")] for k in paths}
    emb: dict[str, torch.Tensor] = {}
    for r in range(args.rounds):
        for name, fn in paths.items():
            wall, cpu, out = _timed(lambda: torch.cat([fn(clips[i:i + args.batch]) for i in range(0, len(clips),
                                                                                                 args.batch)]))
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]
            emb[name] = out
            print(json.dumps({"round": r, "path": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}), flush=True)
    n = len(clips)
    ref = emb["old"]
    result = {"loops": n, "frames_per_loop": int(clips.shape[2]), "size": int(clips.shape[-1]),
              "threads": torch.get_num_threads(), "bf16_native": bf16_native, "paths": {}}
    for name, (wall, cpu) in best.items():
        cos = F.cosine_similarity(emb[name], ref)
        result["paths"][name] = {
            "wall_s_per_loop": round(wall / n, 3), "cpu_s_per_loop": round(cpu / n, 3),
            "speedup_wall_vs_old": round(best["old"][0] / wall, 2), "speedup_cpu_vs_old": round(best["old"][1] / cpu, 2),
            "encode_200x60_night_hours_2_cores": round(200 * 60 * cpu / n / 2 / 3600, 2),
            "cosine_to_old_min": round(float(cos.min()), 5),
            "nearest_loop_same_as_old": round(float((_nearest(emb[name]) == _nearest(ref)).float().mean()), 3)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
