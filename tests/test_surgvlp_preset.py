"""``medvid zero-shot phase ... preset=surgvlp`` gives SurgVLP's own per-frame predictions.

The reference below is written from SurgVLP's code (github.com/CAMMA-public/SurgVLP: ``tests/zero_shot.py``,
``tests/class_prompt.txt``, ``tests/config_surgvlp.py``, ``surgvlp.tokenize``): each frame as a PIL image
through ``Resize((360, 640))``, ``CenterCrop(224)``, ``ToTensor``, ImageNet ``Normalize``; the image encoder;
L2 normalisation; one prompt per class tokenised to 77 tokens through the BERT encoder; softmax over
100 × cosine; per-frame argmax, nothing after it. medvid must give the same predictions on the same frames.
"""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
import torchvision.transforms as T
import yaml
from PIL import Image
from typer.testing import CliRunner

from medvid.cli import app
from medvid.config import config_dir, load_config
from medvid.models.checkpoint import read_config
from medvid.models.importers import SurgVLPPreprocess
from medvid.models.text import default_text_model_path, load_tokenizer
from medvid.pipelines import synth_surgery
from medvid.vocab import CHOLEC80_PHASES
from model_testdata import surgvlp_checkpoint, surgvlp_reference_text

# tests/class_prompt.txt of SurgVLP, line by line (Cholec80 label order).
CLASS_PROMPTS = [
    "In preparation phase I insert trocars to patient abdomen cavity",
    "In calot triangle dissection phase I use grasper to hold gallbladder and use hook to expose the hepatic "
    "triangle area and cystic duct and cystic artery",
    "In clip and cut phase I use clipper to clip the cystic duct and artery then use scissor to cut them",
    "In dissection phase I use the hook to dissect the connective tissue between gallbladder and liver ",
    "In packaging phase I put the gallbladder into the specimen bag ",
    "In clean and coagulation phase I use suction and irrigation to clear the surgical field and coagulate "
    "bleeding vessels",
    "In retraction phase I grasp the specimen bag and remove it from trocar",
]
REFERENCE_TRANSFORM = T.Compose([T.Resize((360, 640)), T.CenterCrop(224), T.ToTensor(),
                                 T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])


