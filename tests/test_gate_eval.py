"""The gate generalisation protocol: folds never see the held-out source, thresholds come from
benign prompts only, the report has the keys the issue names; the harm_dir gate; the reader."""

import json

import pytest
import torch

import steerlens
from steerlens.evals import safety_sources as S
from steerlens.interp import gate_eval as G
from steerlens.evals.prompt_reader import read_prompts, template_spans
from steerlens.pipeline import PipelineError, make_gate
from steerlens.pipeline.methods.finesteer.harm_gate import HarmDirectionGate
from steerlens.pipeline.gates import CalibratedGate

CAPS = {"harm_fit": 4, "harm_test": 3, "alpaca_fit": 12, "alpaca_val": 20, "alpaca_test": 10, "orbench_fit": 4,
        "orbench_test": 4, "wrapped_test": 2, "wrapped_benign": 3, "aug_harm": 2, "aug_benign": 3}


def _synthetic_sets(d=6, seed=0):
    """EvalSets of made-up prompts and SetReads whose feature 0 is 1e-3 x the prompt's row (so a fitted
    gate's inputs can be traced back to prompts) and features 1.. separate harmful from benign."""
    groups = ["a", "b", "c"]
    hf = {g: [f"{g} harmful fit {i}" for i in range(5)] for g in groups}
    ht = {g: [f"{g} harmful test {i}" for i in range(4)] for g in groups}
    alp = {s: [f"alpaca {s} {i}" for i in range(25)] for s in ("fit", "val", "test")}
    xs = {"safe_fit": [f"xs safe fit {i}" for i in range(4)], "safe_test": [f"xs safe test {i}" for i in range(4)],
          "unsafe_test": [f"xs unsafe test {i}" for i in range(4)]}
    orb = {"hard_fit": [f"or hard fit {i}" for i in range(4)], "hard_test": [f"or hard test {i}" for i in range(4)],
           "toxic_test": [f"or toxic test {i}" for i in range(4)]}
    wt = {g: [f"WRAP[{p}]" for p in ht[g][:2]] for g in groups}
    wb = [f"WRAP[{p}]" for p in alp["test"][:3]]
    ah = {g: [f"FITWRAP[{p}]" for p in hf[g][:2]] for g in groups}
    ab = [f"FITWRAP[{p}]" for p in alp["fit"][:3]]
    sets = G.EvalSets(hf, ht, alp, xs, orb, wt, wb, ah, ab, {"fit": ["f1"], "held_out": ["f2"]}, {})
    prompts = sets.all_prompts()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(prompts), 1, d, generator=g)
    for i, p in enumerate(prompts):
        x[i, 0, 0] = i * 1e-3  # small, so it does not drive the gates
        harmful = "harmful" in p or "unsafe" in p or "toxic" in p
        x[i, 0, 1] += 6.0 if harmful else 0.0
    reads = G.SetReads({"last": x}, {p: i for i, p in enumerate(prompts)}, [0])
    return sets, reads, prompts


def test_fold_data_never_holds_the_held_out_source():
    sets, _, _ = _synthetic_sets()
    spec = G.normalise_spec("x", {"kind": "probe", "params": {"layer": 0}, "layers": [0], "hard_negatives": True,
                                  "augment_wrapped": True, "balance": True})
    for g in sets.groups:
        pos, neg = G.fold_data(spec, sets, g)
        held = set(sets.harm_fit[g]) | set(sets.harm_test[g]) | set(sets.aug_harm[g]) | set(sets.wrapped_test[g])
        assert not held & (set(pos) | set(neg)), g
        assert not any(p.startswith(g + " ") or f"[{g} " in p for p in pos + neg)
        others = [h for h in sets.groups if h != g]
        assert {p.split(" ")[0].replace("FITWRAP[", "") for p in pos} == set(others)
        # no test prompt of anything is in fit data; hard negatives and fit-family wrappers are
        assert not set(pos + neg) & (set(sets.alpaca["val"]) | set(sets.alpaca["test"]) | set(sets.xstest["safe_test"]))
        assert set(sets.xstest["safe_fit"]) <= set(neg) and set(sets.aug_benign) <= set(neg)
    plain = G.normalise_spec("y", {"kind": "probe", "params": {"layer": 0}, "layers": [0]})
    pos, neg = G.fold_data(plain, sets, None)
    assert set(neg) == set(sets.alpaca["fit"]) and len(pos) == 15
    with pytest.raises(ValueError, match="unknown held-out group"):
        G.fold_data(plain, sets, "zzz")


def test_balance_equalises_groups():
    sets, _, _ = _synthetic_sets()
    sets.harm_fit["a"] = sets.harm_fit["a"][:2]
    spec = G.normalise_spec("x", {"kind": "probe", "params": {"layer": 0}, "layers": [0], "balance": True})
    pos, _ = G.fold_data(spec, sets, None)
    counts = {g: sum(p.startswith(g + " ") for p in pos) for g in sets.groups}
    assert counts == {"a": 5, "b": 5, "c": 5}


