"""Vector-quantised autoencoders for REAL, one per module, trained together as one batched model.

A *module* is one attention head's ``hook_z`` output (``d = d_head``) or one layer's residual
stream (``d = d_model``). For each module (methods.md, REAL):

- encoder: ``d -> d`` (LeakyReLU 0.01) ``-> d/2``; the latent is split into ``G`` groups of
  ``d/(2G)`` (``d/16`` for the default ``G = 8``);
- each group is snapped to its nearest code in a codebook of ``K`` codes shared by the module's
  groups; straight-through gradient; the codebook follows an exponential moving average of the
  group vectors assigned to each code (decay 0.99, Laplace smoothing ``eps = 1e-5``);
- decoder mirrors the encoder: ``d/2 -> d`` (LeakyReLU) ``-> d``;
- loss = reconstruction MSE + ``beta`` (0.25) * commitment + ``lam`` (1e-3) * supervised
  contrastive loss (temperature 0.07) on the quantised latent; Adam lr 1e-3, batch 32, 20 epochs.

:class:`BatchedVQAE` holds ``M`` such autoencoders with a leading module dimension in every
weight (``[M, d_in, d_out]``, applied with ``baddbmm``), codebooks ``[M, K, d_code]`` and
per-module EMA state. Because every loss term is a per-module mean and the batched loss is their
*sum*, each module's gradient — and Adam's element-wise update — is exactly what training that
module alone would give. :class:`ReferenceVQAE` is that per-module implementation (same math,
one module at a time); it is used by the benchmark and by a test that both give the same codes.

The loss of a step uses the codes found before that step's EMA update; the update follows.

Open choices (all parameters of :class:`VQAEConfig`):

- ``standardize``: inputs are z-scored per module and feature with statistics of the training
  rows (head outputs differ in scale by orders of magnitude across layers; one learning rate and
  one codebook init then behave alike for every module).
- ``codebook_init``: ``"data"`` (default) initialises each module's codebook with ``K`` distinct
  group vectors of the untrained encoder on the training rows, drawn at random; ``"normal"`` uses N(0, 1).
  The EMA state starts at ``cluster_size = 1``, ``embed_sum = codebook`` (so the first update
  does not blow up unused codes, which it does when cluster sizes start at 0 without
  de-biasing).
- the contrastive loss is the supervised contrastive loss of Khosla et al. (2020) on the
  L2-normalised, flattened quantised latent (straight-through, so it trains the encoder); anchors
  without a same-class partner in the batch are skipped.
- the last, smaller batch of an epoch is kept (``drop_last=False``) unless it has fewer than 2 rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
from einops import rearrange
import torch.nn.functional as F
from jaxtyping import Float, Int
from tqdm.auto import tqdm


class VQAEError(ValueError):
    """Bad input for a VQ autoencoder (shapes, NaN, too few rows)."""


@dataclass
class VQAEConfig:
    """Hyper-parameters of the REAL VQ autoencoders (defaults from methods.md)."""

    n_groups: int = 8
    n_codes: int = 32
    decay: float = 0.99
    eps: float = 1e-5
    beta: float = 0.25  # commitment weight
    lam: float = 1e-3  # supervised contrastive weight
    temperature: float = 0.07
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 20
    negative_slope: float = 0.01
    standardize: bool = True
    codebook_init: str = "data"  # "data" | "normal"
    seed: int = 0
    #: the EMA cluster sizes' starting value (the EMA sums start at the initial codebook); the
    #: authors' code starts them at 0, so the first updates pull used codes fully to their data
    ema_init_size: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def _check_dims(d: int, cfg: VQAEConfig) -> tuple[int, int]:
    latent = d // 2
    if d % 2 or latent % cfg.n_groups:
        raise VQAEError(f"module width {d} must be even with d/2 divisible by n_groups={cfg.n_groups}")
    return latent, latent // cfg.n_groups


def _linear_init(g: torch.Generator, m: int, d_in: int, d_out: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's default init (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) for M modules at once."""
    bound = 1.0 / math.sqrt(d_in)
    w = (torch.rand(m, d_in, d_out, generator=g, dtype=dtype) * 2 - 1) * bound
    b = (torch.rand(m, d_out, generator=g, dtype=dtype) * 2 - 1) * bound
    return w, b


