"""MoSE — mixture of steering experts (FineSteer stage 2: *how* to steer, per query).

Fitting (on paired response-side data at one residual layer; math in ``methods.md``):

- **Targets**: ``Δᵢ = h̄(prompt + positive reply) − h̄(prompt + negative reply)``, the mean over the
  response tokens (``position="response_mean"``); **queries**: ``qᵢ`` = the activation at the last
  prompt token of the same prompt, at the same site (read through ``Editor.query_sites``).
- A seeded split of the pairs into a training part and a validation part (``val_frac``, for
  early stopping). Everything below is fitted on the training part only.
- **Experts**: the ``Δᵢ`` projected on their top principal components (up to ``max_components``,
  256), k-means for K in ``k_min..k_max`` (2..10); K by ``k_rule``:

  * ``"ch"`` (default): the largest Calinski–Harabasz index over ``k_min..k_max``;
  * ``"median"``: the median of three choices over ``4..10`` (the authors' public code): the
    elbow of the inertia curve (the point farthest from the chord between its end points, both
    axes scaled to [0, 1]), the largest silhouette and the largest CH index.

  Both rules' picks and the curves (inertia, CH, silhouette per K) are recorded in the artifact
  whatever the rule. The centroids ``C ∈ R^{K×d}`` are recomputed in the original space (the mean
  ``Δᵢ`` of each cluster).
- **Residual basis** ``U ∈ R^{d×r}``: the top-``rank`` principal components (centred) of the ``Δᵢ``
  after removing their projection onto span(C).
- **Router** (:class:`MoSERouter`)::

      a(q) = softmax((W_Q q̃)(W_K C̃)ᵀ / (√d_attn · τ))        q̃ = (q − μ_q) / σ_q,  C̃ = C / rms(C)
      s(q) = γ · (a(q) · W_V C + U β(q̃)),                   β: d → h → ReLU → r

  with learnable ``W_Q, W_K`` (``d → d_attn``, no bias), ``W_V`` (``d → d``, no bias), the MLP β,
  and scalars ``γ`` and ``τ = exp(log τ)``, both initialised to 1.
- **Training**: MSE(s(qᵢ), Δᵢ), AdamW (lr 5e-4, weight decay 0.01), linear warm-up for
  ``warmup_steps`` then cosine decay over the remaining steps of ``max_epochs``, mini-batches of
  ``train_batch_size``; early stopping when the validation MSE has not improved for ``patience``
  epochs (counted after warm-up); the best-validation weights are kept. Seeded (initialisation,
  split, shuffling, k-means) and deterministic on CPU.

Open choices (parameters, documented here):

- the query is standardised per dimension with the training queries' mean and standard
  deviation (floored at 5% of the median deviation), and the keys see ``C / rms(C)``, so the
  initial logits are O(1) whatever the activation scale (``standardize``);
- ``W_V`` starts as the identity and β's output layer at zero, so training starts from
  ``s(q) = a(q) · C`` — a mixture of the experts themselves — rather than from noise;
- ``d_attn`` (default ``d``) and β's hidden width (default ``d``) as in the published form.

Application: :class:`MoSEEdit` computes ``s(q)`` once per row on the prompt pass, from the live
activation at the last prompt token (``info.prompt_last``), keeps it in ``info.state`` and adds it
at every position (prompt and generated tokens); the hook layer applies ``alpha`` and the gate.
It reports ``expert_weights`` (``[b, K]``) and ``s_norm`` (``‖s(q)‖``) for the trace.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from ....hooks import Edit, EditError, HookGate, Site
from ....parallel import torch_threads
from ....hooks.edits import TokenInfo, normalise_positions
from ....hooks.sites import parse_site
from ....numerics import pca
from ...contrastive import ContrastiveActs, split_indices
from ...errors import PipelineError
from ...roles import Editor, register_role
from ...selection import Selection, resid_module
from ...steerer import Steerer
from ..baselines import ResidParams
from ...params import scaled_layer
from ...registry import register_method
from ...selectors import FixedSelector

K_RULES = ("ch", "median")
MEDIAN_RANGE = (4, 10)
#: the elbow rule inside ``k_rule="median"``: farthest below the chord, or the largest second difference
ELBOWS = ("chord", "second_diff")
#: the residual basis: PCs of Δ after removing span(C) (``"deflated"``), or of the centred Δ (``"all_pca"``)
RESIDUALS = ("deflated", "all_pca")


# ----------------------------------------------------------------------------------------
# Experts: PCA + k-means, K by Calinski-Harabasz (or the median of elbow / silhouette / CH)
# ----------------------------------------------------------------------------------------

def elbow_k(ks: Sequence[int], inertia: Sequence[float], rule: str = "chord") -> int:
    """The elbow of a decreasing inertia curve (the first K when the curve is too short).
    ``"chord"``: the K farthest below the chord joining its first and last points, both axes
    scaled to [0, 1]. ``"second_diff"`` (the authors' code): the K with the largest second
    difference of the min-max-scaled inertia (an interior K; ties: the smallest)."""
    ks = list(ks)
    if rule not in ELBOWS:
        raise PipelineError(f"elbow must be one of {ELBOWS}, got {rule!r}")
    if len(ks) < 3:
        return int(ks[0])
    if rule == "second_diff":
        y = np.asarray(inertia, float)
        span = y.max() - y.min()
        y = (y - y.min()) / span if span > 0 else np.zeros_like(y)
        d2 = y[:-2] - 2 * y[1:-1] + y[2:]  # at ks[1:-1]
        return int(ks[1 + int(np.argmax(d2))])
    x = (np.asarray(ks, float) - ks[0]) / (ks[-1] - ks[0])
    y = np.asarray(inertia, float)
    span = y[0] - y[-1]
    y = (y - y[-1]) / span if span > 0 else np.zeros_like(y)
    gap = (1.0 - x) - y  # chord from (0, 1) to (1, 0), minus the curve
    return int(ks[int(np.argmax(gap))])


def select_k(x: np.ndarray, *, k_min: int = 2, k_max: int = 10, rule: str = "ch", seed: int = 0,
             n_init: int = 10, median_range: tuple[int, int] = MEDIAN_RANGE, elbow: str = "chord") -> dict:
    """Cluster ``x`` (``[n, p]``) with k-means for every K in ``k_min..k_max`` and in
    ``median_range`` and pick K by ``rule`` (see the module docstring).

    Returns a JSON-able dict: ``k`` (the chosen K), ``rule``, ``ks`` and per-K ``inertia``,
    ``ch`` and ``silhouette``, ``k_ch`` (the CH choice over ``k_min..k_max``), ``k_median`` and its
    three parts ``k_elbow``, ``k_silhouette``, ``k_ch_median_range`` (over ``median_range``, clipped
    to ``n − 1``; ``None`` when that range is empty), and ``labels`` of the chosen K.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score, silhouette_score

    if rule not in K_RULES:
        raise PipelineError(f"k_rule must be one of {K_RULES}, got {rule!r}")
    n = int(x.shape[0])
    if n < 3:
        raise PipelineError(f"MoSE needs at least 3 training pairs to cluster, got {n}")
    if not 2 <= k_min <= k_max:
        raise PipelineError(f"need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    hi = min(k_max, n - 1)
    lo = min(k_min, hi)
    main = list(range(lo, hi + 1))
    med = [k for k in range(median_range[0], min(median_range[1], n - 1) + 1)]
    ks = sorted(set(main) | set(med))
    inertia, ch, sil, labels = {}, {}, {}, {}
    for k in ks:
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
        lab = km.labels_
        inertia[k] = float(km.inertia_)
        ok = len(set(lab.tolist())) > 1
        ch[k] = float(calinski_harabasz_score(x, lab)) if ok else float("nan")
        sil[k] = float(silhouette_score(x, lab)) if ok else float("nan")
        labels[k] = lab

    def best(score: dict, among: list[int]) -> int:  # ties: the smallest K
        vals = [score[k] if math.isfinite(score[k]) else -math.inf for k in among]
        return among[int(np.argmax(vals))]

    k_ch = best(ch, main)
    if med:
        k_el, k_si, k_cm = elbow_k(med, [inertia[k] for k in med], elbow), best(sil, med), best(ch, med)
        k_med = int(sorted([k_el, k_si, k_cm])[1])
    else:
        k_el = k_si = k_cm = k_med = None
    k = k_ch if rule == "ch" or k_med is None else k_med
    return {"k": int(k), "rule": rule, "rule_used": "ch" if k_med is None else rule, "ks": ks,
            "inertia": [inertia[k_] for k_ in ks], "ch": [ch[k_] for k_ in ks],
            "silhouette": [sil[k_] for k_ in ks], "k_ch": int(k_ch), "k_median": k_med,
            "k_elbow": k_el, "k_silhouette": k_si, "k_ch_median_range": k_cm,
            "main_range": [lo, hi], "median_range": [med[0], med[-1]] if med else None,
            "labels": labels[k].tolist()}


def pca_project(x: torch.Tensor, max_components: int) -> tuple[np.ndarray, float]:
    """``x`` (``[n, d]``) centred and projected on its top ``min(max_components, n − 1, d)``
    principal components (float64 SVD, sign-fixed: see :func:`steerlens.numerics.pca`); returns the
    scores and the explained variance fraction."""
    p = max(1, min(int(max_components), x.shape[0] - 1, x.shape[1]))
    r = pca(x, p)
    tot = r.total_energy
    frac = float((r.singular_values[:p] ** 2).sum() / tot) if tot > 0 else 1.0
    return ((x.double() - r.center) @ r.components.T).numpy(), frac


def residual_basis(delta: torch.Tensor, centroids: torch.Tensor, rank: int, mode: str = "deflated") -> torch.Tensor:
    """``U`` (``[d, r]``, orthonormal columns): the top-``rank`` principal components of the rows
    of ``delta`` after removing their projection onto the span of ``centroids`` (``"deflated"``)
    or of the centred ``delta`` as it is (``"all_pca"``, the authors' code); ``r`` is cut to the
    rank left (``[d, 0]`` if nothing is left); signs fixed as in :func:`steerlens.numerics.pca`."""
    if mode not in RESIDUALS:
        raise PipelineError(f"residual must be one of {RESIDUALS}, got {mode!r}")
    d = delta.double()
    if mode == "deflated":
        q, _ = torch.linalg.qr(centroids.double().T)  # [d, K] orthonormal basis of span(C)
        r = pca(d - (d @ q) @ q.T)
    else:
        r = pca(d)
    ref = torch.linalg.matrix_norm(d, ord=2).clamp_min(1e-30)  # the differences' own scale
    keep = int(min(rank, int((r.singular_values > ref * 1e-4).sum())))  # float32 inputs: anything smaller is noise
    return r.components[:keep].T.float().contiguous()


# ----------------------------------------------------------------------------------------
# The router
# ----------------------------------------------------------------------------------------

class MoSERouter(nn.Module):
    """``s(q) = γ · (a(q) · W_V C + U β(q̃))`` with ``a = softmax((W_Q q̃)(W_K C̃)ᵀ / (√d_attn · τ))``.

    Buffers (fitted, not trained): ``C`` (``[K, d]``), ``U`` (``[d, r]``), ``q_mean``, ``q_scale``
    (``[d]``), ``c_scale`` (scalar). ``forward(q)`` takes ``[b, d]`` and returns ``(s [b, d],
    a [b, K])``.
    """

    #: the router's switches and their defaults (ours); the authors' code and the paper differ (docs/fidelity.md)
    SWITCHES = {"bias": False, "value": True, "learn_gamma": True, "learn_tau": True, "init": "identity",
                "scale_keys": True}

    def __init__(self, centroids: torch.Tensor, basis: torch.Tensor, q_mean: Optional[torch.Tensor] = None,
                 q_scale: Optional[torch.Tensor] = None, *, d_attn: Optional[int] = None,
                 hidden: Optional[int] = None, bias: bool = False, value: bool = True, learn_gamma: bool = True,
                 learn_tau: bool = True, init: str = "identity", scale_keys: bool = True) -> None:
        super().__init__()
        if init not in ("identity", "default"):
            raise PipelineError(f"init must be 'identity' or 'default', got {init!r}")
        self.switches = {"bias": bool(bias), "value": bool(value), "learn_gamma": bool(learn_gamma),
                         "learn_tau": bool(learn_tau), "init": init, "scale_keys": bool(scale_keys)}
        k, d = centroids.shape
        r = basis.shape[1]
        if basis.shape[0] != d:
            raise PipelineError(f"residual basis has {basis.shape[0]} rows but the centroids have width {d}")
        self.d, self.k, self.r = int(d), int(k), int(r)
        self.d_attn = int(d_attn or d)
        self.hidden = int(hidden or d)
        c = centroids.float()
        self.register_buffer("C", c.clone())
        self.register_buffer("U", basis.float().clone())
        self.register_buffer("q_mean", torch.zeros(d) if q_mean is None else q_mean.float().clone())
        self.register_buffer("q_scale", torch.ones(d) if q_scale is None else q_scale.float().clone())
        rms = c.pow(2).mean().sqrt()
        self.register_buffer("c_scale", rms if float(rms) > 0 and scale_keys else torch.ones(()))
        self.W_Q = nn.Linear(d, self.d_attn, bias=bool(bias))
        self.W_K = nn.Linear(d, self.d_attn, bias=bool(bias))
        self.W_V = nn.Linear(d, d, bias=bool(bias)) if value else None
        with warnings.catch_warnings():  # r = 0 (nothing left outside span(C)) is a valid, empty residual
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            self.beta = nn.Sequential(nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, r))
        if learn_gamma:
            self.gamma = nn.Parameter(torch.ones(()))
        else:
            self.register_buffer("gamma", torch.ones(()))
        if learn_tau:
            self.log_tau = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("log_tau", torch.zeros(()))
        if init == "identity":
            with torch.no_grad():
                if self.W_V is not None:
                    self.W_V.weight.copy_(torch.eye(d))
                    if self.W_V.bias is not None:
                        self.W_V.bias.zero_()
                self.beta[2].weight.zero_()
                self.beta[2].bias.zero_()

    @property
    def tau(self) -> torch.Tensor:
        return self.log_tau.exp()

    def standardize(self, q: torch.Tensor) -> torch.Tensor:
        return (q - self.q_mean) / self.q_scale

    def weights(self, q: torch.Tensor) -> torch.Tensor:
        """Expert weights ``a(q)`` (``[b, K]``)."""
        z = self.standardize(q)
        logits = self.W_Q(z) @ self.W_K(self.C / self.c_scale).T
        return torch.softmax(logits / (math.sqrt(self.d_attn) * self.tau), dim=-1)

    def forward(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.standardize(q)
        logits = self.W_Q(z) @ self.W_K(self.C / self.c_scale).T
        a = torch.softmax(logits / (math.sqrt(self.d_attn) * self.tau), dim=-1)
        experts = self.W_V(self.C) if self.W_V is not None else self.C
        s = self.gamma * (a @ experts + self.beta(z) @ self.U.T)
        return s, a

    def config(self) -> dict:
        """The shapes (and the switches that differ from the defaults) :meth:`empty` rebuilds from."""
        out = {"d": self.d, "k": self.k, "r": self.r, "d_attn": self.d_attn, "hidden": self.hidden}
        out.update({k: v for k, v in self.switches.items() if v != self.SWITCHES[k]})
        return out

    @classmethod
    def empty(cls, cfg: dict) -> "MoSERouter":
        """An unfitted router of the shapes in ``cfg`` (for loading a state dict)."""
        return cls(torch.zeros(cfg["k"], cfg["d"]), torch.zeros(cfg["d"], cfg["r"]),
                   d_attn=cfg["d_attn"], hidden=cfg["hidden"], **{k: cfg[k] for k in cls.SWITCHES if k in cfg})


def query_stats(q: torch.Tensor, standardize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation of the training queries (std floored at 5% of its
    median, so near-constant dimensions are not blown up); ``(0, 1)`` when not standardising."""
    if not standardize:
        return torch.zeros(q.shape[1]), torch.ones(q.shape[1])
    mu = q.mean(0)
    sd = q.std(0) if q.shape[0] > 1 else torch.ones(q.shape[1])
    floor = max(float(sd.median()) * 0.05, 1e-6)
    return mu, sd.clamp_min(floor)


def lr_at(step: int, *, lr: float, warmup: int, total: int, floor: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor · lr`` at ``total``
    (``floor=0.7``: the authors' schedule; ``1``: constant after warm-up)."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    prog = min(1.0, (step - warmup) / span)
    if floor == 0.0:
        return lr * 0.5 * (1.0 + math.cos(math.pi * prog))
    return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * prog)))


def train_router(router: MoSERouter, q_tr: torch.Tensor, d_tr: torch.Tensor, q_va: torch.Tensor,
                 d_va: torch.Tensor, *, lr: float = 5e-4, weight_decay: float = 0.01, batch_size: int = 32,
                 max_epochs: int = 200, warmup_steps: int = 100, patience: int = 5, seed: int = 0,
                 threads: Optional[int] = 1, lr_floor: float = 0.0, grad_clip: Optional[float] = None) -> dict:
    """Train ``router`` in place (see the module docstring); returns the training history.

    Runs on ``threads`` CPU threads (default 1: the router's matrix products are small, so more
    threads mostly add synchronisation, and a fixed count makes the result independent of the
    caller's thread setting)."""
    with torch_threads(threads):
        return _train(router, q_tr, d_tr, q_va, d_va, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                      max_epochs=max_epochs, warmup_steps=warmup_steps, patience=patience, seed=seed,
                      lr_floor=lr_floor, grad_clip=grad_clip)


def _train(router, q_tr, d_tr, q_va, d_va, *, lr, weight_decay, batch_size, max_epochs, warmup_steps, patience,
           seed, lr_floor=0.0, grad_clip=None) -> dict:
    g = torch.Generator().manual_seed(int(seed))
    n = q_tr.shape[0]
    bs = max(1, min(int(batch_size), n))
    steps_per_epoch = math.ceil(n / bs)
    total = max(1, int(max_epochs) * steps_per_epoch)
    opt = torch.optim.AdamW(router.parameters(), lr=lr, weight_decay=weight_decay)

    held_out = q_va.shape[0] > 0  # else: stop on the training loss (the epoch's mean)

    def val_mse() -> float:
        router.eval()
        with torch.no_grad():
            return float(((router(q_va)[0] - d_va) ** 2).mean())

    best = val_mse() if held_out else math.inf
    best_state = {k: v.detach().clone() for k, v in router.state_dict().items()}
    best_epoch, bad, step = 0, 0, 0
    hist_tr, hist_va = [], [best] if held_out else []
    for epoch in range(1, int(max_epochs) + 1):
        router.train()
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            for grp in opt.param_groups:
                grp["lr"] = lr_at(step, lr=lr, warmup=warmup_steps, total=total, floor=lr_floor)
            s, _ = router(q_tr[idx])
            loss = ((s - d_tr[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(router.parameters(), grad_clip)
            opt.step()
            tot += float(loss.detach()) * len(idx)
            step += 1
        hist_tr.append(tot / n)
        v = val_mse() if held_out else tot / n
        if held_out:
            hist_va.append(v)
        if v < best:
            best, best_epoch, bad = v, epoch, 0
            best_state = {k: t.detach().clone() for k, t in router.state_dict().items()}
        elif step >= warmup_steps:
            bad += 1
            if bad >= patience:
                break
    router.load_state_dict(best_state)
    router.eval()
    return {"best_epoch": best_epoch, "epochs_run": len(hist_tr), "steps": step,
            "best_val_mse": best if held_out else None, **({} if held_out else {"stopped_on": "train_loss"}),
            "train_mse": [round(x, 6) for x in hist_tr], "val_mse": [round(x, 6) for x in hist_va],
            "steps_per_epoch": steps_per_epoch, "stopped_early": len(hist_tr) < int(max_epochs)}


# ----------------------------------------------------------------------------------------
# The edit
# ----------------------------------------------------------------------------------------

class MoSEEdit(Edit):
    """Adds the query-specific vector ``s(q)`` at every position of a residual site.

    On the prompt pass (``info.prompt_last`` given) it reads each row's activation at the last
    prompt token, computes ``s(q)`` and the expert weights once, and keeps them in ``info.state``;
    every later call (each generated token) reuses them. Without a prompt pass in the same run
    (a bare decode call) the newest column is read instead. Reports ``expert_weights`` (``[b, K]``)
    and ``s_norm`` (``[b]``) for the trace. Strength, gate and positions are the hook layer's.
    """

    def __init__(self, site, router: MoSERouter, alpha: float = 1.0, *, positions: str = "all",
                 scale: Optional[torch.Tensor] = None, gate=None, name: Optional[str] = None,
                 query: Optional["MoSEQueryRead"] = None) -> None:
        self._init_common(site, positions, alpha, scale, gate, name)
        if self.site.is_head:
            raise EditError(f"{self.site}: MoSE steers a residual site, not heads")
        self.router = router.eval()
        self.router.requires_grad_(False)
        #: where q comes from when it is read at another site than this one (``query_offset``)
        self.query = query

    def validate(self, model) -> "MoSEEdit":
        super().validate(model)
        w = self.site.width(model)
        if self.router.d != w:
            raise EditError(f"{self.site}: MoSE router has width {self.router.d} but the site has width {w}")
        return self

    def route(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, a)`` for ``[b, d]`` queries (float32, on the router's device)."""
        dev = next(self.router.parameters()).device  # the router stays where it was fitted; q comes to it
        with torch.no_grad():
            return self.router(q.to(device=dev, dtype=torch.float32))

    def delta(self, act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
        st = info.state
        b = act.shape[0]
        if info.prompt_last is not None or "s" not in st:
            if self.query is not None:
                q = self.query.holder.get("q")
                if q is None or q.shape[0] != b:
                    raise EditError(f"{self.site}: MoSE's query was not read at {self.query.site} in this pass "
                                    "(its MoSEQueryRead edit must run with it)")
            else:
                q = (act[torch.arange(b, device=act.device), info.prompt_last.to(act.device)]
                     if info.prompt_last is not None else act[:, -1])
            s, a = self.route(q)
            # s(q) in float32 for the report, and once in the activation's device and dtype for
            # every token that follows (not a copy per decode step)
            st["s"], st["a"], st["s_act"] = s, a, s.to(device=act.device, dtype=act.dtype)[:, None, :]
            st["routed"] = st.get("routed", 0) + 1
        s, a = st["s"], st["a"]
        if s.shape[0] != b:
            raise EditError(f"{self.site}: MoSE state holds {s.shape[0]} rows but the call has {b}")
        info.report("expert_weights", a)
        info.report("s_norm", s.norm(dim=-1))
        return st["s_act"]


class MoSEQueryRead(Edit):
    """Reads MoSE's query at an earlier residual site than the one MoSE edits (``query_offset``)
    and changes nothing: its delta is zero. On every call it keeps each row's activation at the
    last prompt token (the newest column on a decode call) for the :class:`MoSEEdit` it belongs
    to, which runs later in the same forward pass."""

    def __init__(self, site, alpha: float = 1.0, *, name: Optional[str] = None) -> None:
        self._init_common(site, "all", alpha, None, None, name)
        if self.site.is_head:
            raise EditError(f"{self.site}: MoSE reads its query at a residual site, not heads")
        self.holder: dict = {}

    def delta(self, act: torch.Tensor, info: TokenInfo) -> torch.Tensor:
        b = act.shape[0]
        self.holder["q"] = (act[torch.arange(b, device=act.device), info.prompt_last.to(act.device)]
                            if info.prompt_last is not None else act[:, -1])
        return torch.zeros_like(act)


# ----------------------------------------------------------------------------------------
# The editor role
# ----------------------------------------------------------------------------------------

@register_role
class MoSEEditor(Editor):
    """MoSE: query-specific steering vectors from a mixture of steering experts (module docstring).

    Args:
        positions: where ``s(q)`` is added (``"all"``: prompt and generated tokens).
        k: a fixed number of experts (``None``: chosen by ``k_rule`` over ``k_min..k_max``).
        k_rule: ``"ch"`` (Calinski–Harabasz) or ``"median"`` (median of elbow, silhouette and CH
            over 4..10, the authors' code); both picks are recorded either way.
        max_components: PCA components before k-means (cut to ``n − 1``).
        rank: residual basis size ``r``.
        d_attn, hidden: router attention width and β's hidden width (default ``d``).
        standardize: standardise the query per dimension (see the module docstring).
        lr, weight_decay, train_batch_size, max_epochs, warmup_steps, patience: training.
        val_frac: fraction of the pairs held out for early stopping (at least one pair); ``0``:
            none held out, training stops on the training loss (the authors' code; the validation
            figures in ``info`` are then ``None``).
        seed: split, initialisation, shuffling and k-means.
        n_init: k-means restarts per K.
        threads: CPU threads for training (default 1, see :func:`train_router`; ``None``: as set).
        normalize_deltas: cluster the L2-normalised ``Δᵢ`` and take the experts as the mean
            normalised ``Δᵢ`` per cluster (the paper-equation version); default ``False``.
        residual: ``"deflated"`` (default) or ``"all_pca"`` (see :func:`residual_basis`).
        elbow: the elbow rule of ``k_rule="median"``: ``"chord"`` (default) or ``"second_diff"``.
        lr_floor: the cosine schedule ends at ``lr_floor · lr`` (default 0).
        grad_clip: clip the gradient norm to this before each step (default ``None``: no clipping).
        bias, value, learn_gamma, learn_tau, init, scale_keys: the router's switches (see
            :class:`MoSERouter`; defaults: ours, no bias, ``W_V`` from the identity, β's head at 0,
            γ and τ learnt, keys see ``C / rms(C)``).
        query_offset: ``0`` (default): q and Δ are read at the edited site; ``-1``: at the input of
            the edited block (``blocks.L.hook_resid_pre``) while ``s(q)`` is added at its output
            (the authors' code reads ``hidden_states[L]`` and adds to block L's output). Needs
            ``where="post"``.
    """

    kind = "mose"
    family = "resid"

    def __init__(self, positions: str = "all", k: Optional[int] = None, k_min: int = 2, k_max: int = 10,
                 k_rule: str = "ch", max_components: int = 256, rank: int = 8, d_attn: Optional[int] = None,
                 hidden: Optional[int] = None, standardize: bool = True, lr: float = 5e-4,
                 weight_decay: float = 0.01, train_batch_size: int = 32, max_epochs: int = 200,
                 warmup_steps: int = 100, patience: int = 5, val_frac: float = 0.15, seed: int = 0,
                 n_init: int = 10, threads: Optional[int] = 1, normalize_deltas: bool = False,
                 residual: str = "deflated", elbow: str = "chord", lr_floor: float = 0.0,
                 query_offset: int = 0, bias: bool = False, value: bool = True, learn_gamma: bool = True,
                 learn_tau: bool = True, init: str = "identity", scale_keys: bool = True,
                 grad_clip: Optional[float] = None) -> None:
        if grad_clip is not None and not float(grad_clip) > 0:
            raise PipelineError(f"grad_clip must be > 0 or None, got {grad_clip}")
        switches = {"bias": bool(bias), "value": bool(value), "learn_gamma": bool(learn_gamma),
                    "learn_tau": bool(learn_tau), "init": init, "scale_keys": bool(scale_keys)}
        if init not in ("identity", "default"):
            raise PipelineError(f"init must be 'identity' or 'default', got {init!r}")
        try:
            positions = normalise_positions(positions)
        except EditError as e:
            raise PipelineError(str(e)) from None
        if k_rule not in K_RULES:
            raise PipelineError(f"k_rule must be one of {K_RULES}, got {k_rule!r}")
        if k is not None and int(k) < 1:
            raise PipelineError(f"k must be >= 1, got {k}")
        if rank < 0:
            raise PipelineError(f"rank must be >= 0, got {rank}")
        if residual not in RESIDUALS:
            raise PipelineError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        if elbow not in ELBOWS:
            raise PipelineError(f"elbow must be one of {ELBOWS}, got {elbow!r}")
        if int(query_offset) not in (0, -1):
            raise PipelineError(f"query_offset must be 0 or -1, got {query_offset}")
        if not 0.0 <= float(lr_floor) <= 1.0:
            raise PipelineError(f"lr_floor must be in [0, 1], got {lr_floor}")
        if not 0 <= val_frac < 1:
            raise PipelineError(f"val_frac must be in [0, 1), got {val_frac}")
        if lr <= 0 or max_epochs < 1 or train_batch_size < 1 or patience < 1:
            raise PipelineError("lr must be > 0 and max_epochs, train_batch_size, patience >= 1")
        super().__init__(positions=positions, k=None if k is None else int(k), k_min=int(k_min), k_max=int(k_max),
                         k_rule=k_rule, max_components=int(max_components), rank=int(rank),
                         d_attn=None if d_attn is None else int(d_attn), hidden=None if hidden is None else int(hidden),
                         standardize=bool(standardize), lr=float(lr), weight_decay=float(weight_decay),
                         train_batch_size=int(train_batch_size), max_epochs=int(max_epochs),
                         warmup_steps=int(warmup_steps), patience=int(patience), val_frac=float(val_frac),
                         seed=int(seed), n_init=int(n_init), threads=None if threads is None else int(threads),
                         normalize_deltas=bool(normalize_deltas), residual=residual, elbow=elbow,
                         lr_floor=float(lr_floor), **({"query_offset": -1} if int(query_offset) else {}),
                         **{k: v for k, v in switches.items() if v != MoSERouter.SWITCHES[k]},
                         **({} if grad_clip is None else {"grad_clip": float(grad_clip)}))
        self.module: Optional[Site] = None
        self.router: Optional[MoSERouter] = None
        self.info: dict = {}

    @property
    def fitted(self) -> bool:
        return self.router is not None

    @property
    def query_module(self) -> Optional[Site]:
        """Where the fitted editor reads q: its edited site, or the input of that block
        (``query_offset=-1``); ``None`` before fitting."""
        return None if self.module is None else self._read_site(self.module)

    def _module(self, selection: Selection) -> Site:
        if len(selection.modules) != 1 or selection.modules[0].is_head:
            raise PipelineError(f"MoSE steers one residual module; the selection has "
                                f"{[str(m) for m in selection.modules]}")
        return selection.modules[0]

    def _read_module(self, selection: Selection) -> Site:
        """Where q and Δ are read: the edited site, or the input of its block (``query_offset=-1``)."""
        return self._read_site(self._module(selection))

    def _read_site(self, mod: Site) -> Site:
        if not self.params.get("query_offset", 0):
            return mod
        if mod.kind != "resid_post":
            raise PipelineError(f"query_offset=-1 reads the input of the block whose output MoSE edits; "
                                f"{mod} is not a block output (use where='post')")
        return resid_module(mod.layer, "pre")

    def query_sites(self, model, selection: Selection) -> list[Site]:
        return [self._read_module(selection)]

    def read_sites(self, model, selection: Selection) -> list[Site]:
        r = self._read_module(selection)
        return [] if r == self._module(selection) else [r]

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, model, acts: ContrastiveActs, selection: Selection) -> None:
        t0 = time.perf_counter()
        mod = self._module(selection)
        rmod = self._read_module(selection)
        if acts.position != "response_mean":
            raise PipelineError("MoSE is fitted on response-side pairs (position 'response_mean'): the same "
                                f"prompt with the positive and with the negative reply; got position {acts.position!r}")
        if not acts.paired:
            raise PipelineError("MoSE needs paired data (pos[i] and neg[i] the same prompt with two replies)")
        pos, neg = acts.module(rmod)
        if rmod not in acts.query:
            raise PipelineError(f"MoSE needs the last-prompt-token activations at {rmod} in acts.query "
                                "(Steerer.fit reads them through query_sites)")
        q = acts.query[rmod].float()
        delta = (pos - neg).float()
        if q.shape != delta.shape:
            raise PipelineError(f"{q.shape[0]} queries of width {q.shape[1]} for {delta.shape[0]} differences "
                                f"of width {delta.shape[1]}")
        if not (torch.isfinite(q).all() and torch.isfinite(delta).all()):
            raise PipelineError(f"{mod}: activations contain NaN or inf")
        p = self.params
        n = delta.shape[0]
        if n < 4:
            raise PipelineError(f"MoSE needs at least 4 pairs (training + validation), got {n}")
        if p["val_frac"] == 0:  # no held-out pairs: stop on the training loss
            tr, va = torch.arange(n), torch.zeros(0, dtype=torch.long)
        else:
            tr, va = split_indices(n, p["val_frac"], p["seed"])
        from threadpoolctl import threadpool_limits

        with torch.random.fork_rng(devices=[]), threadpool_limits(p["threads"]), torch_threads(p["threads"]):
            torch.manual_seed(p["seed"])
            self.router, self.info = self._fit_router(q[tr], delta[tr], q[va], delta[va])
        self.module = mod
        self.info.update({"n_pairs": n, "n_train": len(tr), "n_val": len(va), "module": str(mod), "read_module": str(rmod),
                          "fit_seconds": round(time.perf_counter() - t0, 3)})

    def _fit_router(self, q_tr, d_tr, q_va, d_va) -> tuple[MoSERouter, dict]:
        p = self.params
        t0 = time.perf_counter()
        # what is clustered (and averaged into the experts): Δ, or Δ / ‖Δ‖ (normalize_deltas)
        d_cl = d_tr / d_tr.norm(dim=-1, keepdim=True).clamp_min(1e-12) if p.get("normalize_deltas") else d_tr
        x, frac = pca_project(d_cl, p["max_components"])
        ksel = select_k(x, k_min=p["k_min"], k_max=p["k_max"], rule=p["k_rule"], seed=p["seed"],
                        n_init=p["n_init"], elbow=p.get("elbow", "chord"))
        if p["k"] is not None:  # fixed K: cluster once more at that K, keep the curves for the record
            from sklearn.cluster import KMeans

            k = min(p["k"], d_tr.shape[0])
            labels = KMeans(n_clusters=k, n_init=p["n_init"], random_state=p["seed"]).fit(x).labels_.tolist()
            ksel.update({"k": k, "rule_used": "fixed", "labels": labels})
        labels = torch.tensor(ksel.pop("labels"))
        k = int(ksel["k"])
        cents = torch.stack([d_cl[labels == j].mean(0) for j in range(k)])
        sizes = [int((labels == j).sum()) for j in range(k)]
        basis = residual_basis(d_tr, cents, p["rank"], p.get("residual", "deflated"))
        t_cluster = time.perf_counter() - t0
        mu, sd = query_stats(q_tr, p["standardize"])
        router = MoSERouter(cents, basis, mu, sd, d_attn=p["d_attn"], hidden=p["hidden"],
                            **{k: p[k] for k in MoSERouter.SWITCHES if k in p})
        t0 = time.perf_counter()
        hist = train_router(router, q_tr, d_tr, q_va, d_va, lr=p["lr"], weight_decay=p["weight_decay"],
                            batch_size=p["train_batch_size"], max_epochs=p["max_epochs"],
                            warmup_steps=p["warmup_steps"], patience=p["patience"], seed=p["seed"],
                            threads=p["threads"], lr_floor=p.get("lr_floor", 0.0), grad_clip=p.get("grad_clip"))
        t_train = time.perf_counter() - t0
        with torch.no_grad():
            s_va, a_va = router(q_va)
        if q_va.shape[0]:
            # reference predictors on the validation pairs: the training mean (CAA) and zero
            mean_mse = float(((d_tr.mean(0) - d_va) ** 2).mean())
            zero_mse = float((d_va ** 2).mean())
            mose_mse = float(((s_va - d_va) ** 2).mean())
            ent = float(-(a_va * a_va.clamp_min(1e-12).log()).sum(-1).mean())
        else:  # nothing held out (val_frac=0)
            mean_mse = zero_mse = mose_mse = ent = None
        info = {"k": k, "k_selection": ksel, "pca_explained": frac, "cluster_sizes": sizes,
                "centroid_norms": [float(c.norm()) for c in cents], "rank": int(basis.shape[1]),
                "training": hist, "val_mse": mose_mse, "val_mse_mean_vector": mean_mse, "val_mse_zero": zero_mse,
                "val_r2_vs_mean": 1.0 - mose_mse / mean_mse if mean_mse else None,
                "val_router_entropy": ent, "gamma": float(router.gamma.detach()), "tau": float(router.tau.detach()),
                "cluster_seconds": round(t_cluster, 3), "train_seconds": round(t_train, 3)}
        return router, info

    # -- applying ------------------------------------------------------------------------------
    def route(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s(q), a(q))`` for ``[n, d]`` last-prompt-token activations (reports, plots)."""
        self._require_fitted()
        with torch.no_grad():
            return self.router(q.float())  # type: ignore[misc]

    def edits(self, model, selection: Selection, alpha: float, gate: Optional[HookGate] = None) -> list[Edit]:
        self._require_fitted()
        mod = self._module(selection)
        if mod != self.module:
            raise PipelineError(f"MoSE was fitted at {self.module}, not {mod}")
        if not self.params.get("query_offset", 0):
            return [MoSEEdit(mod, self.router, alpha, gate=gate, positions=self.params["positions"])]  # type: ignore[arg-type]
        reader = MoSEQueryRead(self._read_module(selection), alpha)
        return [reader, MoSEEdit(mod, self.router, alpha, gate=gate, positions=self.params["positions"],  # type: ignore[arg-type]
                                 query=reader)]

    def check_model(self, model) -> None:
        if self.router is not None and self.module is not None:
            w = self.module.width(model)
            if self.router.d != w:
                raise PipelineError(f"{self.module}: MoSE router has width {self.router.d} but the model's site has width {w}")

    # -- state ---------------------------------------------------------------------------------
    def extra_state(self) -> dict:
        if self.router is None:
            return {}
        return {"module": str(self.module), "router": self.router.config(), "info": self.info}

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.router is None:
            return {}
        return {f"router.{k}": v.detach().clone() for k, v in self.router.state_dict().items()}

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        if not extra:
            return
        router = MoSERouter.empty(extra["router"])
        sd = {k[len("router."):]: v for k, v in tensors.items() if k.startswith("router.")}
        missing = sorted(set(router.state_dict()) - set(sd))
        if missing:
            raise PipelineError(f"MoSEEditor: tensors {missing} missing from the artifact")
        router.load_state_dict(sd)
        self.router = router.eval()
        self.module = parse_site(extra["module"])
        self.info = dict(extra.get("info", {}))


# ----------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------

#: Default layer on the default model (SmolLM2-135M-Instruct, 30 layers): the layer the CAA safety
#: sweep chose on val (README) and the SCS gate's default, so MoSE, FineSteer and CAA + SCS steer
#: the same layer unless told otherwise.
DEFAULT_LAYER = 14


def mose_params(**kw) -> dict:
    """The :class:`MoSEEditor` keyword arguments among ``kw``."""
    import inspect

    names = set(inspect.signature(MoSEEditor.__init__).parameters) - {"self"}
    return {k: v for k, v in kw.items() if k in names}


@dataclass(frozen=True)
class MoSEParams(ResidParams):
    """:func:`make_mose`'s parameters."""
    layer: int = DEFAULT_LAYER
    k: Optional[int] = None
    k_rule: str = "ch"
    k_min: int = 2
    k_max: int = 10
    max_components: int = 256
    rank: int = 8
    d_attn: Optional[int] = None
    hidden: Optional[int] = None
    standardize: bool = True
    lr: float = 5e-4
    weight_decay: float = 0.01
    train_batch_size: int = 32
    max_epochs: int = 200
    warmup_steps: int = 100
    patience: int = 5
    val_frac: float = 0.15
    seed: int = 0
    n_init: int = 10
    threads: Optional[int] = 1
    batch_size: int = 16
    normalize_deltas: bool = False
    residual: str = "deflated"
    elbow: str = "chord"
    lr_floor: float = 0.0
    query_offset: int = 0
    bias: bool = False
    value: bool = True
    learn_gamma: bool = True
    learn_tau: bool = True
    init: str = "identity"
    scale_keys: bool = True
    grad_clip: Optional[float] = None


#: The authors' released code (``jzhang538/FineSteer``; docs/fidelity.md, "MoSE") on the default
#: model: layer 12 of 32 scaled by relative depth to 30 layers (11), α 2.5, K by the median of
#: elbow (largest second difference), silhouette and CH over 4..10 on the raw Δ, the residual
#: basis as the top 10 PCs of the centred Δ, no query standardisation, batch 136, cosine decay
#: floored at 0.7 · lr, at most 100 epochs, q and Δ read at the input of block 11 and s(q) added at
#: its output (``query_offset=-1``), and their router: Q, K, V with bias, PyTorch's initialisation
#: (no identity V, no zero β head), raw q and C (``standardize=False``, ``scale_keys=False``), γ and
#: τ learnt, no held-out pairs (``val_frac=0``: stop on the training loss). Not set (not
#: implemented): their data (docs/fidelity.md items 4–5). Gradients are never clipped here, as in their code (their clip call does nothing).
MOSE_PAPER = {"layer": scaled_layer(12, 32), "alpha": 2.5, "k": None, "k_rule": "median", "elbow": "second_diff",
              "k_min": 4, "k_max": 10, "normalize_deltas": False, "rank": 10, "residual": "all_pca",
              "standardize": False, "train_batch_size": 136, "weight_decay": 0.01, "lr": 5e-4, "lr_floor": 0.7,
              "max_epochs": 100, "patience": 5, "val_frac": 0.0, "query_offset": -1,
              "bias": True, "value": True, "learn_gamma": True, "learn_tau": True, "init": "default",
              "scale_keys": False}
#: The paper-equation version (``YukinoAsuna/FineSteer`` ``MoSEConfig.preset("MoSE")``): K by CH over
#: 4..10 on L2-normalised Δ, experts the mean normalised Δ, no V / γ / τ, full batch (a batch size
#: above any fit set), weight decay 1e-5, constant lr, 10 % validation, patience 8, gradients clipped at 1.
MOSE_PAPER_EQ = {**{k: v for k, v in MOSE_PAPER.items() if k != "elbow"}, "k_rule": "ch", "normalize_deltas": True,
                 "weight_decay": 1e-5, "lr_floor": 1.0, "patience": 8, "val_frac": 0.1,
                 "value": False, "learn_gamma": False, "learn_tau": False, "train_batch_size": 1_000_000,
                 "grad_clip": 1.0}
MOSE_PRESETS = {"paper": MOSE_PAPER, "paper_eq": MOSE_PAPER_EQ}


@register_method("mose", help="MoSE: query-specific vector from a mixture of steering experts (no gate)",
                 family="resid", contract={"params": {"layer": 1, "alpha": 4.0, "max_epochs": 40, "warmup_steps": 5},
                                           "gen_alpha": 20.0},
                 presets=MOSE_PRESETS)
def make_mose(*, layer: int = DEFAULT_LAYER, alpha: float = 1.0, where: str = "post", positions: str = "all",
              k: Optional[int] = None, k_rule: str = "ch", k_min: int = 2, k_max: int = 10, max_components: int = 256,
              rank: int = 8, d_attn: Optional[int] = None, hidden: Optional[int] = None, standardize: bool = True,
              lr: float = 5e-4, weight_decay: float = 0.01, train_batch_size: int = 32, max_epochs: int = 200,
              warmup_steps: int = 100, patience: int = 5, val_frac: float = 0.15, seed: int = 0, n_init: int = 10,
              threads: Optional[int] = 1, batch_size: int = 16, normalize_deltas: bool = False,
              residual: str = "deflated", elbow: str = "chord", lr_floor: float = 0.0,
              query_offset: int = 0, bias: bool = False, value: bool = True, learn_gamma: bool = True,
              learn_tau: bool = True, init: str = "identity", scale_keys: bool = True,
              grad_clip: Optional[float] = None) -> Steerer:
    """MoSE without a gate (the ablation of FineSteer) at ``blocks.{layer}.hook_resid_{where}``; fit on
    response-side pairs (``steerlens fit --method mose --task safety``)."""
    p = MoSEParams.of(locals())
    params = p.record()
    return Steerer(FixedSelector([str(resid_module(p.layer, p.where))]), MoSEEditor(**mose_params(**params)),
                   alpha=p.alpha, method="mose", method_params=params, batch_size=p.batch_size)


__all__ = ["MoSEEditor", "MoSEEdit", "MoSERouter", "select_k", "elbow_k", "pca_project", "residual_basis",
           "train_router", "query_stats", "lr_at", "K_RULES", "make_mose", "mose_params", "DEFAULT_LAYER", "MoSEParams",
           "ELBOWS", "RESIDUALS", "MOSE_PRESETS", "MoSEQueryRead"]
