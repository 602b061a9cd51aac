"""REAL on the default model (slow): all 270 heads scored in one batched run, steering applied
with REAL's weights, batched == per-head reference on real activations."""

import pytest
import torch

import steerlens
from steerlens.hooks import all_head_sites
from steerlens.pipeline import make_steerer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tqa_small():
    from steerlens.evals.data import DataError, truthfulness_response_pairs

    try:
        return truthfulness_response_pairs("fit", n=24, seed=0)
    except DataError:
        pytest.skip("benchmark data not available")


@pytest.fixture(scope="module")
def real_fit(smol, tqa_small):
    return make_steerer("real", heads=6, alpha=4.0, vqae={"epochs": 3}, repeats=2).fit(smol, tqa_small)


def test_real_scores_every_head_and_weights(smol, real_fit):
    sel = real_fit.selection
    assert len(sel.scores) == smol.n_layers * smol.n_heads == 270
    assert all(0.0 <= v <= 1.0 for v in sel.scores.values())
    assert len(sel) == 6 and float(sel.weights.max()) == 1.0 and float(sel.weights.min()) > 0
    info = real_fit.selector.result_info
    assert info["n_test"] == 10 and info["n_train"] == 38  # 24 pairs -> 19 / 5 pairs, both answers
    assert real_fit.selector.tensors["usage"].shape == (270, 32, 2)


def test_real_edit_shifts_selected_heads_by_alpha_w_sigma_theta(smol, real_fit, tqa_small):
    """Reading hook_z after the edit: each selected head moves by exactly alpha * w * sigma * theta."""
    st = real_fit
    items = tqa_small.pos[:3]
    sites = st.selection.sites()
    base = steerlens.capture(smol, items, sites, "response_mean", progress=False)
    alpha = 4.0
    edits = st.edits(smol, ["x"], alpha=alpha)
    for site, idx in st.selection.grouped():
        # one site's edit at a time: an edit at an earlier layer would also move later heads
        mine = [e for e in edits if e.site == site]
        assert len(mine) == 1
        steered = steerlens.capture(smol, items, [site], "response_mean", edits=mine, progress=False)[site]
        for j, i in enumerate(idx):
            mod = st.selection.modules[i]
            expect = alpha * st.selection.weights[i] * st.editor.vector_for(mod)
            torch.testing.assert_close(steered[:, j] - base[site][:, j], expect.expand(3, -1), atol=1e-4, rtol=1e-4)


def test_batched_equals_reference_on_real_activations(smol, tqa_small):
    from steerlens.pipeline.methods.real import BatchedVQAE, VQAEConfig, train_reference, train_vqae

    sites = all_head_sites(smol, layers=[3, 20])
    items = list(tqa_small.pos) + list(tqa_small.neg)
    acts = steerlens.capture(smol, items, sites, "response_mean", progress=False)
    x = torch.cat([acts[s].permute(1, 0, 2) for s in sites]).double()  # [18, 48, 64]
    y = torch.cat([torch.ones(24), torch.zeros(24)]).long()
    cfg = VQAEConfig(epochs=3)
    bm = BatchedVQAE(x.shape[0], 64, cfg, dtype=torch.float64).setup(x)
    refs = {m: bm.module(m) for m in (0, 13)}
    bm, _ = train_vqae(x, y, cfg, model=bm, progress=False)
    for m, ref in refs.items():
        ref = train_reference(x[m], y, cfg, model=ref)
        assert torch.equal(ref.codes(x[m]), bm.codes(x)[m])