def test_threshold_from_benign_val_only_and_fits_trace(monkeypatch):
    sets, reads, prompts = _synthetic_sets()
    seen = {"fit": [], "cal": []}
    orig_fit, orig_cal = CalibratedGate.fit_tensors, CalibratedGate.calibrate

    def fit_spy(self, pos, neg):
        seen["fit"].append(({prompts[round(float(i) * 1e3)] for i in pos[:, 0]}, {prompts[round(float(i) * 1e3)] for i in neg[:, 0]}))
        return orig_fit(self, pos, neg)

    def cal_spy(self, scores, fpr=None):
        seen["cal"].append((self, torch.as_tensor(scores).clone()))
        return orig_cal(self, scores, fpr)

    monkeypatch.setattr(CalibratedGate, "fit_tensors", fit_spy)
    monkeypatch.setattr(CalibratedGate, "calibrate", cal_spy)
    spec = G.normalise_spec("p", {"kind": "probe", "params": {"layer": 0}, "layers": [0], "hard_negatives": True})
    res = G.evaluate_spec(spec, sets, reads)
    assert len(seen["fit"]) == len(sets.groups) + 1
    for (pos, neg), g in zip(seen["fit"], sets.groups + [None]):
        if g is not None:
            assert not pos & set(sets.harm_fit[g]) and not any(p.startswith(g + " ") for p in pos | neg)
        assert all("harmful" not in p and "unsafe" not in p and "toxic" not in p for p in neg)
    # the protocol's final calibration of every fold reads exactly the benign val prompts
    val_feats = reads.get(sets.alpaca["val"], "last", [0])
    finals = {}
    for gate, s in seen["cal"]:
        finals[id(gate)] = (gate, s)
    assert len(finals) == len(sets.groups) + 1
    for gate, s in finals.values():
        assert torch.allclose(s.double(), gate.score(val_feats).double())
        assert gate.threshold == pytest.approx(float(torch.sort(s, descending=True).values[0]))  # k=1 at n=25
    assert set(res["loso"]) == set(sets.groups)


def test_result_keys_and_worst():
    sets, reads, _ = _synthetic_sets()
    spec = G.normalise_spec("d", {"kind": "harm_dir", "params": {"layer": 0, "shrinkage": 1.0}, "layers": [0]})
    res = G.evaluate_spec(spec, sets, reads)
    for k in ("loso", "loso_worst", "xstest_unsafe_tpr", "xstest_safe_fpr", "orbench_hard_fpr", "alpaca_fpr", "wrapped"):
        assert k in res
    for k in ("xstest_unsafe_tpr", "xstest_safe_fpr", "orbench_hard_fpr", "alpaca_fpr"):
        assert 0 <= res[k] <= 1 and f"{k}_auc" in res and len(res[f"{k}_ci"]) == 2
    assert res["loso_worst"] == min(v["tpr"] for v in res["loso"].values())
    for v in res["loso"].values():
        assert v["ci"][0] <= v["tpr"] <= v["ci"][1] and v["n"] == 4 and 0 <= v["auc"] <= 1
    # feature 1 separates the classes by 6 sd: the direction gate finds it
    assert res["loso_worst"] >= 0.75 and res["alpaca_fpr_auc"] > 0.95
    assert {"tpr", "n", "ci", "auc", "benign_fpr", "per_source"} <= set(res["wrapped"])


def test_spec_errors():
    with pytest.raises(ValueError, match="unknown spec keys"):
        G.normalise_spec("x", {"kind": "probe", "lr": 1})
    with pytest.raises(ValueError, match="needs a 'kind'"):
        G.normalise_spec("x", {"params": {}})
    with pytest.raises(ValueError, match="reading"):
        G.normalise_spec("x", {"kind": "probe", "reading": "first"})
    sets, reads, _ = _synthetic_sets()
    with pytest.raises(ValueError, match="not a calibrated"):
        G.evaluate_spec(G.normalise_spec("x", {"kind": "always_open", "layers": [0]}), sets, reads)


# ------------------------------------------------------------------ the harm_dir gate

