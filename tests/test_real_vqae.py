"""REAL's VQ autoencoders: batched == per-module reference, EMA math, contrastive loss, errors."""

import math

import pytest
import torch
from jaxtyping import TypeCheckError
import torch.nn.functional as F

from steerlens.pipeline.methods.real.vqae import (
    BatchedVQAE,
    ReferenceVQAE,
    VQAEConfig,
    VQAEError,
    _ema_step,
    supcon_loss,
    train_reference,
    train_vqae,
)


def _data(M=4, N=96, d=32, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, N, d, generator=g, dtype=dtype)
    y = torch.arange(N) % 2
    x[:, y == 1, :4] += 2.0
    return x, y


def test_batched_equals_reference_same_init():
    """Same initial state -> identical codes and (to rounding) identical codebooks after training."""
    x, y = _data()
    cfg = VQAEConfig(epochs=3, batch_size=16)
    bm = BatchedVQAE(x.shape[0], x.shape[2], cfg, dtype=torch.float64).setup(x)
    refs = [bm.module(m) for m in range(bm.M)]
    bm, hist = train_vqae(x, y, cfg, model=bm, progress=False)
    codes = bm.codes(x)
    for m, ref in enumerate(refs):
        ref = train_reference(x[m], y, cfg, model=ref)
        assert torch.equal(ref.codes(x[m]), codes[m])
        torch.testing.assert_close(ref.codebook, bm.codebook[m], rtol=0, atol=1e-10)
        torch.testing.assert_close(ref.enc1_w, bm.enc1_w[m], rtol=0, atol=1e-10)
    assert len(hist["recon"]) == 3


def test_module_slices_are_independent():
    """Training modules {0,1,2} together gives module 1 the same result as training it with others."""
    x, y = _data(M=3)
    cfg = VQAEConfig(epochs=2, batch_size=16)
    full = BatchedVQAE(3, x.shape[2], cfg, dtype=torch.float64).setup(x)
    # a 1-module batched model started from module 1's state
    one = BatchedVQAE(1, x.shape[2], cfg, dtype=torch.float64)
    with torch.no_grad():
        for name, p in full.named_parameters():
            getattr(one, name).copy_(p[1:2])
        for name, b in full.named_buffers():
            getattr(one, name).copy_(b[1:2])
    full, _ = train_vqae(x, y, cfg, model=full, progress=False)
    one, _ = train_vqae(x[1:2], y, cfg, model=one, progress=False)
    assert torch.equal(full.codes(x)[1], one.codes(x[1:2])[0])


def test_shapes_and_latent_split():
    cfg = VQAEConfig()
    m = BatchedVQAE(5, 64, cfg)
    assert m.enc1_w.shape == (5, 64, 64) and m.enc2_w.shape == (5, 64, 32)
    assert m.dec1_w.shape == (5, 32, 64) and m.dec2_w.shape == (5, 64, 64)
    assert m.codebook.shape == (5, 32, 4)  # K = 32 codes of d/16 = 4
    x = torch.randn(5, 10, 64)
    assert m.codes(x).shape == (5, 10, 8)
    assert int(m.codes(x).max()) < 32


def test_ema_step_formula():
    cfg = VQAEConfig(n_codes=3, decay=0.9, eps=1e-5)
    size = torch.tensor([1.0, 1.0, 1.0])
    total = torch.tensor([[0.0], [1.0], [2.0]])
    cb = total.clone()
    counts = torch.tensor([2.0, 0.0, 1.0])
    sums = torch.tensor([[4.0], [0.0], [5.0]])
    _ema_step(size, total, cb, counts, sums, cfg)
    exp_size = torch.tensor([0.9 + 0.2, 0.9, 0.9 + 0.1])
    exp_total = torch.tensor([[0.4], [0.9], [1.8 + 0.5]])
    n = exp_size.sum()
    smoothed = (exp_size + 1e-5) / (n + 3e-5) * n
    torch.testing.assert_close(size, exp_size)
    torch.testing.assert_close(total, exp_total)
    torch.testing.assert_close(cb, exp_total / smoothed.unsqueeze(-1))


def test_batched_ema_matches_onehot_definition():
    cfg = VQAEConfig(n_codes=8, n_groups=2)
    m = BatchedVQAE(3, 8, cfg, dtype=torch.float64)
    ze = torch.randn(3, 5, 2, 2, dtype=torch.float64)
    idx = torch.randint(0, 8, (3, 5, 2))
    size0, sum0 = m.ema_size.clone(), m.ema_sum.clone()
    m.ema_update(ze, idx)
    oh = F.one_hot(idx.reshape(3, -1), 8).double()
    exp_size = 0.99 * size0 + 0.01 * oh.sum(1)
    exp_sum = 0.99 * sum0 + 0.01 * torch.bmm(oh.transpose(1, 2), ze.reshape(3, -1, 2))
    torch.testing.assert_close(m.ema_size, exp_size)
    torch.testing.assert_close(m.ema_sum, exp_sum)


