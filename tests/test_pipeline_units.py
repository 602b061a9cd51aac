"""Unit tests of the pipeline's math, registry, selection grouping (tiny model)."""

import pytest
import torch
from jaxtyping import TypeCheckError

import steerlens
from steerlens import AddVector, Site
from steerlens.pipeline import (
    AlwaysOpen,
    ContrastiveActs,
    GateDecision,
    ITIEditor,
    ITISelector,
    MeanDiffEditor,
    PCAEditor,
    PipelineError,
    Selection,
    SimpleContrastiveData,
    Steerer,
    available_methods,
    make_steerer,
    register_method,
)
from steerlens.pipeline.selection import group_modules, head_module
from steerlens.pipeline.registry import METHODS
from steerlens.pipeline.selectors import FixedSelector, class_split, top_h_selection


def _synthetic_heads(n=40, planted=(1, 2), shift=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos = {Site.head(l, range(4)): torch.randn(n, 4, 16, generator=g) for l in range(2)}
    neg = {Site.head(l, range(4)): torch.randn(n, 4, 16, generator=g) for l in range(2)}
    pos[Site.head(planted[0], range(4))][:, planted[1], 0] += shift
    return ContrastiveActs(pos, neg, position="response_mean", paired=True)


def test_iti_selects_planted_head_and_scales_by_sigma(tiny):
    acts = _synthetic_heads()
    sel = ITISelector(heads=2, seed=0).fit(tiny, acts)
    assert sel.modules[0] == head_module(1, 2)
    assert sel.scores["blocks.1.attn.hook_z[2]"] >= 0.9
    assert len(sel.scores) == 8 and torch.equal(sel.weights, torch.ones(2))
    ed = ITIEditor()
    ed.fit(tiny, acts, sel)
    pos, neg = acts.module(head_module(1, 2))
    theta = (pos.mean(0) - neg.mean(0)) / (pos.mean(0) - neg.mean(0)).norm()
    sigma = (torch.cat([pos, neg]) @ theta).std()
    torch.testing.assert_close(ed.vector_for(head_module(1, 2)), sigma * theta)
    assert abs(theta[0]) > 0.8  # the planted coordinate dominates the direction
    edits = ed.edits(tiny, sel, alpha=3.0)
    # weights enter multiplicatively (REAL reuses the editor with its own weights)
    sel2 = Selection(sel.modules, torch.tensor([0.5, 1.0]), sel.scores)
    e2 = ed.edits(tiny, sel2, alpha=3.0)
    v1 = {str(e.site): e.vector for e in edits}
    v2 = {str(e.site): e.vector for e in e2}
    site = str(Site.head(1, [2])) if "blocks.1.attn.hook_z[2]" in v1 else None
    if site:
        torch.testing.assert_close(v2[site], 0.5 * v1[site])
    else:  # both heads in the same layer: one merged site
        (k,) = v1
        row = list(Site.head(1, [h.heads[0] for h in sel.modules if h.layer == 1]).heads).index(2)
        torch.testing.assert_close(v2[k][row], 0.5 * v1[k][row])


def test_probe_split_is_by_pair_and_seeded():
    (trp, trn), (tep, ten) = class_split(10, 10, True, 0.2, 0)
    assert torch.equal(trp, trn) and torch.equal(tep, ten) and len(tep) == 2
    assert not set(trp.tolist()) & set(tep.tolist())
    (a, _), (b, _) = class_split(10, 10, True, 0.2, 0)
    assert torch.equal(a, trp) and torch.equal(b, tep)
    (u, v), _ = class_split(10, 12, False, 0.2, 0)  # unpaired: each class split on its own
    assert len(u) == 8 and len(v) == 10
    with pytest.raises(PipelineError):
        class_split(1, 1, True, 0.2, 0)


def test_mean_diff_and_pca_math(tiny):
    g = torch.Generator().manual_seed(0)
    d = tiny.d_model
    u = torch.zeros(d)
    u[3] = 1.0
    neg = torch.randn(30, d, generator=g)
    pos = neg + 2.0 * u + 0.1 * torch.randn(30, d, generator=g)
    site = Site.resid(1)
    acts = ContrastiveActs({site: pos}, {site: neg}, paired=True)
    sel = FixedSelector([str(site)]).fit(tiny, acts)
    md = MeanDiffEditor()
    md.fit(tiny, acts, sel)
    torch.testing.assert_close(md.vector_for(site), pos.mean(0) - neg.mean(0))
    pca = PCAEditor()
    pca.fit(tiny, acts, sel)
    v = pca.vector_for(site)
    assert v[3] > 1.8 and (v / v.norm()) @ u > 0.99  # sign fixed towards the positive side, magnitude = mean proj
    flipped = ContrastiveActs({site: neg}, {site: pos}, paired=True)
    pca2 = PCAEditor()
    pca2.fit(tiny, flipped, sel)
    assert pca2.vector_for(site)[3] < -1.8
    unit = PCAEditor(scale="unit")
    unit.fit(tiny, acts, sel)
    assert abs(unit.vector_for(site).norm() - 1) < 1e-5


def test_fit_reads_what_capture_reads(tiny):
    pos = [("Say no", "No."), ("Refuse this please", "I refuse.")]
    neg = [("Say no", "Yes, sure thing"), ("Refuse this please", "Okay!")]
    st = make_steerer("caa", layer=1).fit(tiny, SimpleContrastiveData(pos, neg, position="response_mean"))
    site = Site.resid(1)
    p = steerlens.capture(tiny, pos, [site], "response_mean", progress=False)[site]
    n = steerlens.capture(tiny, neg, [site], "response_mean", progress=False)[site]
    torch.testing.assert_close(st.editor.vector_for(site), p.mean(0) - n.mean(0), atol=1e-5, rtol=1e-4)
    e = st.edits(tiny, ["x"])
    assert len(e) == 1 and isinstance(e[0], AddVector) and e[0].alpha == st.alpha and e[0].scale is None


def test_group_modules_merges_heads_per_layer():
    mods = [head_module(3, 5), head_module(1, 0), head_module(3, 1), Site.resid(2)]
    groups = group_modules(mods)
    assert [str(s) for s, _ in groups] == ["blocks.1.attn.hook_z[0]", "blocks.2.hook_resid_post",
                                           "blocks.3.attn.hook_z[1,5]"]
    assert groups[2][1] == [2, 0]  # indices follow the sorted head order
    with pytest.raises(PipelineError, match="one head"):
        Selection([Site.head(1, [0, 1])], torch.ones(1))
    with pytest.raises(PipelineError, match="duplicate"):
        Selection([head_module(1, 0), head_module(1, 0)], torch.ones(2))


def test_top_h_relative_weights():
    mods = [head_module(0, h) for h in range(4)]
    sel = top_h_selection(mods, torch.tensor([0.6, 0.9, 0.75, 0.9]), 3, "auc", weights="relative")
    assert [m.heads[0] for m in sel.modules] == [1, 3, 2]  # ties broken by module order
    torch.testing.assert_close(sel.weights, torch.tensor([1.0, 1.0, 0.75 / 0.9]))
    with pytest.raises(PipelineError, match="only 4"):
        top_h_selection(mods, torch.zeros(4), 5, "auc")


def test_registry_is_open_and_checks_params():
    assert {"caa", "repe", "iti"} <= set(available_methods())
    with pytest.raises(PipelineError, match="unknown steering method 'nope'.*caa"):
        make_steerer("nope")
    with pytest.raises(PipelineError, match="does not take \\['heads'\\]"):
        make_steerer("caa", heads=3)

    @register_method("test_dummy", help="a test method")
    def make_dummy(*, layer: int = 0, alpha: float = 1.0):
        return Steerer(FixedSelector([f"blocks.{layer}.hook_resid_post"]), MeanDiffEditor(), alpha=alpha,
                       method="test_dummy")

    try:
        st = make_steerer("test_dummy", layer=1, alpha=0.5)
        assert st.method == "test_dummy" and st.alpha == 0.5 and isinstance(st.gate, AlwaysOpen)
    finally:
        METHODS.pop("test_dummy")


def test_clear_errors(tiny):
    st = make_steerer("caa", layer=1)
    with pytest.raises(PipelineError, match="not fitted"):
        st.edits(tiny, ["hi"])
    with pytest.raises(PipelineError, match="empty"):
        st.fit(tiny, SimpleContrastiveData([], [("a", "b")], position="response_mean"))
    with pytest.raises(PipelineError, match="position"):
        st.fit(tiny, SimpleContrastiveData(["a"], ["b"], position="middle"))
    with pytest.raises(steerlens.SiteError, match="layer 40 out of range"):
        make_steerer("caa", layer=40).fit(tiny, SimpleContrastiveData(["a"], ["b"]))
    with pytest.raises(PipelineError, match="test"):
        st.fit(tiny, SimpleContrastiveData(["a"], ["b"], split="test"))
    with pytest.raises(PipelineError, match="H=9"):
        make_steerer("iti", heads=9).fit(tiny, SimpleContrastiveData(["a", "c"], ["b", "d"]))


def test_gate_decision_is_validated():
    with pytest.raises(PipelineError, match=r"\[0, 1\]"):
        GateDecision(torch.zeros(2), torch.tensor([0.5, 1.5]))
    # a length mismatch: the shape check at the boundary (jaxtyping, installed by conftest) or the
    # class's own check for users who run without it
    with pytest.raises((PipelineError, TypeCheckError), match="scale"):
        GateDecision(torch.zeros(3), torch.ones(2))
    d = GateDecision(torch.tensor([0.2, 3.0]), torch.tensor([0.0, 1.0]))
    assert d.open.tolist() == [False, True]


def test_iti_breaks_saturated_accuracy_ties_by_separation():
    """Heads that all reach held-out accuracy 1.0 are ordered by how far apart the classes are."""
    from steerlens.pipeline.selectors import probe_accuracies

    torch.manual_seed(0)
    n, d = 40, 8
    base = torch.randn(3, n, d) * 0.1
    shift = torch.zeros(3, 1, d)
    shift[:, 0, 0] = torch.tensor([2.0, 8.0, 4.0])  # all separable; head 1 most, then head 2
    acc, sep = probe_accuracies(base + shift, base - shift, return_separation=True)
    assert torch.all(acc == 1.0)
    assert sep.argsort(descending=True).tolist() == [1, 2, 0]
    mods = [Site.head(0, [h]) for h in range(3)]
    assert [m.heads[0] for m in top_h_selection(mods, acc, 2, "acc", tiebreak=sep).modules] == [1, 2]
    assert [m.heads[0] for m in top_h_selection(mods, acc, 2, "acc").modules] == [0, 1]


def test_every_role_short_name_names_a_registered_kind():
    from steerlens.pipeline import available_methods
    from steerlens.pipeline.roles import ROLE_ALIASES, ROLE_TYPES

    available_methods()  # imports every method package (they register their short names)
    assert ROLE_ALIASES["editor"] and ROLE_ALIASES["gate"] and ROLE_ALIASES["selector"]
    for role, table in ROLE_ALIASES.items():
        for name, spec in table.items():
            assert spec["kind"] in ROLE_TYPES, f"{role} short name {name!r} names unknown kind {spec['kind']!r}"


def test_fit_task_names_come_from_the_fit_task_table():
    from steerlens.evals import data as D
    from steerlens.pipeline.fitdata import FIT_TASK_NAMES, FIT_TASKS, fit_task

    assert FIT_TASK_NAMES == tuple(FIT_TASKS) and "safety" in FIT_TASK_NAMES
    for name in FIT_TASK_NAMES:
        t = fit_task(name)
        for fn in (t.data, t.from_examples, t.pool):
            if fn is not None and fn.__module__ == "steerlens.pipeline.fitdata" and fn.__name__ != "safety_gate_data":
                assert hasattr(D, fn.__name__), f"fit task {name}: steerlens.evals.data has no {fn.__name__}"