_LAYERS = ("enc1", "enc2", "dec1", "dec2")


def _layer_shapes(d: int, latent: int) -> dict[str, tuple[int, int]]:
    return {"enc1": (d, d), "enc2": (d, latent), "dec1": (latent, d), "dec2": (d, d)}


def supcon_loss(z: Float[torch.Tensor, "M B D"], labels: Int[torch.Tensor, "B"], temperature: float) -> Float[torch.Tensor, "M"]:
    """Supervised contrastive loss (Khosla et al. 2020) per module, averaged over anchors that
    have at least one same-label partner in the batch; 0 for a module batch without any.

    Written as weighted sums so that the label masks (shared by all modules) are built once on
    ``[B, B]``: with ``W[a, p] = 1 / (|P(a)| * #anchors)`` for every positive ``p`` of a kept
    anchor ``a``, the loss is ``sum_a (sum_p W[a,p]) * logsumexp_{b != a} s[a,b] - sum_{a,p} W[a,p] s[a,p]``.
    """
    b = z.shape[1]
    eye = torch.eye(b, dtype=torch.bool, device=z.device)
    pos = (labels[:, None] == labels[None, :]) & ~eye  # [B, B]
    n_pos = pos.sum(-1)  # [B]
    has = n_pos > 0
    if not bool(has.any()):
        return z.new_zeros(z.shape[0])
    w = pos.to(z.dtype) / n_pos.clamp(min=1).unsqueeze(-1).to(z.dtype) / has.sum().to(z.dtype)  # [B, B]
    # the diagonal (self-similarity) is excluded with a large finite offset: w is 0 there, and
    # 0 * finite stays 0 where -inf would give NaN (half the dtype's minimum, so it stays finite)
    self_mask = eye.to(z.dtype) * (torch.finfo(z.dtype).min / 2)
    zn = F.normalize(z, dim=-1)
    sim = torch.baddbmm(self_mask, zn, zn.transpose(1, 2), alpha=1.0 / temperature)  # [M, B, B]
    lse = torch.logsumexp(sim, dim=-1)  # [M, B]
    return lse @ w.sum(-1) - (sim * w).sum(dim=(1, 2))


def nearest_code(z: Float[torch.Tensor, "M R c"], codebook: Float[torch.Tensor, "M K c"]) -> Int[torch.Tensor, "M R"]:
    """Index of the nearest code (squared Euclidean distance) for every row, per module; ties go
    to the lower index.

    Computed as the argmax over codes of ``2 z.c - |c|^2`` (``|z|^2`` does not change it), laid
    out ``[M, K, R]`` so that the reduction over the ``K`` codes runs across contiguous rows:
    ``max_pool1d`` over that layout is vectorised on CPU, where ``argmin`` over a short last
    dimension is not (about 6x slower at ``M = 270, R = 256, K = 32``)."""
    k = codebook.shape[1]
    score = torch.baddbmm(-codebook.pow(2).sum(-1).unsqueeze(-1), codebook, z.transpose(1, 2), alpha=2)  # [M, K, R]
    return F.max_pool1d(score.transpose(1, 2), k, return_indices=True)[1].squeeze(-1)


@torch.no_grad()
def _ema_step(size: torch.Tensor, total: torch.Tensor, codebook: torch.Tensor,
              counts: torch.Tensor, sums: torch.Tensor, cfg: VQAEConfig) -> None:
    """EMA codebook update with Laplace smoothing (in place); works with or without a module dim."""
    size.mul_(cfg.decay).add_(counts, alpha=1 - cfg.decay)
    total.mul_(cfg.decay).add_(sums, alpha=1 - cfg.decay)
    n = size.sum(-1, keepdim=True)
    smoothed = (size + cfg.eps) / (n + cfg.n_codes * cfg.eps) * n
    codebook.copy_(total / smoothed.unsqueeze(-1))


