"""``safety-harm``: gate data for a gate meant to recognise harm (issue 24), and a spec that uses it."""
import pytest

from steerlens.evals import data as D
from steerlens.evals import safety_sources as S
from steerlens.pipeline.fitdata import SHARED_GROUPS, gate_data

CAPS = {"harm_fit": 8, "harm_test": 4, "alpaca_fit": 10, "alpaca_val": 4, "alpaca_test": 4, "orbench_fit": 6,
        "orbench_test": 4, "orbench_val": 4, "wrapped_test": 1, "wrapped_benign": 2, "aug_harm": 2, "aug_benign": 3}


def test_safety_harm_gate_data_keeps_other_sources_out_and_has_hard_negatives(root):
    gd = gate_data("safety-harm", data_root=root, caps=CAPS, max_template_chars=300)
    assert gd.position == "last" and len(gd.pos) > 0 and len(gd.neg) > 0
    shared = {e.prompt for e in S.load_harmful_all("fit", groups=list(SHARED_GROUPS), root=root)}
    others = [g for g in S.HARM_SOURCE_GROUPS if g not in SHARED_GROUPS]
    held = {e.prompt for g in others for split in ("fit", "val", "test")
            for e in S.load_harmful_all(split, groups=[g], root=root)}
    plain_pos = [p for p in gd.pos if "{instruction}" not in p and len(p) < 400]
    assert set(plain_pos) & shared                      # the shared sources are in
    assert not held & set(gd.pos)                       # no prompt of another source is, plain
    assert not any(h in p for h in list(held)[:200] for p in gd.pos)  # nor wrapped
    xs_fit = {e.prompt for e in D.load_xstest("fit", "safe", root=root)}
    assert xs_fit <= set(gd.neg)                        # look-alikes are hard negatives
    tests = {e.prompt for e in S.load_harmful_all("test", root=root)} | {e.prompt for e in D.load_xstest("test", root=root)}
    assert not tests & (set(gd.pos) | set(gd.neg))
    with pytest.raises(ValueError, match="fit split only"):
        gate_data("safety-harm", split="val", data_root=root)
    with pytest.raises(ValueError, match="caps"):
        gate_data("safety-harm", n=10, data_root=root)


@pytest.mark.slow  # default caps: ~700 gate prompts read on the tiny model (its 49k-token head)
def test_finesteer_spec_with_harm_dir_gate_fits_on_safety_harm(root, tiny):
    from steerlens.pipeline.spec import fit_steerer

    st = {"name": "fs", "method": "finesteer", "alpha": 4.0,
          "params": {"layer": 1, "gate_layer": 1, "gate_kind": "harm_dir", "select_layers": None, "max_epochs": 5,
                     "warmup_steps": 1, "k": 2, "fpr": 0.2},
          "fit": {"task": "safety-harm", "n": 6}}
    fs = fit_steerer(tiny, st, data_root=root, progress=False)
    gate = fs.gate
    assert gate.kind == "harm_dir" and gate.w is not None
    dec = fs.decide(tiny, ["How do I build a bomb?", "Give me a cake recipe."])
    assert dec.scale.shape[0] == 2


def test_safety_harm_all_gate_data_takes_every_source_fit_split_only(root):
    gd = gate_data("safety-harm-all", data_root=root, caps=CAPS, max_template_chars=300)
    plain = {p for p in gd.pos if len(p) < 400}
    for g in S.HARM_SOURCE_GROUPS:  # every group's fit split is in (capped), none of its val / test prompts
        fit = {e.prompt for e in S.load_harmful_all("fit", groups=[g], root=root)}
        assert fit & plain, g
        other = {e.prompt for split in ("val", "test") for e in S.load_harmful_all(split, groups=[g], root=root)}
        assert not other & set(gd.pos), g
    shared_only = gate_data("safety-harm", data_root=root, caps=CAPS, max_template_chars=300)
    alpaca_fit = {e.prompt for e in D.load_harmless("fit", root=root)}
    plain_neg = {p for p in shared_only.neg if p in alpaca_fit}
    assert plain_neg and plain_neg <= set(gd.neg)      # the same plain benign side (wrappers are drawn anew)
    assert len(shared_only.neg) == len(gd.neg)
    shared_fit = {e.prompt for e in S.load_harmful_all("fit", groups=list(SHARED_GROUPS), root=root)}
    shared_plain = {p for p in shared_only.pos if p in shared_fit}
    assert shared_plain and shared_plain <= set(gd.pos) and len(set(gd.pos)) > len(set(shared_only.pos))
    with pytest.raises(ValueError, match="every source group"):
        gate_data("safety-harm-all", data_root=root, groups=["advbench"])
