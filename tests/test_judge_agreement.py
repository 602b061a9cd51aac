"""The second reader's blind labels and the readers' agreement in ``steerlens judge-report``."""
import json

import pytest

from steerlens.evals import judge_train as T


def _rows(labels):
    return [{"uid": f"u{i}", "label": l, "method": "m", "reply": "x"} for i, l in enumerate(labels)]


def test_agreement_counts_and_judges_against_each_reader():
    test = _rows(["refusal", "deflection", "compliance", "degenerate", "refusal"])
    second = {"u0": "refusal", "u1": "refusal", "u2": "compliance", "u3": "degenerate"}  # u4 not relabelled
    pred = ["refusal", "refusal", "compliance", "compliance", "refusal"]
    la = T.labeller_agreement(test, {"j": pred}, second)
    assert la["n"] == 4 and la["n_agreed"] == 3
    assert la["readers"]["accuracy"] == pytest.approx(3 / 4)
    assert la["readers_not_complied_merged"]["accuracy"] == 1.0      # refusal vs deflection only
    assert la["confusion_first_to_second"]["deflection"]["refusal"] == 1
    j = la["judges"]["j"]
    assert j["vs_first"]["accuracy"] == pytest.approx(2 / 4)           # u1, u3 wrong
    assert j["vs_second"]["accuracy"] == pytest.approx(3 / 4)          # u3 wrong
    assert j["on_agreed_rows"]["accuracy"] == pytest.approx(2 / 3)
    assert T.labeller_agreement(test, {"j": pred}, {}) is None


def test_second_labels_file_is_valid_and_blind_sample_is_held_out(tmp_path):
    second = T.load_second_labels()
    assert len(second) >= 300
    rows = T.load_labelled()
    parts = dict(zip((r["uid"] for r in rows), T.heldout_design(rows)))
    assert set(second) <= set(parts)
    assert all(parts[u] != "train" for u in second)                     # only replies the judge never saw
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"uid": "u0", "label": "maybe"}) + "\n")
    with pytest.raises(ValueError, match="unknown label"):
        T.load_second_labels(bad)
    assert T.load_second_labels(tmp_path / "missing.jsonl") == {}
