"""Seeds as a feature: ``seeded`` specs, ``run_seeds`` / ``steerlens run --seeds K`` and the
spread across seeds (tiny model)."""

import json
import tomllib
from types import SimpleNamespace

import pytest
from safetensors.torch import load_file

from steerlens.demo import main_spec, one_table
from steerlens.pipeline.spec import SpecError, normalise_spec, seeded
from steerlens.pipeline.specrun import run_seeds, run_spec, seed_rows
from tiny_specs import tiny_spec

SPEC = tiny_spec(eval_toml='tasks = ["safety"]\nlimit = 2\nmax_new_tokens = 3\n'
                 'options = { safety = { sets = ["harmful"] } }\n')


def test_seed_zero_is_the_spec_and_other_seeds_offset_every_stochastic_step():
    spec = main_spec()
    assert seeded(spec, 0) == spec
    s2 = seeded(spec, 2)
    assert spec["steerer"][0]["fit"].get("seed", 0) == 0  # the original is not modified
    fine, ode = s2["steerer"]
    caa = s2["baseline"][0]
    assert [st["fit"]["seed"] for st in (fine, ode, caa)] == [2, 2, 2]
    assert fine["params"]["seed"] == 2 and ode["params"]["seed"] == 2
    assert "seed" not in caa["params"]  # CAA has no seed to offset: nothing is added that it would refuse
    assert fine["selector"]["seed"] == 2 and ode["selector"]["seed"] == 2  # REAL's split + autoencoder init
    assert ode["gate"]["seed"] == 2 and ode["gate"]["invert"] is True      # the inverted SCS gate's calibration split
    # everything else is as it was
    assert fine["selector"]["layers"] == spec["steerer"][0]["selector"]["layers"]
    assert fine["params"]["gate_layer"] == spec["steerer"][0]["params"]["gate_layer"]


def test_seed_rows_mean_and_spread():
    R = lambda c, m, v: SimpleNamespace(steering=c, metric=m, value=v)  # noqa: E731
    rows = seed_rows({0: [R("a", "x", 0.5), R("a", "y", 1.0)], 1: [R("a", "x", 0.7)], 2: [R("a", "x", 0.9)]})
    x = next(r for r in rows if r["metric"] == "x")
    assert x["seeds"] == [0, 1, 2] and x["values"] == [0.5, 0.7, 0.9]
    assert x["mean"] == pytest.approx(0.7) and x["sd"] == pytest.approx(0.2) and (x["min"], x["max"]) == (0.5, 0.9)
    y = next(r for r in rows if r["metric"] == "y")
    assert y["sd"] == 0.0 and y["seeds"] == [0]


def test_run_seeds_refits_and_reports_spread(tiny, tmp_path, root):
    spec = normalise_spec(tomllib.loads(SPEC))
    out = run_seeds(spec, tiny, tmp_path / "run", 2, progress=False)
    plain = run_spec(spec, tiny, tmp_path / "plain", progress=False)
    # seed 0 is the plain run, written where a plain run writes
    assert [(r.steering, r.metric, r.value) for r in out["records"]] == \
        [(r.steering, r.metric, r.value) for r in plain["records"]]
    a0 = load_file(tmp_path / "run" / "artifacts" / "a" / "tensors.safetensors")
    a1 = load_file(tmp_path / "run" / "seeds" / "seed-1" / "artifacts" / "a" / "tensors.safetensors")
    p0 = load_file(tmp_path / "plain" / "artifacts" / "a" / "tensors.safetensors")
    assert all((a0[k] == p0[k]).all() for k in a0)
    assert any(not (a0[k] == a1[k]).all() for k in a0 if a0[k].is_floating_point())  # seed 1 fits other data
    meta1 = json.loads((tmp_path / "run" / "seeds" / "seed-1" / "spec.json").read_text())
    assert meta1["steerer"][0]["fit"]["seed"] == 1
    saved = json.loads((tmp_path / "run" / "seeds.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["rows"] == out["seed_rows"]
    unst = [r for r in saved["rows"] if r["config"] == "unsteered"]
    assert unst and all(r["sd"] == 0.0 for r in unst)  # the unsteered model does not depend on fit seeds
    assert (tmp_path / "run" / "seeds.md").read_text().count("| tiny |") >= 1
    table = one_table(out["records"], out["configs"], out["seed_rows"])
    assert "seeds " in table and "±" in table


def test_run_seeds_rejects_bad_seeds(tiny, tmp_path):
    spec = normalise_spec(tomllib.loads(SPEC))
    for bad in (0, [1, 1], [-1]):
        with pytest.raises(SpecError):
            run_seeds(spec, tiny, tmp_path / "x", bad, progress=False)


def test_cli_run_seeds_zero_is_one_line(tmp_path, capsys):
    from steerlens.cli import main

    p = tmp_path / "s.toml"
    p.write_text(SPEC)
    rc = main(["run", str(p), "--out", str(tmp_path / "o"), "--seeds", "0", "--model", "tiny"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "--seeds" in err