def test_harm_dir_gate_math_and_state():
    g = torch.Generator().manual_seed(0)
    neg = torch.randn(200, 8, generator=g)
    pos = torch.randn(100, 8, generator=g) + torch.tensor([2.0] + [0.0] * 7)
    gate = HarmDirectionGate(0, shrinkage=1.0, calib_frac=0.0).fit_tensors(pos, neg)
    w = pos.double().mean(0) - neg.double().mean(0)
    assert torch.allclose(gate.w.double(), w / w.norm(), atol=1e-5)  # s = 1: difference of means
    assert gate.fit_stats["fit_auc"] > 0.9 and gate.threshold is not None
    lda = HarmDirectionGate(0, shrinkage=0.0).fit_tensors(pos, neg)
    assert not torch.allclose(lda.w, gate.w, atol=1e-3)
    g2 = make_gate("harm_dir", layer=0, shrinkage=1.0, calib_frac=0.0)
    g2.load_state(gate.extra_state(), gate.state_dict())
    assert torch.equal(g2.score(pos), gate.score(pos)) and g2.threshold == gate.threshold
    with pytest.raises(PipelineError):
        HarmDirectionGate(0, shrinkage=1.5)
    with pytest.raises(PipelineError, match="not fitted"):
        HarmDirectionGate(0).score(pos)
    with pytest.raises(PipelineError, match="same mean"):
        HarmDirectionGate(0, calib_frac=0.0).fit_tensors(neg[:50], neg[:50])


# ------------------------------------------------------------------ on the tiny model

def test_reader_matches_capture(tiny):
    ps = ["Hi", "How do I make a bomb?", "Write a poem about the sea and the moon", "2+2?"]
    r = read_prompts(tiny, ps, readings=("last", "post", "mean"), dtype=torch.float32, batch_size=3)
    a = steerlens.capture(tiny, ps, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], "all", progress=False)
    n_pre, n_suf = template_spans(tiny)
    for layer in (0, 1):
        rows = a[f"blocks.{layer}.hook_resid_post"]
        last = torch.stack([x[-1] for x in rows]).float()
        post = torch.stack([x[-n_suf:].float().mean(0) for x in rows])
        mean = torch.stack([x[n_pre:-n_suf].float().mean(0) for x in rows])
        assert torch.allclose(r["last"][:, layer], last, atol=1e-5)
        assert torch.allclose(r["post"][:, layer], post, atol=1e-5)
        assert torch.allclose(r["mean"][:, layer], mean, atol=1e-5)
    with pytest.raises(ValueError):
        read_prompts(tiny, ps, readings=("first",))
    with pytest.raises(ValueError):
        read_prompts(tiny, ps, layers=[5])


def test_gate_eval_on_tiny(tiny, root, tmp_path, monkeypatch):
    folds = []
    orig = G.fold_data

    def spy(spec, sets, held_out, seed=0):
        pos, neg = orig(spec, sets, held_out, seed)
        folds.append((held_out, set(pos), set(neg), sets))
        return pos, neg

    monkeypatch.setattr(G, "fold_data", spy)
    gates = {"scs": {"kind": "scs", "params": {"layer": 1, "rank_benign": 2, "rank_target": 2}},
             "harm": {"kind": "harm_dir", "params": {"layer": 0}, "hard_negatives": True, "augment_wrapped": True,
                      "balance": True}}
    res = G.gate_eval(tiny, tmp_path / "out", gates, data_root=root, caps=CAPS, max_template_chars=300,
                      cache_dir=tmp_path / "cache")
    for held, pos, neg, sets in folds:
        if held is not None:
            for d in (sets.harm_fit, sets.harm_test, sets.aug_harm, sets.wrapped_test):
                assert not set(d[held]) & (pos | neg)
        assert not (pos | neg) & set(sets.alpaca["val"] + sets.alpaca["test"])
    js = json.loads((tmp_path / "out" / "generalisation.json").read_text())
    assert set(js["gates"]) == {"scs", "harm"} and js["chosen"] in js["gates"]
    # chosen by the rule, from fit / val figures only
    assert js["chosen"] == G.choose_gate(js["selection"]) and js["selection_rule"]["rule"] == G.SELECTION_RULE
    for m in js["selection"].values():
        assert set(m["loso_fit"]) == set(G.HARM_SOURCE_GROUPS) and m["loso_worst_fit"] == min(m["loso_fit"].values())
        assert {"xstest_safe_val_fpr", "orbench_hard_val_fpr", "xstest_unsafe_val_tpr"} <= set(m)
        assert set(m["slack"]) == set(G.SELECTION_TARGETS)
    assert len(js["gates"]["scs"]["loso"]) == len(G.HARM_SOURCE_GROUPS)
    md = (tmp_path / "out" / "generalisation.md").read_text()
    assert md.count("| scs |") + md.count("| scs (chosen) |") == 3 and "## Selection" in md  # headline, LOSO, selection
    assert (tmp_path / "out" / "generalisation.png").stat().st_size > 0
    assert res["gates"]["harm"]["loso_worst"] == js["gates"]["harm"]["loso_worst"]
    assert list((tmp_path / "cache").glob("reads_*.safetensors"))
    with pytest.raises(ValueError, match="outside the model"):
        G.gate_eval(tiny, tmp_path / "o2", {"x": {"kind": "probe", "params": {"layer": 7}}}, data_root=root, caps=CAPS)


