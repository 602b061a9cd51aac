"""Smoke tests of what produces the headline numbers: the main job (``steerlens demo --quick``,
with its all-steerers-together table) and each experiment script's ``--quick`` mode, all on the
tiny random model and the benchmark data (skipped without it). They check that every stage runs
and writes what the README's tables are copied from, not the numbers (a random model's).

Marked slow: on this machine's shared 2 cores each takes 25-110 s (demo ~100 s, odesteer ~110 s,
scs_gate / gate_generalisation ~60 s, finesteer ~35 s per task, real_vs_iti ~25 s), mostly greedy
generation: the tiny model keeps SmolLM2's 49k-token vocabulary, so its LM head costs as much per
token as the real model's. The follow-up scripts gate_generalisation_{read,read_reverse,bestauc,
probe,scs}.py (module-level, fixed layers 14/16 and the default model) have no quick mode yet.
"""

import argparse
import copy
import json

import pytest

import steerlens
from steerlens import demo

pytestmark = pytest.mark.slow


def _tiny_layers(obj, n_layers: int):
    """The spec with every layer index folded onto the tiny model's layers (selector candidates
    become all of its layers)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("layer", "gate_layer") and isinstance(v, int):
                out[k] = min(v, n_layers - 1)
            elif k == "layers" and isinstance(v, list):
                out[k] = list(range(n_layers))
            else:
                out[k] = _tiny_layers(v, n_layers)
        return out
    if isinstance(obj, list):
        return [_tiny_layers(v, n_layers) for v in obj]
    return obj


def test_demo_quick_runs_on_the_tiny_model(tiny, root, tmp_path, monkeypatch, capsys):
    spec = _tiny_layers(demo.main_spec(), tiny.n_layers)
    for st in spec["steerer"] + spec["baseline"]:
        st["fit"]["n"] = 8  # quick_spec keeps min(n, 32)
    monkeypatch.setattr(demo, "main_spec", lambda: copy.deepcopy(spec))
    quick = demo.quick_spec

    def quicker(s):  # the 2-layer model's 49k-token head makes each generated token cost as much as SmolLM2's
        s = quick(s)
        s["eval"]["max_new_tokens"] = 4
        for st in s["steerer"]:
            if st["method"] == "odesteer":
                st["params"]["n_features"] = 200
        return s
    monkeypatch.setattr(demo, "quick_spec", quicker)
    monkeypatch.setattr(steerlens, "load_model", lambda *a, **k: tiny)
    out = tmp_path / "demo"
    args = argparse.Namespace(out=str(out), data_dir=str(root), quick=True, limit=2)
    assert demo.run_demo(args) == 0
    text = (out / "main.md").read_text()
    pipeline = spec["name"]
    names = [s["name"] for s in spec["steerer"]]
    for config in ["unsteered", "caa", pipeline, *names]:
        assert f"| {config} |" in text, config  # a row of the one table per configuration
    for _, title in demo.TABLE:
        assert title in text, title
    together = text.split("## Both steerers vs each alone")[1]
    assert sum(f"| {pipeline} | {n} |" in together for n in names) == len(names)  # both steerers together vs each
    sbs = json.loads((out / "side_by_side.json").read_text())
    assert {r["kind"] for r in sbs} == {"HARMFUL", "HARMLESS"} and all(pipeline in r for r in sbs)
    assert "[4/4]" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# experiments/*.py --quick (imported from experiments/, run in-process through main(argv))


def test_finesteer_experiment_quick_safety(root, tmp_path):
    import finesteer

    out = tmp_path / "fs"
    assert finesteer.main(["safety", "--quick", "--out", str(out)]) == 0
    assert (out / "results.jsonl").exists() and (out / "summary.json").exists()


def test_finesteer_experiment_quick_truthfulness(root, tmp_path):
    import finesteer

    out = tmp_path / "fs"
    assert finesteer.main(["truthfulness", "--quick", "--out", str(out)]) == 0
    assert (out / "results.jsonl").exists()


def test_finesteer_experiment_quick_presets_and_report(root, tmp_path):
    """The paper-preset measurement (docs/results/fidelity/mose.*): MoSE per preset and CAA on the
    TruthfulQA fit / val / test splits, K per rule, routing specialisation, the safety routing run
    and the report built from both."""
    import finesteer

    assert finesteer.split_name(finesteer.method_name("mose", "paper_eq")) == ("mose", "paper_eq")
    assert finesteer.expand_methods(["caa", "mose"], ["paper", "default"]) == ["caa", "mose-paper", "mose"]
    tq, sf, rep = tmp_path / "tq", tmp_path / "sf", tmp_path / "rep"
    assert finesteer.main(["truthfulness", "--quick", "--scheme", "splits", "--preset", "paper,default",
                           "--methods", "caa,mose", "--alphas-paper", "1,2.5", "--out", str(tq)]) == 0
    r = json.loads((tq / "mose_report.json").read_text())
    assert set(r["steerers"]) == {"mose-paper", "mose"} and r["n_test"] == 4 and r["n_val"] == 4
    paper, ours = r["steerers"]["mose-paper"], r["steerers"]["mose"]
    assert paper["params"]["query_offset"] == -1 and paper["k_rule_used"] == "median" and ours["k_rule_used"] == "ch"
    assert 4 <= paper["k"] <= 10 and paper["k"] == sorted([paper["k_elbow"], paper["k_silhouette"],
                                                           paper["k_ch_median_range"]])[1]
    assert sum(paper["cluster_sizes"]) == paper["n_pairs"] == r["n_fit_pairs"] == 16
    spec = paper["specialisation"]["category"]
    assert spec["n"] == r["routed"]["n"] > 100 and 0 < spec["p_value"] <= 1 and spec["n_perm"] == 2000
    summ = json.loads((tq / "summary.json").read_text())
    assert {v["alpha"] for v in summ["val"] if v["method"] == "mose-paper"} == {1.0, 2.5}
    assert any(d["a"] == "mose-paper" and d["b"] == "caa" and d["metric"] == "truthfulqa/mc2" for d in summ["paired"])
    assert finesteer.main(["safety", "--quick", "--routing-only", "--preset", "paper", "--out", str(sf)]) == 0
    s = json.loads((sf / "mose_report.json").read_text())
    sp = s["steerers"]["mose-paper"]["specialisation"]
    assert set(s["steerers"]) == {"mose-paper"} and set(sp) == {"category", "source", "category_where_given"}
    assert sp["category"]["n"] == sp["source"]["n"] == s["routed"]["n"] > sp["category_where_given"]["n"] > 0
    assert finesteer.main(["report", "--out", str(rep), "--truthfulness-run", str(tq), "--safety-run", str(sf)]) == 0
    md = (rep / "mose.md").read_text()
    assert "| mose-paper − caa |" in md and "Safety: K" in md and f"**{paper['k']}**" in md
    assert json.loads((rep / "mose.json").read_text())["safety"]["mose"]["n_fit_pairs"] == 16


def test_finesteer_experiment_quick_authors_data(root, tmp_path):
    """``--fit-data authors``: MoSE and CAA fitted on FineSteer's own TruthfulQA pairs (fit task
    truthfulness-mose: system prompt, instruction, closed turn); bad combinations are refused."""
    import finesteer

    tq = tmp_path / "tq"
    assert finesteer.main(["truthfulness", "--quick", "--scheme", "splits", "--preset", "paper",
                           "--methods", "caa,mose", "--alphas-paper", "2.5", "--alphas-caa", "1",
                           "--fit-data", "authors", "--out", str(tq)]) == 0
    r = json.loads((tq / "mose_report.json").read_text())
    assert r["fit_data"] == {"name": "authors", "task": "truthfulness_mose", "system": finesteer.D.MOSE_SYSTEM, "close_turn": True}
    assert list(tq.glob("acts_tqa_authors_fit_L*.pt"))
    with pytest.raises(SystemExit):
        finesteer.main(["safety", "--quick", "--fit-data", "authors", "--out", str(tmp_path / "x")])


def test_odesteer_experiment_quick(root, tmp_path):
    import odesteer

    out = tmp_path / "ode"
    assert odesteer.main(["--quick", "--out", str(out)]) == 0
    stages = [json.loads(line)["stage"] for line in (out / "timing.jsonl").read_text().splitlines()]
    assert stages == list(odesteer.STAGES)


def test_odesteer_paper_experiment_quick(root, tmp_path):
    import odesteer_paper

    out = tmp_path / "odp"
    assert odesteer_paper.main(["--quick", "--out", str(out), "--max-kl", "1e9"]) == 0
    s = json.loads((out / "odesteer_mc.json").read_text())
    assert s["kl_budget"]["chosen"] == s["chosen"] and set(s["kl_budget"]["test"]) == set(s["test"])
    methods = set(odesteer_paper.grids(odesteer_paper.argparse.Namespace(**s["args"])))
    assert set(s["chosen"]) == methods and set(s["test"]) == methods | {"none"}
    assert set(s["paired_odesteer_paper_minus"]) == methods - {"odesteer_paper"}
    assert all(0.0 <= d["truthfulqa/mc2"]["value"] <= 1.0 for d in s["test"].values())
    assert s["fit"]["odesteer_paper_t_scale"] > 0
    assert {(r["method"], r["alpha"]) for r in s["val"] if r["metric"] == "utility/kl"} == {
        (m, a) for m, grid in s["grids"].items() for a in grid}
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{odesteer_paper.DOC_BEGIN}\nold\n{odesteer_paper.DOC_END}\nafter\n")
    odesteer_paper.render_docs(out / "odesteer_mc.json", doc)
    text = doc.read_text()
    assert "old" not in text and "| odesteer_paper |" in text and text.endswith("after\n")


def test_scs_gate_experiment_quick(root, tmp_path):
    import scs_gate

    out = tmp_path / "scs"
    assert scs_gate.main(["--quick", "--out", str(out)]) == 0
    assert "gate" in (out / "report.md").read_text().lower()


def test_real_vs_iti_experiment_quick(root, tmp_path):
    import real_vs_iti

    out = tmp_path / "rvi"
    assert real_vs_iti.main(["--task", "truthfulness", "--quick", "--out", str(out)]) == 0
    assert (out / "summary.json").exists()


def test_gate_generalisation_experiment_quick(root, tmp_path):
    import gate_generalisation

    assert gate_generalisation.main(["--quick", "--work", str(tmp_path), "--data-dir", str(root)]) == 0
    sel = json.loads((tmp_path / "research" / "selection.json").read_text())
    assert sel["best_deployable"]["layers"] == [1] and 0.0 <= sel["best_deployable"]["sel_worst"] <= 1.0


def test_gate_reachability_experiment_quick(root, tmp_path):
    import gate_reachability

    out = tmp_path / "reach.json"
    res = gate_reachability.main(["--quick", "--data-dir", str(root), "--out", str(out)])
    saved = json.loads(out.read_text())
    for task in ("xstest_unsafe_vs_safe", "orbench_toxic_vs_hard"):
        t = saved["tasks"][task]
        assert 0.0 <= t["best_tpr_at_target_fpr"]["tpr_at_fpr"] <= 1.0 and 0.0 <= t["best_auc"]["auc"] <= 1.0
        assert t["reachable"] == (t["best_tpr_at_target_fpr"]["tpr_at_fpr"] >= t["target_tpr"])
    assert res["tasks"].keys() == saved["tasks"].keys()
    # --merge adds another layer's settings to one pair and keeps the rest of the saved result
    gate_reachability.main(["--quick", "--data-dir", str(root), "--out", str(out), "--layers", "0",
                            "--task", "orbench_toxic_vs_hard", "--merge"])
    merged = json.loads(out.read_text())
    t, t0 = merged["tasks"]["orbench_toxic_vs_hard"], saved["tasks"]["orbench_toxic_vs_hard"]
    assert t["layers"] == sorted({0} | {r["layer"] for r in t0["settings"]})
    assert len(t["settings"]) == len(t0["settings"]) + 1
    assert t["best_auc"]["auc"] == max(r["auc"] for r in t["settings"]) >= t0["best_auc"]["auc"]
    assert merged["tasks"]["xstest_unsafe_vs_safe"] == saved["tasks"]["xstest_unsafe_vs_safe"]


def test_gate_e2e_experiment_quick(root, tmp_path):
    import gate_e2e

    assert gate_e2e.main(["--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "gate_e2e.json").read_text())
    assert set(res["results"]) == {"unsteered", "finesteer_scs", "finesteer_harm"}
    for cond, rows in res["results"].items():
        assert set(rows) == set(res["sets"])
        for r in rows.values():
            assert 0.0 <= r["refusal"] <= 1.0 and len(r["not_complied"]) == r["n"]
            assert ("gate_open" in r) == (cond != "unsteered")
    assert "Paired difference" in (tmp_path / "gate_e2e.md").read_text()


def test_gate_loso_e2e_quick(root, tmp_path):
    """Leave-one-source-out end to end on the tiny model: every gate and source has its figures,
    a held-out source's in-distribution and held-out rows cover the same prompts, and the shortcut
    (closed gate -> the unsteered reply, open gate -> the always-open reply) equals a gated run."""
    import gate_loso_e2e

    assert gate_loso_e2e.main(["--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    res = json.loads((tmp_path / "loso_e2e.json").read_text())
    assert set(res["gates"]) == {"scs", "probe", "harm", "scs_bal"}
    for r in res["gates"].values():
        assert set(r["sources"]) == set(res["groups"])
        for g, s in r["sources"].items():
            assert s["held_out"]["n"] == s["in_dist"]["n"] == res["n"][g]
            assert abs(s["gap"]["diff"] - (s["held_out"]["rate"] - s["in_dist"]["rate"])) < 1e-9
        assert set(r["benign"]) == {"alpaca", "xstest_safe", "orbench_hard"}
    v = res["verify"]
    assert v["decisions_equal"] == v["n"] and v["replies_equal"] == v["n"]
    # a rerun generates nothing new (the replies file is complete) and gives the same figures
    lines = (tmp_path / "replies.jsonl").read_text().count("\n")
    assert gate_loso_e2e.main(["--quick", "--out", str(tmp_path), "--threads", "1"]) == 0
    assert (tmp_path / "replies.jsonl").read_text().count("\n") == lines
    assert json.loads((tmp_path / "loso_e2e.json").read_text())["gates"] == res["gates"]


def test_odesteer_authors_experiment_quick(root, tmp_path):
    """experiments/odesteer_authors.py: the paper preset on the authors' rows and on pairs, scored in
    plain and chat MC formats; θ chosen on val, paired differences on test in the same format."""
    import odesteer_authors as oa

    out = tmp_path / "oa"
    assert oa.main(["--quick", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    rows = oa.D.truthfulness_ode_rows("fit", 8, 0)
    assert (s["fit"]["rows"]["n_pos"], s["fit"]["rows"]["n_neg"]) == (len(rows.pos), len(rows.neg))
    assert s["fit"]["pairs"]["n_pos"] == s["fit"]["pairs"]["n_neg"] == 12
    assert set(s["chosen"]) == set(oa.CONFIGS) and all(t in (0.1, 0.2) for t in s["chosen"].values())
    assert set(s["test"]) == {"none/qa", "none/chat", *oa.CONFIGS}
    assert set(s["paired_vs_unsteered"]) == set(oa.CONFIGS) and s["paired_vs_unsteered"]["rows/qa"]["mc2"]["n"] == 4
    # resuming computes nothing new
    n_lines = len((out / "results.jsonl").read_text().splitlines())
    assert oa.main(["--quick", "--out", str(out)]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == n_lines == 2 + 3 * 2 + 2 + 3
