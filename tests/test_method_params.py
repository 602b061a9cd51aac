"""Typed method parameters (steerlens.pipeline.params): each method's frozen dataclass mirrors its
factory's keyword arguments, and the recorded ``method_params`` are what the factory was called
with (normalised as before), in the factory's order."""

import dataclasses
import inspect

import pytest

from steerlens.pipeline.baselines import CAAParams, ITIParams, RepEParams
from steerlens.pipeline.methods.finesteer.harm_gate import CAAHarmDirParams
from steerlens.pipeline.finesteer.mose import MoSEParams
from steerlens.pipeline.finesteer.scs import CAASCSParams, SCS_GATE_PARAMS, SCSGatedParams
from steerlens.pipeline.interventions import AblateParams, DirAblateParams, ScaleParams, SetParams
from steerlens.pipeline.odesteer.roles import BARRIER_PARAMS, ODESteerParams
from steerlens.pipeline.params import MethodParams
from steerlens.pipeline.real.selector import REALParams
from steerlens.pipeline.registry import available_methods, make_steerer

SITE = "blocks.1.attn.hook_z[0,2]"
#: method -> (its dataclass, the factory parameters that are not recorded, arguments a call needs)
METHODS = {
    "caa": (CAAParams, (), {}),
    "repe": (RepEParams, (), {}),
    "iti": (ITIParams, (), {}),
    "ablate": (AblateParams, (), {"sites": [SITE]}),
    "scale": (ScaleParams, (), {"sites": [SITE]}),
    "set": (SetParams, (), {"sites": [SITE]}),
    "dir-ablate": (DirAblateParams, (), {}),
    "odesteer": (ODESteerParams, ("gate",), {}),
    "real": (REALParams, (), {}),
    "mose": (MoSEParams, (), {}),
    "caa-scs": (CAASCSParams, (), {}),
    "caa-harmdir": (CAAHarmDirParams, (), {}),
}
#: methods whose params are pinned by their own test (finesteer: MoSE's then its gate's)
OWN_TEST = {"finesteer"}


def test_every_public_method_has_typed_params():
    """A new method records its params from a dataclass too: it must be listed above."""
    public = {m for m, info in available_methods().items() if not info.hidden}
    assert public - OWN_TEST <= set(METHODS), public - OWN_TEST - set(METHODS)


def _signature(name):
    return inspect.signature(available_methods()[name].factory).parameters


@pytest.mark.parametrize("name", sorted(METHODS))
def test_dataclass_mirrors_factory_signature(name):
    cls, skip, _ = METHODS[name]
    assert issubclass(cls, MethodParams) and cls.__dataclass_params__.frozen
    sig = {k: p.default for k, p in _signature(name).items() if k not in skip}
    got = {f.name: f.default for f in dataclasses.fields(cls)}
    assert set(got) == set(sig)
    assert got == sig  # same defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        cls(**METHODS[name][2]).alpha = 2.0  # type: ignore[misc]


def _expected_defaults(name, call):
    """The recorded params of a call with ``call`` and defaults, from the factory signature."""
    cls, skip, _ = METHODS[name]
    sig = [k for k in _signature(name) if k not in skip]
    if name == "odesteer":  # the barrier's parameters are recorded together, in barrier_params' order
        sig = [k for k in sig if k not in BARRIER_PARAMS]
        at = sig.index("read") + 1
        sig[at:at] = list(BARRIER_PARAMS)
    want = {k: call.get(k, _signature(name)[k].default) for k in sig}
    if name in ("caa-scs", "caa-harmdir"):
        want["gate_layer"] = want["layer"]
    if name == "real":
        want["vqae"] = {}
    return want


@pytest.mark.parametrize("name", sorted(METHODS))
def test_recorded_params_are_the_call(name):
    call = METHODS[name][2]
    st = make_steerer(name, **call)
    want = _expected_defaults(name, call)
    assert st.method_params == want
    assert list(st.method_params) == list(want)  # the order results and specs were written in
    again = make_steerer(name, **st.method_params)  # the record rebuilds the same steerer
    assert again.method_params == st.method_params and again.method == name


def test_normalisation_as_recorded_before():
    assert make_steerer("iti", layers=(3, 1)).method_params["layers"] == [3, 1]
    assert make_steerer("dir-ablate", layers=range(2)).method_params["layers"] == [0, 1]
    assert make_steerer("real", layers=(2,), vqae={"epochs": 3}).method_params["layers"] == [2]
    assert make_steerer("scale", sites=SITE, at=(1, 2)).method_params["sites"] == [SITE]
    p = make_steerer("odesteer", layers=(4, 5), n_features="64", C=2).method_params
    assert p["layers"] == [4, 5] and p["n_features"] == 64 and isinstance(p["C"], float)
    assert make_steerer("caa-scs", layer=3).method_params["gate_layer"] == 3
    assert make_steerer("caa-scs", layer=3, gate_layer=1).method_params["gate_layer"] == 1
    assert make_steerer("mose", k=3, rank=2).method_params == {**MoSEParams().record(), "k": 3, "rank": 2}
    with pytest.raises(ValueError):
        make_steerer("ablate")  # sites are required
    with pytest.raises(ValueError):
        make_steerer("odesteer", C=0)  # validated by barrier_params


def test_finesteer_records_mose_then_its_gate():
    from steerlens.pipeline.methods.finesteer.method import FineSteerParams

    st = make_steerer("finesteer", layer=5, rank=3, gate_kind="scs", gate_layer=None)
    gate_keys = ["gate_kind", "gate_layer", *(k for k in SCS_GATE_PARAMS if k != "seed"), "select_layers",
                 "select_repeats", "select_margin"]
    mose = make_steerer("mose", layer=5, rank=3).method_params
    assert list(st.method_params) == [*mose, *gate_keys]
    assert st.method_params == {**mose, **{k: getattr(FineSteerParams(layer=5, gate_kind="scs", gate_layer=None), k)
                                           for k in gate_keys}}
    assert st.method_params["gate_layer"] == 5 and st.gate.params["layer"] == 5  # gate_layer None: MoSE's layer
    # the default gate (the main job's harm_dir at layer 16) records its own parameters, not SCS's
    dflt = make_steerer("finesteer", layer=5, rank=3)
    harm_keys = ["gate_kind", "gate_layer", "shrinkage", "normalize", "fpr", "temperature", "calib_frac",
                 "select_layers", "select_repeats", "select_margin"]
    assert list(dflt.method_params) == [*mose, *harm_keys]
    assert (dflt.method_params["gate_kind"], dflt.method_params["gate_layer"], dflt.gate.params["layer"]) == (
        "harm_dir", 16, 16)
    own = {k: p.default for k, p in _signature("finesteer").items()}
    assert all(own[f.name] == f.default for f in dataclasses.fields(FineSteerParams))
    assert issubclass(FineSteerParams, SCSGatedParams)