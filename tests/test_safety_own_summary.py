"""experiments/safety_own.py: the saturation and routing summaries it writes come from the saved
files and count what they say (synthetic inputs, no model)."""

import json

import safety_own as so


def _ranking(tmp_path, scores, task="safety-own"):
    p = tmp_path / f"{task}.json"
    p.write_text(json.dumps({"score_name": "heldout_auc_markov", "selected": ["a", "b"],
                             "ranking": [{"score": s} for s in scores] + [{"score": None}],
                             "run": {"task": task, "n_pairs": 10}}))
    return p


def test_saturation_counts_heads_at_the_bar(tmp_path):
    s = so.saturation(_ranking(tmp_path, [1.0, 1.0, 0.995, 0.98, 0.5]))
    assert (s["n_heads"], s["n_ge_0.99"], s["n_at_1"]) == (5, 3, 2)
    assert s["frac_ge_0.99"] == 0.6 and s["max"] == 1.0 and s["median"] == 0.995 and s["h_th"] == 1.0
    s = so.saturation(_ranking(tmp_path, [0.9, 0.7, 0.6]))
    assert s["n_ge_0.99"] == 0 and s["h_th"] == 0.7


def test_routing_and_render(tmp_path):
    spec = {"statistic": 0.02, "null_mean": 0.01, "p_value": 0.001, "n": 8, "nmi_top_expert_category": 0.1,
            "top_expert_counts": [5, 3], "mean_entropy": 0.5, "uniform_entropy": 0.69, "n_perm": 2000}
    rep = {"n_fit_pairs": 10, "fit_data": {"name": "own"}, "routed": {"set": "harmful val", "n": 8},
           "steerers": {"mose-paper": {"k": 2, "k_elbow": 3, "k_silhouette": 2, "k_ch_median_range": 2,
                                       "cluster_sizes": [6, 4], "mean_weights": [0.6, 0.4], "other": 1,
                                       "specialisation": {"category": spec}}}}
    (tmp_path / "mose_report.json").write_text(json.dumps(rep))
    m = so.routing(tmp_path / "mose_report.json")
    assert "other" not in m["steerers"]["mose-paper"] and "n_perm" not in m["steerers"]["mose-paper"]["specialisation"]["category"]
    counts = {"prompts": 4, "replies": 40, "replies_plain": 8, "replies_elicited": 32, "refusals": 5, "refusals_plain": 1,
              "compliances": 30, "set_aside": {}, "prompts_with_both": 3, "pairs": 3}
    md = so.render({"own_pairs": {"counts": counts}, "mose": m,
                    "real": {"own replies": so.saturation(_ranking(tmp_path, [0.9, 0.995]))}})
    assert "**3 pairs**" in md and "1 of 2 (50.0%)" in md and "| mose-paper | 2 (3 / 2 / 2) |" in md


def test_tqa_gen_summary_pairs_methods_with_the_unsteered_rows(tmp_path):
    """experiments/tqa_gen_summary.py: True = BLEU accuracy, True × Info both, paired on question ids."""
    import tqa_gen_summary as tg

    def run(name, steer, alpha, rows):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps({"meta": {"alpha": alpha}, "records": []}))
        (d / "samples.jsonl").write_text("\n".join(json.dumps({"steering": s, "id": i, "bleu_acc": t, "informative": f})
                                                   for s, i, t, f in rows))
        return d

    base = [("none", f"q{i}", i % 2 == 0, True) for i in range(4)]
    a = run("a", "x", 0.5, base + [("x", f"q{i}", True, i != 3) for i in range(4)])
    b = run("b", "y", 2.0, base + [("y", f"q{i}", False, True) for i in range(4)])
    s = tg.summarize([a, b])
    assert set(s["methods"]) == {"none", "x (α 0.5)", "y (α 2)"}
    assert s["methods"]["none"]["true_info"]["value"] == 0.5 and s["methods"]["x (α 0.5)"]["true_info"]["value"] == 0.75
    assert s["paired_vs_unsteered"]["x (α 0.5)"]["true"]["value"] == 0.5
    assert s["paired_vs_unsteered"]["y (α 2)"]["true_info"]["value"] == -0.5
    assert "| y (α 2) |" in tg.render(s)