def _frames(path, indices) -> list[np.ndarray]:
    """The video's native frames at ``indices``, decoded by PyAV (RGB), independently of medvid's reader."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return [frames[i] for i in indices]


@torch.no_grad()
def _reference_probs(image, bert, frames: list[np.ndarray]) -> torch.Tensor:
    tokenizer = load_tokenizer(default_text_model_path())
    idxtoword = {v: k for k, v in tokenizer.get_vocab().items()}
    tok = [tokenizer(t, return_tensors="pt", truncation=True, padding="max_length", max_length=77)
           for t in CLASS_PROMPTS]
    ids, mask = torch.cat([t["input_ids"] for t in tok]), torch.cat([t["attention_mask"] for t in tok])
    text = surgvlp_reference_text(bert, idxtoword, ids, mask)
    text = text / text.norm(dim=-1, keepdim=True)
    img = image(torch.stack([REFERENCE_TRANSFORM(Image.fromarray(f).convert("RGB")) for f in frames]))
    img = img / img.norm(dim=-1, keepdim=True)
    return (100.0 * img @ text.T).softmax(dim=-1)


def test_shipped_prompts_are_surgvlps_sentences():
    data = yaml.safe_load((config_dir() / "prompts" / "surgvlp_cholec80_phases.yaml").read_text())
    assert list(data["classes"]) == list(CHOLEC80_PHASES)
    assert [s for v in data["classes"].values() for s in v] == [p.strip() for p in CLASS_PROMPTS]


def test_preprocess_is_surgvlps_transform_value_for_value():
    rng = np.random.default_rng(0)
    for shape in ((2, 480, 854, 3), (1, 96, 128, 3), (1, 300, 300, 3)):  # 16:9, 4:3 (stretched as SurgVLP does)
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        want = torch.stack([REFERENCE_TRANSFORM(Image.fromarray(f)) for f in frames], 1)
        assert torch.equal(SurgVLPPreprocess().from_frames(frames), want)
        assert torch.equal(SurgVLPPreprocess()(torch.from_numpy(frames).permute(3, 0, 1, 2).float()), want)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("surgvlp")
    path, image, bert = surgvlp_checkpoint(tmp, seed=7)
    data = tmp / "surgery"
    synth_surgery.run(load_config(synth_surgery.Config, "synth_surgery", overrides=[
        f"out={data}", "videos=1", "seed=5", "duration_scale=0.3", "height=96", "width=160"]))
    model_dir = tmp / "surgvlp_medvid"
    r = CliRunner().invoke(app, ["import", "surgvlp", str(path), "--out", str(model_dir),
                                 f"tokenizer_path={default_text_model_path()}"])
    assert r.exit_code == 0, r.output
    return tmp, data, model_dir, image, bert


def test_preset_reproduces_surgvlps_per_frame_predictions(imported):
    tmp, data, model_dir, image, bert = imported
    out = tmp / "zs"
    r = CliRunner().invoke(app, ["zero-shot", "phase", str(data), "--model", str(model_dir), "--out", str(out),
                                 "fps=0.5", "plots=false", "preset=surgvlp"])
    assert r.exit_code == 0, r.output
    (csv_path,) = (out / "predictions").glob("*.csv")
    import pandas as pd

    table = pd.read_csv(csv_path)
    assert "pred_smoothed_index" not in table and "prompt_index" not in table  # no smoothing, no adaptation
    video = next((data / "videos").glob(f"{csv_path.stem}.*"))
    want = _reference_probs(image, bert, _frames(video, table["frame"].tolist()))
    got = torch.tensor(table[[f"p_{c}" for c in CHOLEC80_PHASES]].to_numpy(), dtype=torch.float32)
    assert len(table) >= 4
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)  # the CSV keeps 5 decimals
    assert table["pred_index"].tolist() == want.argmax(1).tolist()
    summary = json.loads(r.stdout[r.stdout.index("{"):])
    assert summary["preset"] == "surgvlp" and summary["sampling"]["clip_frames"] == 1


def test_preset_refuses_settings_that_change_the_protocol_and_old_imports(imported):
    tmp, data, model_dir, _, _ = imported
    runner = CliRunner()
    r = runner.invoke(app, ["zero-shot", "phase", str(data), "--model", str(model_dir), "--out", str(tmp / "a"),
                            "preset=surgvlp", "smoothing=median", "calibration=centre"])
    assert r.exit_code == 1 and "preset=surgvlp fixes" in r.output and "calibration=centre" in r.output
    assert not (tmp / "a").exists()
    r = runner.invoke(app, ["zero-shot", "tools", str(data), "--model", str(model_dir), "--out", str(tmp / "b"),
                            "preset=surgvlp"])
    assert r.exit_code == 1 and "task=tools" in r.output
    r = runner.invoke(app, ["zero-shot", "phase", str(data), "--model", str(model_dir), "--out", str(tmp / "c"),
                            "preset=nope"])
    assert r.exit_code == 1 and "preset must be one of ['surgvlp']" in r.output
    old = tmp / "old_import"  # a folder imported before the preset existed records no preprocessing preset
    old.mkdir()
    for f in model_dir.rglob("*"):
        if f.is_file():
            (old / f.relative_to(model_dir)).parent.mkdir(parents=True, exist_ok=True)
            (old / f.relative_to(model_dir)).write_bytes(f.read_bytes())
    meta = read_config(old)
    del meta["pretrained_cfg"]["preset"]
    (old / "config.json").write_text(json.dumps(meta))
    r = runner.invoke(app, ["zero-shot", "phase", str(data), "--model", str(old), "--out", str(tmp / "d"),
                            "preset=surgvlp"])
    assert r.exit_code == 1 and "records preset 'surgvlp'" in r.output
    assert not (tmp / "d").exists()
