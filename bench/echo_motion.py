"""How much EF frozen frame features carry, with and without a motion image, on a synthetic echo world.

For each study's A4C loop (sampled as the world's pretrained model records, ``--frames`` every
``--stride``-th native frame), the frozen backbone's features of: the frames (mean and std over time),
a motion image (each pixel's std, or its max - min range, over the frames: ``with_motion_image``), and
the frames with the range image. A ridge regression (standardised features, alpha over a grid) is fitted
on the train split's studies; MAE on val (where a representation is chosen) and test, with the test MAE of
predicting the train mean. No model is trained: this isolates what the input carries.

Usage: ``python bench/echo_motion.py --world E [--frames 8] [--stride 4]`` where ``E`` holds ``ingest/``,
``synth/dicom`` and ``pretrain/model`` (the chain in docs/BENCHMARKS.md). Prints JSON lines.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def features(world: Path, frames: int, stride: int) -> dict[str, dict[str, np.ndarray]]:
    from medvid.datasets.echo import EchoVideoDataset
    from medvid.models.checkpoint import load_video_text_model
    from medvid.transforms.clip import with_motion_image
    from medvid.transforms.contract import Sampling

    model = load_video_text_model(world / "pretrain" / "model").eval()
    sampling = Sampling.recorded(model.pretrained_cfg, frames, frame_stride=stride, motion="none")
    ds = EchoVideoDataset.for_model(world / "ingest", world / "synth" / "dicom", model, sampling, start="begin",
                                    views=["A4C"])
    out: dict[str, dict[str, np.ndarray]] = {"frames": {}, "std image": {}, "range image": {}, "frames + range image": {}}
    with torch.inference_mode():
        for i in range(len(ds)):
            item = ds[i]
            key, clip = item["study_key"], item["video"]
            if key in out["frames"]:
                continue
            f = model.video.frame_features(clip[None])[0][0].numpy()
            images = torch.stack([with_motion_image(clip, "std")[:, -1], clip.amax(1) - clip.amin(1)], 1)  # [3, 2, H, W]
            g = model.video.frame_features(images[None])[0][0].numpy()
            out["frames"][key] = np.concatenate([f.mean(0), f.std(0)])
            out["std image"][key], out["range image"][key] = g[0], g[1]
            out["frames + range image"][key] = np.concatenate([out["frames"][key], g[1]])
    return out


def main() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from medvid.io.ingest_folder import IngestFolder

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--stride", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(2)
    feats = features(args.world, args.frames, args.stride)
    ingest = IngestFolder(args.world / "ingest")
    ef = pd.read_csv(ingest.labels).set_index("study_key")["ef"]
    split = ingest.read_videos().drop_duplicates("study_key").set_index("study_key")["split"]
    keys = {s: [k for k in feats["frames"] if split[k] == s] for s in ("train", "val", "test")}
    mean_mae = float(np.mean(np.abs(ef[keys["test"]] - ef[keys["train"]].mean())))
    for name, x in feats.items():
        rows = []
        for alpha in (10.0, 100.0, 1000.0, 10000.0):
            model = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
            model.fit(np.stack([x[k] for k in keys["train"]]), ef[keys["train"]])
            mae = {s: float(np.mean(np.abs(model.predict(np.stack([x[k] for k in keys[s]])) - ef[keys[s]])))
                   for s in ("val", "test")}
            rows.append((mae["val"], alpha, mae["test"]))
        val, alpha, test = min(rows)
        print(json.dumps({"features": name, "alpha (chosen on val)": alpha, "val_mae": round(val, 2),
                          "test_mae": round(test, 2), "test_mae_train_mean": round(mean_mae, 2),
                          "test_below_mean": round(1 - test / mean_mae, 3)}), flush=True)


if __name__ == "__main__":
    main()
