"""FineSteer's defaults are the main job's validated settings: ``steerlens fit --method finesteer
--task safety`` with no options builds what specs/main.toml's ``finesteer`` table builds; the
stage-1 gate kind is a parameter."""

from pathlib import Path

import pytest

from steerlens.pipeline import PipelineError
from steerlens.pipeline.gates import ProbeGate
from steerlens.pipeline.methods.finesteer.harm_gate import HarmDirectionGate
from steerlens.pipeline.methods.finesteer.method import FineSteerParams
from steerlens.pipeline.methods.finesteer.scs import SCSGate
from steerlens.pipeline.registry import available_methods, fit_gate_task, make_steerer
from steerlens.pipeline.spec import build_steerer, read_spec

MAIN = Path(__file__).resolve().parents[1] / "src" / "steerlens" / "specs" / "main.toml"


def _main_table():
    return next(s for s in read_spec(MAIN)["steerer"] if s["method"] == "finesteer")


def test_cli_default_fit_is_the_main_spec_finesteer():
    tab = _main_table()
    spec_st = build_steerer(tab)
    cli_st = make_steerer("finesteer")  # what `steerlens fit --method finesteer` builds with no options
    assert cli_st.method_params == spec_st.method_params
    assert cli_st.alpha == spec_st.alpha == 1.0
    assert type(cli_st.gate) is type(spec_st.gate) and cli_st.gate.params == spec_st.gate.params
    assert cli_st.selector.kind == spec_st.selector.kind == "real_selector"
    assert cli_st.selector.params == spec_st.selector.params
    assert available_methods()["finesteer"].fit_defaults["n"] == tab["fit"]["n"]
    assert tab["fit"]["task"] == "safety" and "gate_n" not in tab["fit"]  # the CLI's gate data: all of the fit split
    # ... of the task the method's gate is fitted on by default (the spec writes it out)
    assert fit_gate_task("finesteer", "safety") == tab["fit"]["gate_task"] == "safety-harm-all"
    assert fit_gate_task("finesteer", "safety", "safety") == "safety" and fit_gate_task("caa", "safety") == "safety"


def test_recorded_params_are_the_validated_settings():
    mp = make_steerer("finesteer").method_params
    assert (mp["gate_kind"], mp["gate_layer"], mp["shrinkage"], mp["fpr"]) == ("harm_dir", 16, 0.5, 0.05)
    assert mp["select_layers"] == [12, 8, 10, 14, 16] and mp["select_repeats"] == 3 and mp["select_margin"] == 0.05


@pytest.mark.parametrize("kind, cls, own", [("scs", SCSGate, {"rank_benign": 3}), ("probe", ProbeGate, {"C": 0.5}),
                                            ("harm_dir", HarmDirectionGate, {"shrinkage": 0.25})])
def test_gate_kind_is_a_parameter(kind, cls, own):
    st = make_steerer("finesteer", gate_kind=kind, gate_layer=1, select_layers=None, **own)
    assert type(st.gate) is cls and st.gate.params["layer"] == 1
    k, v = next(iter(own.items()))
    assert st.gate.params[k] == v and st.method_params[k] == v and st.method_params["gate_kind"] == kind
    assert st.selector.kind != "real_selector"


def test_bad_gate_kind_and_layers():
    with pytest.raises(PipelineError, match="gate_kind"):
        make_steerer("finesteer", gate_kind="svm")
    with pytest.raises(PipelineError, match="select_layers"):
        FineSteerParams(select_layers=())


def test_spec_and_cli_share_the_methods_fit_size(monkeypatch):
    """A spec table without ``fit.n`` fits FineSteer on its validated size, as `steerlens fit` does."""
    from steerlens.pipeline import spec as spec_mod
    from steerlens.pipeline.registry import fit_size

    assert fit_size("finesteer", None) == 96 and fit_size("finesteer", 10) == 10
    assert fit_size("caa", None) is None and fit_size(None, None) is None
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit_data(task, n, seed, root):
        seen["n"] = n
        raise Stop

    monkeypatch.setattr(spec_mod, "fit_data", fake_fit_data)
    for st, want in (({"name": "f", "method": "finesteer", "fit": {"task": "safety"}}, 96),
                     ({"name": "c", "method": "caa", "fit": {"task": "safety"}}, None),
                     ({"name": "f", "method": "finesteer", "fit": {"task": "safety", "n": 7}}, 7)):
        with pytest.raises(Stop):
            spec_mod.fit_steerer(None, st)
        assert seen["n"] == want
