"""EchoPrime's text encoder, imported with its video encoder, embeds text as EchoPrime's code does.

The reference is written from EchoPrime's ``echo_prime/model.py`` (``EchoPrimeTextEncoder``): a
``BertForMaskedLM`` built from BiomedBERT's config, ``text_projection = Linear(768, 512)``; a report is
tokenised padded to 512 tokens with truncation and embedded as the projected ``[CLS]`` state of the last
hidden layer. The stand-in is that module with random weights and a tiny local WordPiece tokenizer, saved as
EchoPrime saves it (``torch.save`` of its state dict).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from medvid.cli import app
from medvid.errors import MedvidError, MissingWeightsError
from medvid.models import importers as imp
from medvid.models.checkpoint import load_pretrained, read_config
from medvid.zeroshot.classifier import FindingsClassifier
from medvid.zeroshot.prompts import Finding, model_text_encoder
from model_testdata import echoprime_reference, random_weights

WORDS = ("the left ventricle is normal in size with normal wall thickness ejection fraction mild moderate severe "
         "mitral aortic valve regurgitation stenosis pericardial effusion no dilated right atrium").split()
TEXTS = ["The left ventricle is normal in size.", "Severe aortic valve stenosis.",
         "No pericardial effusion. Mild mitral regurgitation with a dilated left atrium and zzz unknown words."]


class ReferenceTextEncoder(nn.Module):
    """``EchoPrimeTextEncoder`` as its code builds and runs it (tokenizer passed in: no download here)."""

    def __init__(self, config, tokenizer):
        super().__init__()
        from transformers import BertForMaskedLM

        self.backbone = BertForMaskedLM(config)
        self.text_projection = nn.Linear(768, 512)
        self.tokenizer = tokenizer

    @torch.no_grad()
    def forward(self, report):
        text = self.tokenizer(report, padding="max_length", max_length=512, truncation=True, return_tensors="pt")
        return self.text_projection(self.backbone(**text, output_hidden_states=True).hidden_states[-1][:, 0, :])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from transformers import BertConfig, BertTokenizerFast

    tmp = tmp_path_factory.mktemp("echoprime_text")
    tok_dir = tmp / "biomedbert"
    tok_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *WORDS, "##s", "##ed"]
    (tok_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(str(tok_dir / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(tok_dir))
    config = BertConfig(vocab_size=len(vocab), hidden_size=768, num_hidden_layers=2, num_attention_heads=12,
                        intermediate_size=128, max_position_embeddings=512)
    config.save_pretrained(str(tok_dir))  # a local Hugging Face folder, as BiomedBERT's download is
    torch.manual_seed(0)
    ref = ReferenceTextEncoder(config, tokenizer).eval()
    text_path = tmp / "echo_prime_text_encoder.pt"
    torch.save(ref.state_dict(), text_path)
    video_path = tmp / "echo_prime_encoder.pt"
    torch.save(random_weights(echoprime_reference, 1).state_dict(), video_path)
    return tmp, video_path, text_path, tok_dir, ref


def test_text_encoder_matches_echoprime_and_round_trips(files):
    tmp, video_path, text_path, tok_dir, ref = files
    assert any(k.startswith("backbone.cls.predictions.") for k in torch.load(text_path))  # the MLM head is in the file
    model = imp.import_echoprime_video_encoder(video_path, text_encoder=text_path, tokenizer_path=tok_dir)
    want = ref(TEXTS)
    with torch.no_grad():
        got = model.encode_text(**model.tokenize(TEXTS), normalize=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    back = load_pretrained(model.save_pretrained(tmp / "model"))
    assert (tmp / "model" / "text" / "tokenizer_config.json").is_file()  # the tokenizer travels with the model
    with torch.no_grad():
        torch.testing.assert_close(back.encode_text(**back.tokenize(TEXTS), normalize=False), want,
                                   rtol=1e-5, atol=1e-5)
    encode = model_text_encoder(back)  # what findings and text queries use: unit-norm, EchoPrime's 512-d space
    torch.testing.assert_close(encode(TEXTS), nn.functional.normalize(want, dim=-1), rtol=1e-5, atol=1e-5)
    scores = FindingsClassifier([Finding("stenosis", "binary", ["severe aortic valve stenosis"])], encode)(
        torch.randn(2, 512))
    assert scores["stenosis"].shape == (2,)


def test_import_command_with_text_encoder(files):
    tmp, video_path, text_path, tok_dir, ref = files
    runner = CliRunner()
    out = tmp / "cli_model"
    r = runner.invoke(app, ["import", "echoprime", str(video_path), "--out", str(out), f"text_encoder={text_path}",
                            f"tokenizer_path={tok_dir}"])
    assert r.exit_code == 0, r.output
    assert read_config(out)["config"]["text_bert_config"]["hidden_size"] == 768
    r = runner.invoke(app, ["import", "echoprime", str(video_path), "--out", str(tmp / "no_tok"),
                            f"text_encoder={text_path}"])
    assert r.exit_code == 1 and "text_encoder needs tokenizer_path" in r.output
    assert not (tmp / "no_tok").exists()


def test_missing_or_wrong_files_are_clear_errors(files, tmp_path):
    _, video_path, text_path, tok_dir, _ = files
    with pytest.raises(MissingWeightsError, match="checkpoint not found"):
        imp.import_echoprime_video_encoder(video_path, text_encoder=tmp_path / "absent.pt", tokenizer_path=tok_dir)
    with pytest.raises(MissingWeightsError, match="config.json"):
        imp.import_echoprime_video_encoder(video_path, text_encoder=text_path, tokenizer_path=tmp_path)
    state = torch.load(text_path)
    del state["text_projection.bias"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(imp.CheckpointMismatchError, match="text_projection.bias"):
        imp.import_echoprime_video_encoder(video_path, text_encoder=tmp_path / "cut.pt", tokenizer_path=tok_dir)
    plain = imp.import_echoprime_video_encoder(video_path)
    with pytest.raises(MedvidError, match="no text encoder"):
        plain.tokenize(TEXTS)