@pytest.mark.parametrize("labels", [[0, 1, 0, 1, 1, 0], [0, 1, 0, 2, 1, 0, 0]])  # label 2: an anchor with no partner
def test_supcon_matches_naive(labels):
    g = torch.Generator().manual_seed(1)
    n = len(labels)
    z = torch.randn(2, n, 5, generator=g, dtype=torch.float64)
    y = torch.tensor(labels)
    t = 0.5
    got = supcon_loss(z, y, t)
    for m in range(2):
        zn = F.normalize(z[m], dim=-1)
        losses = []
        for i in range(n):
            others = [a for a in range(n) if a != i]
            denom = math.log(sum(math.exp(float(zn[i] @ zn[a]) / t) for a in others))
            pos = [p for p in others if y[p] == y[i]]
            if pos:
                losses.append(-sum(float(zn[i] @ zn[p]) / t - denom for p in pos) / len(pos))
        assert abs(float(got[m]) - sum(losses) / len(losses)) < 1e-9
    assert torch.isfinite(torch.autograd.functional.jacobian(lambda v: supcon_loss(v, y, t).sum(), z)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_supcon_is_finite_in_low_precision(dtype):
    z = torch.randn(2, 6, 8).to(dtype).requires_grad_()
    loss = supcon_loss(z, torch.tensor([0, 1, 0, 1, 1, 0]), 0.07)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()


def test_supcon_no_positive_pairs_is_zero():
    z = torch.randn(3, 2, 4)
    assert torch.equal(supcon_loss(z, torch.tensor([0, 1]), 0.07), torch.zeros(3))


def test_training_lowers_reconstruction_and_codes_follow_class():
    x, y = _data(M=2, N=128, d=32, dtype=torch.float32)
    cfg = VQAEConfig(epochs=8, batch_size=32)
    m, hist = train_vqae(x, y, cfg, progress=False)
    assert hist["recon"][-1] < hist["recon"][0]
    codes = m.codes(x)  # [2, N, 8]
    # classes differ by a +2 shift on 4 features: their code distributions must differ
    u1 = F.one_hot(codes[:, y == 1], 32).float().mean((1, 2))
    u0 = F.one_hot(codes[:, y == 0], 32).float().mean((1, 2))
    assert (0.5 * (u1 - u0).abs().sum(-1) > 0.2).all()  # total variation distance


def test_reference_standalone_trains_like_a_one_module_batched_model():
    x, y = _data(M=1, dtype=torch.float64)
    ref = train_reference(x[0], y, VQAEConfig(epochs=1))
    assert ref.codes(x[0]).shape == (x.shape[1], 8)
    batched, _ = train_vqae(x, y, VQAEConfig(epochs=1), progress=False)
    assert torch.equal(ref.codes(x[0]), batched.codes(x)[0])


@pytest.mark.parametrize("bad", ["nan", "width", "rows", "labels", "init"])
def test_errors(bad):
    x, y = _data(dtype=torch.float32)
    if bad == "nan":
        x[0, 0, 0] = float("nan")
        with pytest.raises(VQAEError, match="NaN"):
            train_vqae(x, y, VQAEConfig(epochs=1), progress=False)
    elif bad == "width":
        with pytest.raises(VQAEError, match="divisible"):
            BatchedVQAE(2, 24, VQAEConfig())
    elif bad == "rows":
        with pytest.raises(VQAEError, match="at least 2"):
            train_vqae(x[:, :1], y[:1], VQAEConfig(epochs=1), progress=False)
    elif bad == "labels":
        # the shape check at the boundary (tests/shapecheck.py) or, without it, train_vqae's own
        with pytest.raises((VQAEError, TypeCheckError), match="labels|N="):
            train_vqae(x, y[:-1], VQAEConfig(epochs=1), progress=False)
    else:
        with pytest.raises(VQAEError, match="codebook_init"):
            BatchedVQAE(2, 32, VQAEConfig(codebook_init="kmeans")).setup(x[:2])


def test_nearest_code_is_argmin_of_squared_distance_with_ties_to_lower_index():
    from steerlens.pipeline.methods.real.vqae import nearest_code

    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 300, 4, generator=g)
    cb = torch.randn(5, 32, 4, generator=g)
    cb[:, 7] = cb[:, 3]  # duplicated code: the tie goes to code 3, as argmin would
    z[:, 0] = cb[:, 3]
    expect = torch.cdist(z.double(), cb.double()).argmin(-1)
    got = nearest_code(z, cb)
    assert torch.equal(got, expect)
    assert (got[:, 0] == 3).all()
