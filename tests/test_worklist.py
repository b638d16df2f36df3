"""Worklist logic: priority flags, order (awaiting review first, flags, age), status counts, negation-aware search."""
from __future__ import annotations

from medvid.report.worklist import matches, order, priority_flags, status_counts


def _draft(ef=60.0, effusion=0, pericardium="No pericardial effusion.", conflict=None):
    return {"phenotypes": {"ef": {"kind": "numeric", "value": ef},
                           "pericardial_effusion": {"kind": "binary", "score": 0.9 * effusion, "threshold": 0.5,
                                                    "call": effusion}},
            "sections": {"Pericardium": {"text": pericardium, "conflict": conflict}}}


def test_priority_flags():
    assert priority_flags(_draft()) == []
    assert priority_flags(_draft(ef=25.4)) == ["severe_ef"]
    assert priority_flags(_draft(effusion=1, pericardium="There is a moderate pericardial effusion.")) == ["large_effusion"]
    assert priority_flags(_draft(effusion=1, pericardium="There is a small pericardial effusion.")) == []
    assert priority_flags(_draft(effusion=1, pericardium="Large circumferential pericardial effusion.")) == ["large_effusion"]
    conflict = {"phenotype": "pericardial_effusion", "call": 1}
    assert priority_flags(_draft(ef=20, conflict=conflict)) == ["severe_ef", "conflict"]


def test_order_puts_studies_awaiting_review_first_then_flags_then_age():
    entries = [
        {"study_key": "st_nodraft", "status": "no draft", "time": "2026-01-01"},
        {"study_key": "st_signed", "status": "signed off", "draft": _draft(ef=10), "time": "2026-01-01"},
        {"study_key": "st_new", "status": "draft", "draft": _draft(), "time": "2026-03-01"},
        {"study_key": "st_old", "status": "edited", "draft": _draft(), "time": "2026-02-01"},
        {"study_key": "st_conflict", "status": "draft", "draft": _draft(conflict={"phenotype": "x"}), "time": "2026-04-01"},
        {"study_key": "st_severe", "status": "draft", "draft": _draft(ef=22), "time": "2026-05-01"},
        {"study_key": "st_error", "status": "error"},
    ]
    assert [e["study_key"] for e in order(entries)] == [
        "st_severe", "st_conflict", "st_old", "st_new", "st_signed", "st_error", "st_nodraft"]


def test_status_counts_list_every_status():
    assert status_counts(["draft", "draft", "signed off"]) == {"draft": 2, "edited": 0, "signed off": 1, "error": 0,
                                                               "no draft": 0}


def test_search_respects_negation():
    normal = {"Pericardium": "No pericardial effusion.", "Mitral Valve": "The mitral valve is normal without regurgitation."}
    sick = {"Pericardium": "There is a small pericardial effusion.", "Mitral Valve": "Moderate mitral regurgitation."}
    assert not matches("effusion", normal) and matches("effusion", sick)
    assert not matches("regurgitation", normal) and matches("mitral regurgitation", sick)
    assert matches("no effusion", normal) and not matches("no effusion", sick)
    assert matches("Pericardial  Effusion", sick) and matches("", normal)
    wall = {"Resting Segmental Wall Motion Analysis": "Global hypokinesis with no focal wall motion abnormality."}
    assert matches("hypokinesis", wall) and not matches("abnormality", wall)
    # a positive call matches by name even when the text is silent
    assert matches("effusion", {"Pericardium": ""}, {"pericardial_effusion": {"call": 1}})
    assert not matches("effusion", {"Pericardium": ""}, {"pericardial_effusion": {"call": 0}})
