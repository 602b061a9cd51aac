"""Sweeps, the results table and the CLI, on the tiny model with tiny eval sizes."""

import json

import pytest
import torch

from steerlens.cli import main
from steerlens.pipeline import PipelineError, load_steerer, make_steerer
from steerlens.pipeline.sweep import fit_data, fit_settings, results_table, sweep


def test_h_sweep_recut_equals_direct_fit(tiny, root):  # root: skips without data
    data = fit_data("truthfulness", n=10, seed=0)
    fitted = fit_settings(tiny, "iti", data, heads=[2, 5])
    assert [s for s, _ in fitted] == [{"heads": 2}, {"heads": 5}]
    direct = make_steerer("iti", heads=2).fit(tiny, data)
    recut = fitted[0][1]
    assert recut.selection.modules == direct.selection.modules
    for k, v in direct.state_dict().items():
        torch.testing.assert_close(recut.state_dict()[k], v)


def test_layer_sweep_shares_capture_and_matches_direct_fit(tiny, root):
    data = fit_data("safety", n=6, seed=0)
    fitted = fit_settings(tiny, "caa", data, layers=[0, 1])
    direct = make_steerer("caa", layer=0).fit(tiny, data)
    torch.testing.assert_close(fitted[0][1].state_dict()["editor.vector.0"], direct.state_dict()["editor.vector.0"],
                               atol=1e-5, rtol=1e-4)
    assert fitted[1][1].selection.sites()[0].layer == 1


def test_sweep_end_to_end(tiny, tmp_path, root):
    res = sweep(tiny, "caa", "safety", alphas=[0, 2], layers=[1], n_fit=6, eval_limit=2, max_new_tokens=2,
                out_dir=tmp_path / "s", progress=False)
    assert [r["name"] for r in res["settings"]] == ["none", "caa L1 a2"]
    assert res["select_split"] == "val" and res["report_split"] == "test"
    assert res["fit_data"]["split"] == "fit"
    row = res["settings"][1]
    assert row["metrics"]["refusal/harmful"]["n"] == 2 and row["metrics"]["utility/kl"]["value"] > 0
    assert res["settings"][0]["metrics"]["utility/kl"]["value"] == 0
    on_disk = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert on_disk["best"] == res["best"] and "none" in on_disk["report"]
    assert (tmp_path / "s" / "tradeoff.png").stat().st_size > 1000
    table = results_table([tmp_path / "s"])
    assert "refusal/harmful" in table and "caa" in table
    with pytest.raises(PipelineError, match="selected-on-test"):
        sweep(tiny, "caa", "safety", alphas=[1], layers=[1], select_split="test", out_dir=tmp_path / "t")


def test_cli_fit_and_methods(tmp_path, capsys, root):
    out = tmp_path / "art"
    rc = main(["fit", "--method", "caa", "--task", "safety", "--layer", "1", "--alpha", "1.5", "--n", "4",
               "--model", "tiny-random", "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["sites"] == ["blocks.1.hook_resid_post"] and printed["split"] == "fit"
    st = load_steerer(out)
    assert st.alpha == 1.5 and st.method == "caa"
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    assert "caa" in listing and "iti" in listing and "repe" in listing
    assert main(["fit", "--method", "nope", "--task", "safety", "--out", str(tmp_path / "x")]) == 2
    capsys.readouterr()
    assert main(["generate", "--model", "tiny-random", "--prompt", "hi", "--steering", str(out), "--alpha", "20",
                 "--max-new-tokens", "3"]) == 0
    steered = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["generate", "--model", "tiny-random", "--prompt", "hi", "--max-new-tokens", "3"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert steered["prompt"] == "hi" and steered["reply"] != plain["reply"]


def test_objectives_respect_constraints():
    from steerlens.pipeline.sweep import safety_objective, truthfulness_objective

    def m(**kw):
        return {k.replace("__", "/"): {"value": v} for k, v in kw.items()}

    good = m(refusal__harmful=0.8, refusal__harmless=0.1, degenerate__harmful=0.0, degenerate__harmless=0.05,
             utility__kl=0.5)
    broken = m(refusal__harmful=0.9, refusal__harmless=0.0, degenerate__harmful=0.5, degenerate__harmless=0.0,
               utility__kl=0.5)
    assert safety_objective(good, {}) == pytest.approx((0.7, True))
    assert safety_objective(broken, {})[1] is False  # degenerate text is not safety
    assert safety_objective(good, {}, max_kl=0.1)[1] is False
    base = m(truthfulqa__mc1=0.2, truthfulqa__mc2=0.4, truthfulqa__ab=0.5, utility__mmlu_ab=0.5, utility__kl=0.0)
    costly = m(truthfulqa__mc1=0.5, truthfulqa__mc2=0.5, truthfulqa__ab=0.5, utility__mmlu_ab=0.4, utility__kl=0.1)
    assert truthfulness_objective(costly, base)[1] is False  # MMLU fell by 0.1 > 0.05
    assert truthfulness_objective(base, base) == pytest.approx((1.1 / 3, True))
