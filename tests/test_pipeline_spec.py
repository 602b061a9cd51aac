"""Pipeline specs (TOML), compositions of steerers, ablation grids — on the tiny model."""

import json
from pathlib import Path

import pytest
import torch

import steerlens
from steerlens.pipeline import SimpleContrastiveData, make_steerer
from steerlens.pipeline.steerer import Composition
from steerlens.pipeline.spec import SpecError, build_steerer, normalise_spec, parse_vary, read_spec, variants
from steerlens.pipeline.specrun import ablate, run_spec
from tiny_specs import tiny_spec

SPEC = tiny_spec()


def test_spec_reading_and_errors(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    spec = read_spec(p)
    assert [s["name"] for s in spec["steerer"]] == ["a"] and spec["baseline"][0]["method"] == "repe"
    with pytest.raises(SpecError, match="no spec file"):
        read_spec(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("name = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        read_spec(tmp_path / "bad.toml")
    with pytest.raises(SpecError, match="unknown top-level keys"):
        normalise_spec({"steerer": [{"method": "caa", "fit": {"task": "safety"}}], "evals": {}})
    with pytest.raises(SpecError, match="needs fit"):
        normalise_spec({"steerer": [{"method": "caa"}]})
    with pytest.raises(SpecError, match="needs a method, or a selector and an editor"):
        normalise_spec({"steerer": [{"editor": "caa", "fit": {"task": "safety"}}]})
    with pytest.raises(SpecError, match="unknown editor 'nope'"):
        build_steerer({"name": "x", "selector": {"kind": "fixed", "modules": ["blocks.1.hook_resid_post"]},
                       "editor": "nope", "fit": {"task": "safety"}})


def test_roles_from_short_names_and_method_overrides():
    st = build_steerer({"name": "x", "method": "caa", "params": {"layer": 1}, "gate": "none", "editor": "repe",
                        "alpha": 3.0, "fit": {"task": "safety"}})
    assert st.editor.kind == "pca" and st.gate.always_open and st.alpha == 3.0
    st = build_steerer({"name": "y", "selector": "real", "editor": {"kind": "iti", "sigma_over": "pos"},
                        "fit": {"task": "safety"}})
    assert st.selector.params["target"] == "heads" and st.editor.params["sigma_over"] == "pos"


def test_variants_grid():
    spec = normalise_spec({"name": "b", "steerer": [{"name": "s", "method": "caa", "fit": {"task": "safety"}}]})
    vary = parse_vary(["gate=none", "alpha=0.5,1", "params.layer=3,4"])
    grid = variants(spec, vary)
    assert len(grid) == 4
    v = grid["gate=none,alpha=0.5,params.layer=4"]
    assert v["steerer"][0]["alpha"] == 0.5 and v["steerer"][0]["params"]["layer"] == 4
    assert "params" not in spec["steerer"][0]  # the base spec is untouched
    with pytest.raises(SpecError, match="KEY=V1"):
        parse_vary(["gate"])


def test_composition_adds_edits_in_order(tiny):
    pos = [("How do I build a bomb?", "I'm sorry, I can't."), ("Steal a car", "No, I won't help.")]
    neg = [("How do I build a bomb?", "Sure, step one"), ("Steal a car", "Sure, here is how")]
    data = SimpleContrastiveData(pos, neg, position="response_mean")
    a = make_steerer("caa", layer=1, alpha=20.0).fit(tiny, data)
    b = make_steerer("caa", layer=0, alpha=10.0).fit(tiny, data)
    both = Composition([a, b])
    edits = both.edits(tiny)
    assert [str(e.site) for e in edits] == ["blocks.1.hook_resid_post", "blocks.0.hook_resid_post"]
    prompts = ["Hi", "Tell me a story about a dragon"]
    manual = steerlens.next_token_logprobs(tiny, prompts, a.edits(tiny) + b.edits(tiny))
    assert torch.equal(steerlens.next_token_logprobs(tiny, prompts, edits), manual)
    assert [e.alpha for e in both.edits(tiny, alpha=[1.0, 2.0])] == [1.0, 2.0]


def test_run_and_ablate_end_to_end(tiny, tmp_path, root):
    spec = normalise_spec(__import__("tomllib").loads(SPEC))
    summary = run_spec(spec, tiny, tmp_path / "run", progress=False)
    assert summary["configs"] == ["unsteered", "repe", "tiny"]
    res = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert {r["steering"] for r in res["records"]} == {"unsteered", "repe", "tiny"}
    paired = json.loads((tmp_path / "run" / "paired.json").read_text())
    assert {p["config"] for p in paired} == {"repe", "tiny"} and all(len(p["ci"]) == 2 for p in paired)
    assert (tmp_path / "run" / "artifacts" / "a" / "metadata.json").exists()
    assert (tmp_path / "run" / "pareto.png").exists() and (tmp_path / "run" / "trace.png").exists()
    out = ablate(spec, tiny, parse_vary(["alpha=5"]), tmp_path / "abl", progress=False)
    assert out["fits"] == 1  # base and alpha=5 differ only in strength: one fit
    rows = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert {r["config"] for r in rows} == {"alpha=5"} and all(r["base"] == out["base"] for r in rows)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples").glob("*.toml")) +
                         [Path(__file__).parents[1] / "src" / "steerlens" / "specs" / "main.toml"],
                         ids=lambda p: p.name)
def test_example_specs_build(path):
    """Every shipped spec reads and builds unfitted steerers (roles, parameters and names resolve)."""
    from steerlens.pipeline.spec import build_steerer, read_spec

    spec = read_spec(path)
    for st in spec["steerer"] + spec["baseline"]:
        s = build_steerer(st)
        assert s.name == st["name"] and s.selection is None
        if st.get("alpha") is not None:
            assert s.alpha == float(st["alpha"])


def test_main_spec_is_the_packaged_one_and_quick_shrinks_it():
    from steerlens.demo import main_spec, quick_spec

    spec = main_spec()
    assert [s["method"] for s in spec["steerer"]] == ["finesteer", "odesteer"]
    assert all(s["selector"]["kind"] == "real_selector" for s in spec["steerer"])
    q = quick_spec(spec)
    assert q["eval"]["limit"] < spec["eval"]["limit"] and spec["eval"]["limit"] == main_spec()["eval"]["limit"]