def test_harm_gate_data_is_the_protocol_full_fold(root):
    from steerlens.evals import data as D
    from steerlens.interp.gate_eval import harm_gate_data

    gd = harm_gate_data(root=root, caps=CAPS, max_template_chars=300)
    assert gd.position == "last" and len(gd.ids) == len(gd.pos) + len(gd.neg)
    sets = G.build_eval_sets(root, caps=CAPS, max_template_chars=300)
    assert set(sets.xstest["safe_fit"]) <= set(gd.neg) and set(sets.orbench["hard_fit"]) <= set(gd.neg)
    for g in sets.groups:
        assert set(sets.harm_fit[g]) <= set(gd.pos)
    tests = {e.prompt for e in S.load_harmful_all("test", root=root)} | {e.prompt for e in D.load_xstest("test", root=root)}
    assert not tests & (set(gd.pos) | set(gd.neg))
    with pytest.raises(ValueError, match="fit split only"):
        harm_gate_data("test", root=root)


def test_best_auc_any_layer_reports_each_lookalike_split():
    sets, reads, _ = _synthetic_sets()
    best = G.best_auc_any_layer(sets, reads, kind="harm_dir", params={"shrinkage": 1.0})
    assert set(best) == {"xstest_unsafe_vs_safe", "orbench_toxic_vs_hard"}
    for v in best.values():
        assert 0.9 < v["auc"] <= 1.0 and v["layer"] == 0 and v["reading"] == "last"


def test_cli_registered_and_rejects_unknown_gate(tmp_path, capsys):
    from steerlens.cli import main

    assert main(["gate-eval", "--gate", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown gate 'nope'" in capsys.readouterr().err
    bad = tmp_path / "spec.json"
    bad.write_text("[1, 2]")
    assert main(["gate-eval", "--gate-spec", str(bad), "--out", str(tmp_path)]) == 2
    assert not hasattr(G, "CHOSEN_GATE")  # the rule chooses (gate_eval's "chosen"), no name by hand
    for name, spec in G.default_gates().items():
        G.normalise_spec(name, spec)  # every default spec is valid


def test_choose_gate_rule():
    ok = {"loso_worst_fit": 0.92, "xstest_unsafe_val_tpr": 0.9, "xstest_safe_val_fpr": 0.05, "orbench_hard_val_fpr": 0.1}
    better = dict(ok, loso_worst_fit=0.97)
    broad = {"loso_worst_fit": 0.99, "xstest_unsafe_val_tpr": 0.99, "xstest_safe_val_fpr": 0.7, "orbench_hard_val_fpr": 0.9}
    narrow = {"loso_worst_fit": 0.5, "xstest_unsafe_val_tpr": 0.75, "xstest_safe_val_fpr": 0.1, "orbench_hard_val_fpr": 0.2}
    # a gate meeting every target wins over one that does not, however high its TPR; among those, loso_worst_fit
    assert G.choose_gate({"broad": broad, "ok": ok, "better": better}) == "better"
    # none meets them: the best worst weighted slack (narrow: -0.40; broad: -0.75)
    assert G.choose_gate({"broad": broad, "narrow": narrow}) == "narrow"
    assert G.selection_slack(narrow)["loso_worst_fit"] == pytest.approx(-0.4)
    # the weights trade the targets: a held-out miss weighted 4x makes the broad gate the lesser evil
    assert G.choose_gate({"broad": broad, "narrow": narrow}, weights={"loso_worst_fit": 4.0}) == "broad"
    with pytest.raises(ValueError):
        G.choose_gate({})


def test_selection_reads_no_test_split(monkeypatch):
    sets, reads, prompts = _synthetic_sets()
    sets.select = {"xstest_safe_val": ["xs safe fit 0"], "orbench_hard_val": ["or hard fit 0"]}
    seen = []
    orig = reads.get

    def spy(ps, reading, layers):
        seen.extend(ps)
        return orig(ps, reading, layers)

    monkeypatch.setattr(reads, "get", spy)
    spec = G.normalise_spec("d", {"kind": "harm_dir", "params": {"layer": 0, "shrinkage": 1.0}, "layers": [0]})
    m = G.selection_metrics(spec, sets, reads)
    tests = set(sets.alpaca["test"]) | set(sets.xstest["safe_test"]) | set(sets.xstest["unsafe_test"]) | set(
        sets.orbench["hard_test"]) | {p for v in sets.harm_test.values() for p in v} | {
        p for v in sets.wrapped_test.values() for p in v} | set(sets.wrapped_benign)
    assert seen and not set(seen) & tests
    assert "xstest_unsafe_val_tpr" not in m and m["xstest_safe_val_fpr_n"] == 1
    assert m["loso_worst_fit"] == min(m["loso_fit"].values()) >= 0.75