class BatchedVQAE(torch.nn.Module):
    """``M`` VQ autoencoders of width ``d`` with a leading module dimension in every tensor.

    Parameters ``{enc1,enc2,dec1,dec2}_{w,b}``: ``[M, d_in, d_out]`` / ``[M, d_out]``.
    Buffers: ``codebook [M, K, d_code]``, ``ema_size [M, K]``, ``ema_sum [M, K, d_code]``,
    ``mu``/``sd`` ``[M, d]`` (input standardisation).
    """

    def __init__(self, n_modules: int, d: int, cfg: Optional[VQAEConfig] = None, *,
                 dtype: torch.dtype = torch.float32, generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or VQAEConfig()
        self.M, self.d = int(n_modules), int(d)
        self.latent, self.d_code = _check_dims(self.d, cfg)
        g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed)
        for name, (i, o) in _layer_shapes(self.d, self.latent).items():
            w, b = _linear_init(g, self.M, i, o, dtype)
            setattr(self, f"{name}_w", torch.nn.Parameter(w))
            setattr(self, f"{name}_b", torch.nn.Parameter(b))
        cb = torch.randn(self.M, cfg.n_codes, self.d_code, generator=g, dtype=dtype)
        self.register_buffer("codebook", cb)
        self.register_buffer("ema_size", torch.full((self.M, cfg.n_codes), float(cfg.ema_init_size), dtype=dtype))
        self.register_buffer("ema_sum", cb.clone())
        self.register_buffer("mu", torch.zeros(self.M, self.d, dtype=dtype))
        self.register_buffer("sd", torch.ones(self.M, self.d, dtype=dtype))

    # -- layers ------------------------------------------------------------------------
    def _lin(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(getattr(self, f"{name}_b").unsqueeze(1), x, getattr(self, f"{name}_w"))

    def normalize(self, x: Float[torch.Tensor, "M N d"]) -> Float[torch.Tensor, "M N d"]:
        return (x - self.mu.unsqueeze(1)) / self.sd.unsqueeze(1)

    def encode(self, xn: Float[torch.Tensor, "M B d"]) -> Float[torch.Tensor, "M B G c"]:
        """Pre-quantisation latent of standardised inputs, split into groups."""
        h = F.leaky_relu(self._lin("enc1", xn), self.cfg.negative_slope)
        z = self._lin("enc2", h)
        return rearrange(z, "M B (G c) -> M B G c", G=self.cfg.n_groups)

    def decode(self, zq: Float[torch.Tensor, "M B G c"]) -> Float[torch.Tensor, "M B d"]:
        h = F.leaky_relu(self._lin("dec1", rearrange(zq, "M B G c -> M B (G c)")), self.cfg.negative_slope)
        return self._lin("dec2", h)

    def nearest(self, ze: Float[torch.Tensor, "M B G c"]) -> Int[torch.Tensor, "M B G"]:
        """Index of the nearest code for every group vector (squared Euclidean distance)."""
        with torch.no_grad():  # indices carry no gradient: building a graph here only costs time
            return nearest_code(ze.reshape(self.M, -1, self.d_code), self.codebook).view(ze.shape[:-1])

    def lookup(self, idx: Int[torch.Tensor, "M B G"]) -> Float[torch.Tensor, "M B G c"]:
        flat = idx.reshape(self.M, -1)
        out = torch.gather(self.codebook, 1, flat.unsqueeze(-1).expand(-1, -1, self.d_code))
        return out.view(*idx.shape, self.d_code)

    @torch.no_grad()
    def ema_update(self, ze: Float[torch.Tensor, "M B G c"], idx: Int[torch.Tensor, "M B G"]) -> None:
        cfg, K = self.cfg, self.cfg.n_codes
        flat = ze.detach().reshape(-1, self.d_code)
        # one (module, code) bucket per row: index_add instead of a [M, B*G, K] one-hot matmul
        key = (idx.reshape(self.M, -1) + torch.arange(self.M, device=idx.device).unsqueeze(1) * K).reshape(-1)
        sums = torch.zeros(self.M * K, self.d_code, dtype=flat.dtype, device=flat.device).index_add_(0, key, flat)
        counts = torch.bincount(key, minlength=self.M * K).to(flat.dtype)
        _ema_step(self.ema_size, self.ema_sum, self.codebook, counts.view(self.M, K), sums.view(self.M, K, -1), cfg)

    def forward(self, x: Float[torch.Tensor, "M B d"], labels: Optional[torch.Tensor] = None,
                update: bool = True, normalized: bool = False) -> tuple[torch.Tensor, dict]:
        """Loss summed over modules (each module's term is its own mean), and the parts.
        ``normalized``: ``x`` is already standardised (training standardises once)."""
        cfg = self.cfg
        xn = x if normalized else self.normalize(x)
        ze = self.encode(xn)
        idx = self.nearest(ze)
        zq = self.lookup(idx)  # the codes before this step's EMA update
        if update and self.training:
            self.ema_update(ze, idx)
        commit = (ze - zq.detach()).pow(2).mean(dim=(1, 2, 3))  # [M]
        zst = ze + (zq - ze).detach()
        recon = (self.decode(zst) - xn).pow(2).mean(dim=(1, 2))  # [M]
        loss_m = recon + cfg.beta * commit
        con = None
        if labels is not None and cfg.lam:
            con = supcon_loss(zst.reshape(self.M, x.shape[1], self.latent), labels, cfg.temperature)
            loss_m = loss_m + cfg.lam * con
        parts = {"recon": recon.detach(), "commit": commit.detach(), "idx": idx}
        if con is not None:
            parts["supcon"] = con.detach()
        return loss_m.sum(), parts

    # -- data-dependent setup -------------------------------------------------------------
    @torch.no_grad()
    def setup(self, x: Float[torch.Tensor, "M N d"], generator: Optional[torch.Generator] = None) -> "BatchedVQAE":
        """Set the standardisation from ``x`` and (``codebook_init="data"``) the codebooks from
        ``K`` random group vectors of the untrained encoder."""
        cfg = self.cfg
        if cfg.standardize:
            self.mu.copy_(x.mean(1))
            self.sd.copy_(x.std(1, unbiased=False).clamp(min=1e-6))
        if cfg.codebook_init == "data":
            g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed + 1)
            step = self._rows_per_chunk()
            ze = torch.cat([self.encode(self.normalize(x[:, s:s + step])) for s in range(0, x.shape[1], step)], 1)
            ze = ze.reshape(self.M, -1, self.d_code)  # [M, N*G, c]
            if ze.shape[1] < cfg.n_codes:
                raise VQAEError(f"data init needs at least {cfg.n_codes} group vectors, got {ze.shape[1]}")
            # K distinct rows per module (duplicated codes would tie in every distance computation)
            pick = torch.rand(self.M, ze.shape[1], generator=g).argsort(-1)[:, :cfg.n_codes]
            cb = torch.gather(ze, 1, pick.unsqueeze(-1).expand(-1, -1, self.d_code))
            self.codebook.copy_(cb)
            self.ema_sum.copy_(cb)
            self.ema_size.fill_(float(cfg.ema_init_size))
        elif cfg.codebook_init != "normal":
            raise VQAEError(f"codebook_init must be 'data' or 'normal', got {cfg.codebook_init!r}")
        return self

    def _rows_per_chunk(self, budget: int = 1 << 23) -> int:
        # the distance tensor [M, rows * G, K] dominates: keep it near `budget` elements (32 MiB)
        return max(1, budget // (self.M * self.cfg.n_groups * self.cfg.n_codes))

    @torch.no_grad()
    def codes(self, x: Float[torch.Tensor, "M N d"], batch_size: Optional[int] = None) -> Int[torch.Tensor, "M N G"]:
        """Code index of every group for every row (no codebook update), in row chunks."""
        step = batch_size or self._rows_per_chunk()
        out = []
        for s in range(0, x.shape[1], step):
            out.append(self.nearest(self.encode(self.normalize(x[:, s:s + step]))))
        return torch.cat(out, 1)

    def module(self, m: int) -> "ReferenceVQAE":
        """A :class:`ReferenceVQAE` holding a copy of module ``m``'s current state."""
        ref = ReferenceVQAE(self.d, self.cfg, dtype=self.codebook.dtype)
        with torch.no_grad():
            for name in _LAYERS:
                getattr(ref, f"{name}_w").copy_(getattr(self, f"{name}_w")[m])
                getattr(ref, f"{name}_b").copy_(getattr(self, f"{name}_b")[m])
            for buf in ("codebook", "ema_size", "ema_sum", "mu", "sd"):
                getattr(ref, buf).copy_(getattr(self, buf)[m])
        return ref


class ReferenceVQAE(torch.nn.Module):
    """One VQ autoencoder (the same math as :class:`BatchedVQAE` for ``M = 1``, written per module
    with plain matmuls). For the benchmark's per-head loop and the equivalence test.

    It holds state only: initialisation and data-dependent setup are :class:`BatchedVQAE`'s (one
    code path), and a reference is taken from a batched model with :meth:`BatchedVQAE.module`."""

    def __init__(self, d: int, cfg: Optional[VQAEConfig] = None, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.cfg = cfg = cfg or VQAEConfig()
        self.d = int(d)
        self.latent, self.d_code = _check_dims(self.d, cfg)
        for name, (i, o) in _layer_shapes(self.d, self.latent).items():
            setattr(self, f"{name}_w", torch.nn.Parameter(torch.zeros(i, o, dtype=dtype)))
            setattr(self, f"{name}_b", torch.nn.Parameter(torch.zeros(o, dtype=dtype)))
        self.register_buffer("codebook", torch.zeros(cfg.n_codes, self.d_code, dtype=dtype))
        self.register_buffer("ema_size", torch.ones(cfg.n_codes, dtype=dtype))
        self.register_buffer("ema_sum", torch.zeros(cfg.n_codes, self.d_code, dtype=dtype))
        self.register_buffer("mu", torch.zeros(self.d, dtype=dtype))
        self.register_buffer("sd", torch.ones(self.d, dtype=dtype))

    def _lin(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return x @ getattr(self, f"{name}_w") + getattr(self, f"{name}_b")

    def encode(self, xn: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self._lin("enc1", xn), self.cfg.negative_slope)
        return rearrange(self._lin("enc2", h), "B (G c) -> B G c", G=self.cfg.n_groups)

    def nearest(self, ze: torch.Tensor) -> torch.Tensor:
        flat = ze.reshape(-1, self.d_code)
        dist = self.codebook.pow(2).sum(-1) - 2 * flat @ self.codebook.T  # plain argmin: the reference
        return dist.argmin(-1).view(ze.shape[:-1])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) / self.sd

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None,
                normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        xn = x if normalized else self.normalize(x)
        ze = self.encode(xn)
        idx = self.nearest(ze)
        zq = self.codebook[idx]  # a copy: the codes before this step's EMA update
        if self.training:
            with torch.no_grad():
                flat = ze.detach().reshape(-1, self.d_code)
                key = idx.reshape(-1)
                sums = torch.zeros(cfg.n_codes, self.d_code, dtype=flat.dtype).index_add_(0, key, flat)
                counts = torch.bincount(key, minlength=cfg.n_codes).to(flat.dtype)
                _ema_step(self.ema_size, self.ema_sum, self.codebook, counts, sums, cfg)
        commit = (ze - zq.detach()).pow(2).mean()
        zst = ze + (zq - ze).detach()
        h = F.leaky_relu(self._lin("dec1", rearrange(zst, "B G c -> B (G c)")), cfg.negative_slope)
        recon = (self._lin("dec2", h) - xn).pow(2).mean()
        loss = recon + cfg.beta * commit
        if labels is not None and cfg.lam:
            loss = loss + cfg.lam * supcon_loss(zst.reshape(1, x.shape[0], self.latent), labels, cfg.temperature)[0]
        return loss, idx

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return self.nearest(self.encode(self.normalize(x)))


# -- training -------------------------------------------------------------------------------

def _check_xy(x: torch.Tensor, labels: Optional[torch.Tensor], n_axis: int) -> None:
    if x.shape[n_axis] < 2:
        raise VQAEError(f"need at least 2 rows to train a VQ autoencoder, got {x.shape[n_axis]}")
    if not torch.isfinite(x).all():
        raise VQAEError("activations contain NaN or inf")
    if labels is not None and labels.shape[0] != x.shape[n_axis]:
        raise VQAEError(f"{labels.shape[0]} labels for {x.shape[n_axis]} rows")


def _adam(params, lr: float) -> torch.optim.Optimizer:
    # Adam's update is element-wise: one optimizer over [M, ...] tensors equals M optimizers.
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused kernels unavailable for this device/dtype
        return torch.optim.Adam(params, lr=lr)


def _batches(n: int, cfg: VQAEConfig, g: torch.Generator):
    perm = torch.randperm(n, generator=g)
    for s in range(0, n, cfg.batch_size):
        idx = perm[s:s + cfg.batch_size]
        if idx.numel() >= 2:
            yield idx


def train_vqae(
    x: Float[torch.Tensor, "M N d"],
    labels: Optional[Int[torch.Tensor, "N"]] = None,
    cfg: Optional[VQAEConfig] = None,
    *,
    model: Optional[BatchedVQAE] = None,
    progress: bool = True,
) -> tuple[BatchedVQAE, dict]:
    """Train ``M`` VQ autoencoders at once on ``x`` (``M`` modules, ``N`` rows, width ``d``).

    Every module sees the same row order (one permutation per epoch, from ``cfg.seed``).
    Pass ``model`` to continue from a given (already ``setup``) state; otherwise one is built
    with ``cfg.seed`` and set up on ``x``. Returns the model (in eval mode) and a history
    (per-epoch mean loss parts, averaged over modules).
    """
    cfg = cfg or (model.cfg if model is not None else VQAEConfig())
    if x.ndim != 3:
        raise VQAEError(f"expected activations [modules, rows, width], got shape {tuple(x.shape)}")
    _check_xy(x, labels, 1)
    if model is None:
        model = BatchedVQAE(x.shape[0], x.shape[2], cfg, dtype=x.dtype).setup(x)
    elif (model.M, model.d) != (x.shape[0], x.shape[2]):
        raise VQAEError(f"model has {model.M} modules of width {model.d}, data is {tuple(x.shape)}")
    y = None if labels is None else torch.as_tensor(labels).long()
    opt = _adam(model.parameters(), cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    hist: dict[str, list[float]] = {"recon": [], "commit": [], "supcon": []}
    model.train()
    with torch.no_grad():
        xn = model.normalize(x)
    for _ in tqdm(range(cfg.epochs), desc=f"VQ-AE x{model.M}", disable=not progress, leave=False):
        acc = {k: 0.0 for k in hist}
        nb = 0
        batches = list(_batches(x.shape[1], cfg, g))
        # one gather per epoch: the batches are then contiguous slices of the shuffled rows
        order = torch.cat(batches)
        xs = xn[:, order]
        start = 0
        for idx in batches:
            xb = xs[:, start:start + idx.numel()].contiguous()  # strided operands slow bmm's backward ~5x
            start += idx.numel()
            loss, parts = model(xb, None if y is None else y[idx], normalized=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            nb += 1
            for k in hist:
                if k in parts:
                    acc[k] += float(parts[k].mean())
        for k in hist:
            hist[k].append(acc[k] / max(nb, 1))
    model.eval()
    return model, hist


def train_reference(
    x: Float[torch.Tensor, "N d"],
    labels: Optional[Int[torch.Tensor, "N"]] = None,
    cfg: Optional[VQAEConfig] = None,
    *,
    model: Optional[ReferenceVQAE] = None,
) -> ReferenceVQAE:
    """Train one :class:`ReferenceVQAE` (same schedule and row order as :func:`train_vqae`)."""
    cfg = cfg or (model.cfg if model is not None else VQAEConfig())
    _check_xy(x, labels, 0)
    if model is None:  # the initial state of a one-module batched model (same init code path)
        model = BatchedVQAE(1, x.shape[1], cfg, dtype=x.dtype).setup(x.unsqueeze(0)).module(0)
    y = None if labels is None else torch.as_tensor(labels).long()
    opt = _adam(model.parameters(), cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    model.train()
    with torch.no_grad():
        xn = model.normalize(x)
    for _ in range(cfg.epochs):
        for idx in _batches(x.shape[0], cfg, g):
            loss, _ = model(xn[idx], None if y is None else y[idx], normalized=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return model
