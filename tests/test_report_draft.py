"""Drafting from a bank: section keying by name, consensus text, phenotypes per section, text rendering,
bank rows from reports that lack sections, shard partition and study embedding with known views."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from medvid.report.bank import Bank, SectionRows, write_bank
from medvid.report.draft import DraftSettings, Drafter, render_text
from medvid.report.encode import EncodedStudy
from medvid.transforms.contract import PretrainedCfg

SECTIONS = ["Left Ventricle", "Pericardium", "Aorta"]


@pytest.fixture
def bank(tmp_path):
    e = np.eye(4, dtype=np.float16)
    parts = [  # st_1 has no Pericardium, st_2 no Left Ventricle, nobody has Aorta
        ("Left Ventricle", SectionRows(e[[0, 1, 0]], np.array([0, 1, 3], np.int32),
                                       ["LV normal.", "LV reduced.", "LV normal."])),
        ("Pericardium", SectionRows(e[[2, 1]], np.array([0, 2], np.int32), ["No effusion.", "Effusion."])),
        ("Aorta", SectionRows(np.zeros((0, 4), np.float16), np.zeros(0, np.int32), [])),
    ]
    studies = pd.DataFrame({"study_key": ["st_0", "st_1", "st_2", "st_3"], "ef": [60.0, 30.0, 40.0, 62.0],
                            "pericardial_effusion": [0.0, 0.0, 1.0, 0.0]})
    write_bank(tmp_path / "b", parts, studies, dim=4, rows=5, manifest={"model": {"fingerprint": "m"}})
    return Bank(tmp_path / "b")


def _study(vec_lv, vec_p) -> EncodedStudy:
    emb = torch.tensor([vec_lv, vec_p, [0, 0, 0, 1.0]])
    return EncodedStudy("st_new", ["vi_1", "vi_2"], ["A4C", "Parasternal_Long"], [1.0, 0.9], ["known", "classifier"],
                        SECTIONS, emb, torch.tensor([[0.7, 0.3], [0.5, 0.5], [0.2, 0.8]]), torch.zeros(4))


def test_sections_and_neighbours_keyed_by_name(bank):
    d = Drafter(bank, DraftSettings(neighbours=5, knn_k=5, knn_temperature=None,
                                    phenotype_sections={"pericardial_effusion": "Pericardium"}))
    [row] = d.draft([_study([0, 1.0, 0, 0], [0, 1.0, 0, 0])])
    assert list(row["sections"]) == ["Left Ventricle", "Pericardium"]  # Aorta: no bank row, not drafted
    lv, peri = row["sections"]["Left Ventricle"], row["sections"]["Pericardium"]
    assert lv["text"] == "LV reduced." and lv["neighbours"][0] == {"study_key": "st_1", "similarity": 1.0}
    assert {n["study_key"] for n in peri["neighbours"]} == {"st_0", "st_2"}  # st_1 lacks the section
    assert peri["text"] == "Effusion."
    assert [v["weight"] for v in lv["videos"]] == [0.7, 0.3] and lv["videos"][1]["view_confidence"] == 0.9
    assert row["videos"][1]["view_source"] == "classifier"
    # pericardial_effusion votes with Pericardium neighbours: st_2 (sim 1, positive), st_0 (sim 0)
    assert row["phenotypes"]["pericardial_effusion"]["score"] == pytest.approx(1.0, abs=1e-6)
    # ef votes with Left Ventricle neighbours (default section): st_1 only has positive similarity
    assert row["phenotypes"]["ef"]["value"] == pytest.approx(30.0, abs=1e-3)


def test_consensus_text_is_a_weighted_vote(bank):
    d = Drafter(bank, DraftSettings(consensus=3, knn_temperature=None))
    q = [0.6, 0.8, 0, 0]  # nearest is st_1 ("LV reduced.", 0.8) but two "LV normal." rows score 0.6 each
    [row] = d.draft([_study(q, q)])
    assert row["sections"]["Left Ventricle"]["neighbours"][0]["study_key"] == "st_1"
    assert row["sections"]["Left Ventricle"]["text"] == "LV normal."


def test_batch_scan_matches_one_study_at_a_time(bank):
    d = Drafter(bank, DraftSettings(knn_temperature=0.05))
    studies = [_study([1.0, 0, 0, 0], [0, 0, 1.0, 0]), _study([0, 1.0, 0, 0], [0, 1.0, 0, 0])]
    together = d.draft(studies)
    alone = [d.draft([s])[0] for s in studies]
    assert together == alone


def test_render_text_has_banner_sections_and_calls(bank):
    [row] = Drafter(bank, DraftSettings()).draft([_study([1.0, 0, 0, 0], [0, 0, 1.0, 0])])
    text = render_text(row)
    assert text.startswith("DRAFT") and "Left Ventricle: LV normal." in text and "pericardial_effusion:" in text


def test_bank_sections_come_from_the_scrubbed_report_only():
    from medvid.report.build import scrub_sections

    counts: Counter = Counter()
    report = ("Left Ventricle: Normal size. Signed by Dr. Jane Doe on 03/04/2019.\n"
              "Pericardium: No effusion. MRN 12345678.\nAorta: ")
    got = scrub_sections(report, ["Doe"], SECTIONS, counts)
    assert set(got) == {"Left Ventricle", "Pericardium"}  # empty Aorta is not a bank row
    assert "Jane" not in got["Left Ventricle"] and "2019" not in got["Left Ventricle"]
    assert "12345678" not in got["Pericardium"] and sum(counts.values()) >= 3


def test_shards_partition_and_parse():
    from medvid.errors import MedvidError
    from medvid.pipelines.draft import parse_shard, shard_of

    keys = [f"st_{i:02d}" for i in range(10)]
    parts = [shard_of(keys, k, 3) for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == keys and not set(parts[0]) & set(parts[1])
    assert parse_shard("2/4") == (2, 4) and parse_shard("") == (1, 1)
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(MedvidError):
            parse_shard(bad)


def test_bank_and_draft_jobs_share_one_settings_source():
    """``drafting:`` and ``encoding:`` come from one library dataclass each: both jobs load the same values
    (calibration scores phenotypes exactly as drafting does), phenotype_sections included."""
    from medvid.config import load_config
    from medvid.pipelines import bank, draft

    b, d = load_config(bank.Config, "bank"), load_config(draft.Config, "draft")
    assert b.drafting == d.drafting and b.encoding == d.encoding
    assert dict(d.drafting.phenotype_sections) == {
        "ef": "Left Ventricle", "reduced_ef": "Left Ventricle", "lv_dilation": "Left Ventricle",
        "la_dilation": "Left Atrium", "pericardial_effusion": "Pericardium", "mitral_regurgitation": "Mitral Valve",
        "tricuspid_regurgitation": "Tricuspid Valve"}
    assert d.encoding.precision == "auto" and d.drafting.knn_temperature == 0.1
    over = load_config(draft.Config, "draft", None, ["drafting.phenotype_sections.ef=Left Atrium"])
    assert over.drafting.phenotype_sections.ef == "Left Atrium" and over.drafting.phenotype_sections.reduced_ef


def test_known_view_wins_and_weights_sum_to_one():
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.report.encode import StudyEncoder

    enc = StudyEncoder.__new__(StudyEncoder)  # only the attention part is exercised
    enc.device, enc.attention = torch.device("cpu"), ViewInformedAttention.from_prior_file(learnable=False)
    enc.view_names = list(enc.attention.view_names)
    probs = torch.full((2, len(enc.view_names)), 0.01)
    probs[:, enc.view_names.index("SSN")] = 0.9
    st = enc.study("st_x", ["vi_a", "vi_b"], torch.nn.functional.normalize(torch.randn(2, 8), dim=-1), probs,
                   ["A4C", ""])
    assert st.views == ["A4C", "SSN"] and st.view_source == ["known", "classifier"] and st.view_confidence[0] == 1.0
    assert torch.allclose(st.weights.sum(-1), torch.ones(len(st.sections)))
    assert torch.allclose(st.embeddings.norm(dim=-1), torch.ones(len(st.sections)))


def test_study_outputs_sr_and_assembly_once_per_study(bank, tmp_path):
    from medvid.report.drafts_folder import DraftsFolder
    from medvid.report.sr import read_report_sr

    [row] = Drafter(bank, DraftSettings()).draft([_study([1.0, 0, 0, 0], [0, 0, 1.0, 0])])
    folder = DraftsFolder(tmp_path / "out")
    folder.prepare({"bank": bank.fingerprint})
    folder.write_errors("st_new", [{"study_key": "st_new", "reason": "decode_error"}])
    folder.write_errors("st_bad", [{"study_key": "st_bad", "reason": "truncated"}])
    for _ in range(2):  # a study finished twice (a resumed run) still appears once
        folder.write_study(row, {"bank": {"fingerprint": bank.fingerprint}})
    assert folder.is_done("st_new") and not folder.is_done("st_bad")
    assert folder.assemble() == (1, 1)  # st_new's old error is gone, st_bad's stays
    out = folder.out
    line = json.loads((out / "drafts.jsonl").read_text())
    assert line["status"] == "draft" and line["sr_path"] == "drafts/st_new.sr.dcm"
    sections, measurements = read_report_sr(out / line["sr_path"])
    assert sections == {n: s["text"] for n, s in line["sections"].items()}
    assert measurements["ef"] == round(line["phenotypes"]["ef"]["value"])  # an estimate, to a whole percent
    assert json.loads((out / "errors.jsonl").read_text())["study_key"] == "st_bad"


def test_each_study_is_appended_as_it_finishes_and_a_torn_line_is_repaired(bank, tmp_path):
    from medvid.report.drafts_folder import DraftsFolder

    [row] = Drafter(bank, DraftSettings()).draft([_study([1.0, 0, 0, 0], [0, 0, 1.0, 0])])
    folder = DraftsFolder(tmp_path / "out")
    folder.prepare({"bank": bank.fingerprint})
    folder.write_study(row, {})
    for _ in range(2):  # a rerun failing the same way adds no line
        folder.write_errors("st_bad", [{"study_key": "st_bad", "reason": "truncated", "detail": ""}])
    drafts, errors = folder.out / "drafts.jsonl", folder.out / "errors.jsonl"
    assert [json.loads(x)["study_key"] for x in drafts.read_text().splitlines()] == ["st_new"]  # before any assemble
    assert json.loads(errors.read_text())["study_key"] == "st_bad"
    whole = drafts.read_text()
    drafts.write_text(whole + whole[:50])  # a run killed mid-append
    folder.assemble()  # what a resumed run does first
    folder.write_study({**row, "study_key": "st_later"}, {})
    assert [json.loads(x)["study_key"] for x in drafts.read_text().splitlines()] == ["st_new", "st_later"]
    assert folder.assemble() == (2, 1)  # sorted by study key, each line as it was appended
    assert drafts.read_text().splitlines()[1] == whole.rstrip("\n")


def test_a_draft_made_without_unreadable_loops_says_which(bank, tmp_path):
    import highdicom as hd

    from medvid.report.drafts_folder import DraftsFolder

    [row] = Drafter(bank, DraftSettings()).draft([_study([1.0, 0, 0, 0], [0, 0, 1.0, 0])])
    row["left_out"] = [{"video_key": "vi_bad", "reason": "truncated", "detail": "pixel data ends early"}]
    folder = DraftsFolder(tmp_path / "out")
    folder.prepare({})
    folder.write_study(row, {})
    folder.assemble()
    record = json.loads((folder.out / "drafts.jsonl").read_text())
    assert record["left_out"] == row["left_out"] and [v["video_key"] for v in record["videos"]] == ["vi_1", "vi_2"]
    text = (folder.out / record["text_path"]).read_text()
    assert "Drafted without 1 loop(s) that could not be read: vi_bad (truncated)." in text
    sr = hd.sr.srread(folder.out / record["sr_path"])
    comments = [i.value for i in sr.ContentSequence if i.ValueType == "TEXT" and i.name.meaning == "Comment"]
    assert comments == ["Drafted without 1 loop(s) that could not be read: vi_bad (truncated)."]
    row["left_out"] = []
    folder.write_study({**row, "study_key": "st_ok"}, {})
    assert "Drafted without" not in (folder.out / "drafts" / "st_ok.txt").read_text()


def test_drafts_folder_refuses_other_settings_naming_them(tmp_path):
    from medvid.errors import MedvidError
    from medvid.report.drafts_folder import DraftsFolder

    folder = DraftsFolder(tmp_path / "out")
    folder.prepare({"drafting.knn_k": 50, "split": "test"})
    folder.prepare({"split": "test", "drafting.knn_k": 50})  # the same settings resume
    (folder.state / "done" / "st_a.json").write_text("{}")  # a drafted study: a run to protect
    with pytest.raises(MedvidError, match=r"other settings \(drafting.knn_k: 50 → 3\)"):
        folder.prepare({"drafting.knn_k": 3, "split": "test"})


def test_measurement_models_are_refused_naming_the_kind():
    """EchoNet-Dynamic (EF regressor) and PanEcho (task heads) give no clip embedding: a clear error."""
    from medvid.errors import MedvidError
    from medvid.models import importers as imp
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.report.encode import StudyEncoder, embedding_path

    att = ViewInformedAttention.from_prior_file(learnable=False)
    for model, kind in ((imp.build_empty(imp.EchoNetDynamic), "echonet_dynamic"),
                        (imp.build_empty(lambda: imp.PanEcho({"EF": 1})), "panecho")):
        with pytest.raises(MedvidError, match=f"'{kind}' model.*encode_clips"):
            StudyEncoder(model, att)
    assert embedding_path(imp.build_empty(imp.EchoPrimeVideoEncoder)) == "clips"


def test_draft_jobs_refuse_an_imported_ef_regressor(tmp_path):
    """``bank build``/``draft --model`` an imported EchoNet-Dynamic folder: refused naming the folder and kind;
    a non-classifier as ``--views`` too."""
    from medvid.errors import MedvidError
    from medvid.models import importers as imp
    from medvid.report.encode import load_encoder
    from model_testdata import random_weights

    echonet = random_weights(lambda: imp.EchoNetDynamic(PretrainedCfg(input_size=112, mean=[0, 0, 0], std=[1, 1, 1])), 1)
    folder = echonet.save_pretrained(tmp_path / "echonet")
    with pytest.raises(MedvidError, match=f"{folder}: a 'echonet_dynamic' model"):
        load_encoder(str(folder), "", torch.device("cpu"))
    from medvid.models.factory import create_model

    video = create_model({"pretrained": False, "input_size": 32, "temporal": "mean", "embed_dim": 8})
    with pytest.raises(MedvidError, match="not a view classifier"):
        load_encoder(str(video.save_pretrained(tmp_path / "video")), str(folder), torch.device("cpu"))


class _ClipModel(torch.nn.Module):
    """A whole-clip embedder (the interface an imported EchoPrime has), tiny."""

    embed_dim = 6
    pretrained_cfg = PretrainedCfg()

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 6)

    def encode_clips(self, clips, normalize=True):
        return torch.nn.functional.normalize(self.proj(clips.mean((2, 3, 4))), dim=-1)


def test_clip_models_draft_through_the_attention():
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.report.encode import StageTimer, StudyEncoder

    torch.manual_seed(0)
    enc = StudyEncoder(_ClipModel(), ViewInformedAttention.from_prior_file(learnable=False), precision="fp32")
    clips = torch.randn(3, 3, 4, 8, 8)
    timer = StageTimer()
    emb, probs = enc.encode_loops(clips, None, timer)
    assert probs is None and emb.shape == (3, 6) and timer.seconds["encode"] > 0
    torch.testing.assert_close(emb, enc.model.encode_clips(clips))
    st = enc.study("st_x", ["a", "b", "c"], emb, None, ["A4C", "A2C", ""])
    assert st.embeddings.shape == (len(st.sections), 6) and st.view_source == ["known", "known", "unknown"]


def test_bf16_frames_keep_the_embedding():
    """bf16 autocast on the frame backbone (channels-last) leaves video embeddings where fp32 puts them."""
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.models.factory import create_model
    from medvid.report.encode import StageTimer, StudyEncoder

    torch.manual_seed(0)
    model = create_model({"pretrained": False, "input_size": 64, "num_frames": 4, "temporal": "mean",
                          "embed_dim": 32}).eval()
    att = ViewInformedAttention.from_prior_file(learnable=False)
    clips = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        want = model.encode_video(clips)
    fp32, _ = StudyEncoder(model, att, precision="fp32").encode_loops(clips, None, StageTimer())
    torch.testing.assert_close(fp32, want, rtol=1e-4, atol=1e-5)  # channels-last: same numbers
    bf16, _ = StudyEncoder(model, att, precision="bf16").encode_loops(clips, None, StageTimer())
    assert torch.nn.functional.cosine_similarity(bf16, want).min() > 0.99
    with pytest.raises(Exception, match="precision must be one of"):
        StudyEncoder(model, att, precision="fp8")


def test_a_view_classifier_sharing_the_backbone_never_sees_the_motion_image():
    """A model fed a motion image as its last frame embeds all T + 1 frames; the view classifier sharing its
    backbone classifies the T real frames only, as it was trained."""
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.models.factory import create_model, create_view_classifier
    from medvid.report.encode import StageTimer, StudyEncoder

    torch.manual_seed(0)
    model = create_model({"pretrained": False, "input_size": 64, "num_frames": 4, "temporal": "mean",
                          "embed_dim": 32}).eval()
    model.pretrained_cfg = replace(model.pretrained_cfg, motion="std")
    clf = create_view_classifier({"pretrained": False, "input_size": 64}).eval()
    clf.backbone.load_state_dict(model.video.backbone.state_dict())
    enc = StudyEncoder(model, ViewInformedAttention.from_prior_file(learnable=False), clf, precision="fp32")
    assert enc.shared and enc.motion_frames == 1
    clips = torch.randn(2, 3, 5, 64, 64)
    emb, probs = enc.encode_loops(clips, None, StageTimer())
    with torch.no_grad():
        torch.testing.assert_close(emb, model.encode_video(clips), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(probs, clf(clips[:, :, :4]).softmax(-1), rtol=1e-4, atol=1e-5)


def _random_stats(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def test_batchnorm_folding_keeps_frame_features():
    """timm's EfficientNet (BatchNormAct2d, TF 'same' padding) and torchvision's ResNet compute the same with
    their batch norms folded into the convolutions."""
    import copy

    import timm
    from torchvision.models import resnet18

    from medvid.report.encode import fold_batchnorm

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for net in (timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0), resnet18()):
        net = _random_stats(net)
        folded = copy.deepcopy(net)
        assert fold_batchnorm(folded) > 10
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        with torch.no_grad():
            torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)


class _Misordered(torch.nn.Module):
    """A conv registered right before a batch norm that does not normalise its output."""

    embed_dim = 4
    pretrained_cfg = PretrainedCfg(input_size=16)

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)

    def encode_frames(self, frames):
        return self.conv(frames).mean((2, 3)) + self.bn(frames[:, :1].repeat(1, 4, 1, 1)).mean((2, 3))

    def encode_video_from_features(self, feats, frame_mask=None):
        return torch.nn.functional.normalize(feats.mean(1), dim=-1)


def test_folding_that_would_change_the_features_is_not_kept():
    from medvid.models.aggregate import ViewInformedAttention
    from medvid.report.encode import StudyEncoder

    model = _random_stats(_Misordered())
    enc = StudyEncoder(model, ViewInformedAttention.from_prior_file(learnable=False), precision="fp32")
    assert isinstance(enc.model.bn, torch.nn.BatchNorm2d)  # the probe caught it: unfolded


# --------------------------------------------------------------------------- section text consistent with the calls
def _effusion_bank(tmp_path, labels):
    """A Pericardium-only bank: st_0 "No effusion." (e0), st_1 "There is a small pericardial effusion." (e1),
    st_2 "No effusion." (e2); ``labels``: their pericardial_effusion labels."""
    e = np.eye(4, dtype=np.float16)
    texts = ["No effusion.", "There is a small pericardial effusion.", "No effusion."]
    parts = [("Pericardium", SectionRows(e[[0, 1, 2]], np.array([0, 1, 2], np.int32), texts))]
    studies = pd.DataFrame({"study_key": ["st_0", "st_1", "st_2"], "pericardial_effusion": labels})
    write_bank(tmp_path / "eb", parts, studies, dim=4, rows=3, manifest={"model": {"fingerprint": "m"}})
    return Bank(tmp_path / "eb")


def _pericardium_study(vec) -> EncodedStudy:
    return EncodedStudy("st_new", ["vi_1"], ["A4C"], [1.0], ["known"], ["Pericardium"], torch.tensor([vec]),
                        torch.tensor([[1.0]]), torch.zeros(4))


def test_text_call_reads_what_a_section_says():
    from medvid.report.section_text import text_call

    assert text_call("mitral_regurgitation", "Moderate mitral regurgitation.") == 1
    assert text_call("mitral_regurgitation", "Mild mitral regurgitation.") == 0  # not clinically significant
    assert text_call("mitral_regurgitation", "The mitral valve is normal without regurgitation.") == 0
    assert text_call("tricuspid_regurgitation", "Trivial tricuspid regurgitation.") == 0
    assert text_call("pericardial_effusion", "There is a small pericardial effusion.") == 1
    assert text_call("pericardial_effusion", "No pericardial effusion.") == 0
    assert text_call("reduced_ef", "Systolic function is mildly reduced. LVEF 52%.") == 0  # the number decides
    assert text_call("reduced_ef", "The left ventricular ejection fraction is estimated at 41%.") == 1
    assert text_call("reduced_ef", "Systolic function is severely reduced.") == 1
    assert text_call("lv_dilation", "The left ventricle is moderately dilated.") == 1
    assert text_call("la_dilation", "Normal left atrial size.") == 0
    assert text_call("la_dilation", "The aortic valve is normal.") is None  # silent
    assert text_call("ef", "LVEF 60%.") is None  # no rule: never a conflict


def test_section_text_agrees_with_the_call_passing_over_nearer_texts(tmp_path):
    bank = _effusion_bank(tmp_path, [0.0, 1.0, 0.0])
    bank.set_thresholds({"pericardial_effusion": 0.3}, {})
    settings = DraftSettings(knn_k=3, knn_temperature=None, phenotype_sections={"pericardial_effusion": "Pericardium"})
    q = [0.8, 0.6, 0, 0]  # nearest st_0 "No effusion." (0.8), then st_1 (0.6): score 0.43 >= 0.3, a positive call
    [row] = Drafter(bank, settings).draft([_pericardium_study(q)])
    sec = row["sections"]["Pericardium"]
    assert row["phenotypes"]["pericardial_effusion"]["call"] == 1
    assert sec["text"] == "There is a small pericardial effusion." and sec["text_source"] == "consistent"
    assert sec["conflict"] is None and sec["neighbours"][0]["study_key"] == "st_0"
    [plain] = Drafter(bank, replace(settings, consistent=False)).draft([_pericardium_study(q)])
    assert plain["sections"]["Pericardium"]["text"] == "No effusion."  # what drafting wrote before


def test_a_remaining_contradiction_is_flagged_with_an_agreeing_alternative(tmp_path):
    from medvid.report.section_text import contradictions

    bank = _effusion_bank(tmp_path, [1.0, 0.0, 0.0])  # st_0's label says effusion, its text says none
    settings = DraftSettings(neighbours=1, knn_k=1, phenotype_sections={"pericardial_effusion": "Pericardium"})
    [row] = Drafter(bank, settings).draft([_pericardium_study([1.0, 0, 0, 0])])
    sec = row["sections"]["Pericardium"]
    assert row["phenotypes"]["pericardial_effusion"]["call"] == 1 and sec["text"] == "No effusion."
    assert sec["conflict"] == {"phenotype": "pericardial_effusion", "phenotypes": ["pericardial_effusion"], "call": 1,
                               "text_finding": "presence=absent;severity=none",
                               "alternative": "There is a small pericardial effusion."}
    assert contradictions(row, {"pericardial_effusion": "Pericardium"}) == [
        {"section": "Pericardium", "phenotype": "pericardial_effusion", "flagged": True}]
    [plain] = Drafter(bank, replace(settings, consistent=False)).draft([_pericardium_study([1.0, 0, 0, 0])])
    assert contradictions(plain, {"pericardial_effusion": "Pericardium"})[0]["flagged"] is False  # silent


def test_prior_text_sections_are_chosen_on_calibration_and_followed_by_drafts(bank):
    from medvid.report.calibrate import choose_text_sources

    settings = DraftSettings(knn_temperature=None, phenotype_sections={})  # no call speaks for these texts
    study = _study([0, 1.0, 0, 0], [0, 1.0, 0, 0])  # nearest texts: "LV reduced.", "Effusion."
    truth = {"st_new": {"Left Ventricle": "LV normal.", "Pericardium": "Effusion."}}
    chosen = choose_text_sources(bank, [study], truth, settings)
    assert chosen["Left Ventricle"]["text_source"] == "prior"  # the bank's prior "LV normal." beats the neighbour
    assert chosen["Pericardium"]["text_source"] == "neighbours"  # retrieval beats the prior "No effusion." here
    assert chosen["Left Ventricle"]["neighbours_token_f1"] < chosen["Left Ventricle"]["prior_token_f1"]
    bank.set_thresholds({}, {"sections": chosen})
    [row] = Drafter(bank, settings).draft([study])
    assert row["sections"]["Left Ventricle"]["text"] == "LV normal."
    assert row["sections"]["Left Ventricle"]["text_source"] == "prior"
    assert row["sections"]["Pericardium"]["text"] == "Effusion."


# --------------------------------------------------------------------------- estimates as estimates
def test_numeric_estimates_carry_their_neighbours_spread_and_clinical_precision(bank):
    [row] = Drafter(bank, DraftSettings(knn_k=3, knn_temperature=None)).draft([_study([0.6, 0.8, 0, 0], [0, 0, 1.0, 0])])
    ef = row["phenotypes"]["ef"]  # LV neighbours st_1 (30, sim 0.8), st_0 and st_3 (60 and 62, sim 0.6)
    w = np.array([0.8, 0.6, 0.6])
    mean = float(np.dot(w, [30, 60, 62]) / w.sum())
    assert ef["value"] == pytest.approx(mean, abs=1e-4)
    assert ef["spread"]["sd"] == pytest.approx(np.sqrt(np.dot(w, (np.array([30, 60, 62]) - mean) ** 2) / w.sum()), abs=1e-4)
    assert ef["spread"]["iqr"] == pytest.approx([45.0, 61.0])
    assert ef["display"] == f"{mean:.0f} % (estimate; neighbours 45-61 %)"
    peri = row["phenotypes"]["pericardial_effusion"]
    assert peri["display"] == (f"{'positive' if peri['call'] else 'negative'} (score {peri['score']:.2f}, "
                               f"threshold {peri['threshold']:.2f})")
    text = render_text(row)
    assert f"ef: {mean:.0f} % (estimate" in text and f"{mean:.3f}" not in text  # no unrounded kNN mean


def test_a_call_is_shown_as_a_call_even_when_the_score_rounds_below_the_threshold():
    from medvid.report.phenotypes import display

    block = {"kind": "binary", "score": 0.15, "threshold": 0.10, "call": 1}
    assert display("reduced_ef", block) == "positive (score 0.15, threshold 0.10)"
    assert display("ef", {"kind": "numeric", "value": 61.835, "method": "linear", "spread": None}) == \
        "62 % (estimate; linear model)"
