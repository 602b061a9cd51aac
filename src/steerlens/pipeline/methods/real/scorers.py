"""Scorers that turn each module's code sequences into a class score, batched over modules.

A module's example is a sequence of ``G`` code indices (one per latent group, values in
``0..K-1``). A scorer is fitted on the training examples' codes and labels (``1`` = positive) of
all ``M`` modules at once and returns a score per module and example, higher = more positive.
The relevance of a module is the held-out ROC-AUC of its scores (:func:`batched_auc`).

Two scorers (methods.md, REAL, **open**):

- :class:`MarkovScorer` — the published-style scorer: one small *sequence model per class* over
  the 8 code indices, score = log-likelihood ratio ``log p⁺(c) − log p⁻(c)``. Our sequence model
  is an order-1 Markov chain (a start distribution and one transition table shared by all
  positions, add-``smoothing`` estimates), chosen over a tiny GRU because it is exact, needs no
  training loop and batches over modules as count tables ``[M, 2, K, K]``. ``order=0`` gives a
  bag-of-codes (unigram) model; ``positional=True`` uses one transition table per position.
- :class:`LogRegScorer` — the simpler scorer: L2-regularised logistic regression on code-usage
  one-hot features (``features="position"``: a one-hot of the code at each group, ``G·K``
  features; ``"bag"``: counts of each code over the groups, ``K`` features), all modules fitted
  together by L-BFGS on the sum of their (separable, convex) objectives.
- :class:`GRUScorer` (``"gru"``) and :class:`GRUNoShiftScorer` (``"gru_noshift"``) — the authors'
  scorer (``liam0949/REAL_ICLR``, ``validation/OneForAll.py``: ``GRUPrior``,
  ``train_and_evaluate_prior``): one small GRU language model per class over the ``G`` codes
  (embedding 64, one GRU layer of 64 units, a linear read-out to the ``K`` codes), trained with
  AdamW (lr 1e-3, weight decay 0.01), batches of 32 rows, gradient norm clipped to 1 per model;
  score = *length-normalised* log-likelihood ratio (mean log-probability per code, positive-class
  model minus negative-class model). Their model reads the code sequence itself and is scored on
  the same sequence, so the input at position ``t`` already holds the target code ``t``
  (``"gru_noshift"``, as they run it: it can learn to copy its input, and then scores little more
  than per-code class frequencies). ``"gru"`` is the corrected, autoregressive model: the input at
  ``t`` is a start token followed by the codes before ``t``. The ``2·M`` models are trained at once
  as one batched model (parameters with a leading module axis, batched matmuls), not as ``2·M``
  ``nn.GRU``.
"""

from __future__ import annotations

from typing import Optional

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from ....numerics import batched_roc_auc


class ScorerError(ValueError):
    """Bad codes / labels for a scorer."""


def _check(codes: torch.Tensor, labels: Optional[torch.Tensor], n_codes: int) -> None:
    if codes.ndim != 3:
        raise ScorerError(f"codes must be [modules, examples, groups], got shape {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= n_codes):
        raise ScorerError(f"code indices must lie in 0..{n_codes - 1}")
    if labels is not None:
        if labels.shape[0] != codes.shape[1]:
            raise ScorerError(f"{labels.shape[0]} labels for {codes.shape[1]} examples")
        if not ((labels == 0).any() and (labels == 1).any()):
            raise ScorerError("a scorer needs training examples of both classes (labels 0 and 1)")


def batched_auc(scores: Float[torch.Tensor, "M n"], labels: Int[torch.Tensor, "n"]) -> Float[torch.Tensor, "M"]:
    """ROC-AUC per module (Mann–Whitney: P(score⁺ > score⁻) + ½ P(tie)), exact with ties."""
    y = torch.as_tensor(labels).bool()
    if not (y.any() and (~y).any()):
        raise ScorerError("AUC needs examples of both classes")
    return batched_roc_auc(scores[:, y], scores[:, ~y]).float()


def batched_separation(scores: Float[torch.Tensor, "M n"], labels: Int[torch.Tensor, "n"]) -> Float[torch.Tensor, "M"]:
    """Standardised mean difference (d') of the scores of the two classes, per module:
    ``(mean⁺ − mean⁻) / sqrt((var⁺ + var⁻) / 2)``. Continuous where the AUC saturates at 1."""
    y = torch.as_tensor(labels).bool()
    sp, sn = scores[:, y].double(), scores[:, ~y].double()
    pooled = (0.5 * (sp.var(1, unbiased=False) + sn.var(1, unbiased=False))).sqrt().clamp(min=1e-12)
    return ((sp.mean(1) - sn.mean(1)) / pooled).float()


class MarkovScorer:
    """Log-likelihood ratio of two per-class Markov chains over code sequences (see module doc).

    Args:
        n_codes: K, the codebook size.
        order: 1 (default; start distribution + transitions) or 0 (unigram over codes).
        smoothing: additive (Laplace/Lidstone) pseudo-count per table cell.
        positional: one transition (or unigram) table per position instead of one shared table.
    """

    name = "markov"

    def __init__(self, n_codes: int = 32, order: int = 1, smoothing: float = 0.5, positional: bool = False) -> None:
        if order not in (0, 1):
            raise ScorerError(f"order must be 0 or 1, got {order}")
        if smoothing <= 0:
            raise ScorerError("smoothing must be > 0 (unseen codes would get log 0)")
        self.K, self.order, self.smoothing, self.positional = int(n_codes), int(order), float(smoothing), bool(positional)
        self.logp: Optional[torch.Tensor] = None  # [M, 2, P, S, K]  (P positions, S previous states)

    def _events(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per (module, example, step): (position slot, previous state, current code)."""
        M, N, G = codes.shape
        steps = torch.arange(G, device=codes.device)
        pos = (steps if self.positional else torch.zeros_like(steps)).expand(M, N, G)
        if self.order == 0:
            prev = torch.zeros_like(codes)
        else:
            # state K = "start" for the first group, else the previous code
            prev = torch.cat([torch.full_like(codes[..., :1], self.K), codes[..., :-1]], -1)
        return pos, prev, codes

    def _shape(self, G: int) -> tuple[int, int]:
        return (G if self.positional else 1), (self.K + 1 if self.order == 1 else 1)

    def fit(self, codes: Int[torch.Tensor, "M N G"], labels: Int[torch.Tensor, "N"]) -> "MarkovScorer":
        y = torch.as_tensor(labels).long()
        _check(codes, y, self.K)
        M, N, G = codes.shape
        P, S = self._shape(G)
        pos, prev, cur = self._events(codes)
        cls = y.view(1, N, 1).expand(M, N, G)
        mod = torch.arange(M).view(M, 1, 1).expand(M, N, G)
        key = (((mod * 2 + cls) * P + pos) * S + prev) * self.K + cur
        counts = torch.bincount(key.reshape(-1), minlength=M * 2 * P * S * self.K).double()
        counts = counts.view(M, 2, P, S, self.K) + self.smoothing
        self.logp = (counts / counts.sum(-1, keepdim=True)).log().float()
        return self

    def loglik(self, codes: Int[torch.Tensor, "M N G"]) -> Float[torch.Tensor, "M 2 N"]:
        """Log-likelihood of every sequence under each class model."""
        if self.logp is None:
            raise ScorerError("MarkovScorer is not fitted")
        _check(codes, None, self.K)
        M, N, G = codes.shape
        P, S = self._shape(G)
        if self.positional and self.logp.shape[2] != G:
            raise ScorerError(f"fitted on {self.logp.shape[2]} groups, got {G}")
        pos, prev, cur = self._events(codes)
        flat_idx = ((pos * S + prev) * self.K + cur).reshape(M, 1, N * G).expand(M, 2, N * G)
        table = self.logp.reshape(M, 2, P * S * self.K)
        return torch.gather(table, 2, flat_idx).view(M, 2, N, G).sum(-1)

    def score(self, codes: Int[torch.Tensor, "M N G"]) -> Float[torch.Tensor, "M N"]:
        ll = self.loglik(codes)
        return ll[:, 1] - ll[:, 0]


def code_features(codes: Int[torch.Tensor, "M N G"], n_codes: int, features: str = "position") -> Float[torch.Tensor, "M N F"]:
    """Code-usage features: ``"position"`` one-hot per group (``G·K``) or ``"bag"`` counts (``K``)."""
    oh = F.one_hot(codes, n_codes).float()  # [M, N, G, K]
    if features == "position":
        return oh.flatten(2)
    if features == "bag":
        return oh.sum(2)
    raise ScorerError(f"features must be 'position' or 'bag', got {features!r}")


class LogRegScorer:
    """L2 logistic regression on code-usage features, one per module, fitted jointly (see module doc).

    Args:
        n_codes: K.
        features: ``"position"`` (default) or ``"bag"``.
        C: inverse L2 strength, scikit-learn's convention (objective ``C·Σ logloss + ½‖w‖²``,
            intercept not penalised).
        max_iter: L-BFGS iterations on the joint objective.
    """

    name = "logreg"

    def __init__(self, n_codes: int = 32, features: str = "position", C: float = 1.0, max_iter: int = 200) -> None:
        if C <= 0:
            raise ScorerError("C must be > 0")
        if features not in ("position", "bag"):
            raise ScorerError(f"features must be 'position' or 'bag', got {features!r}")
        self.K, self.features, self.C, self.max_iter = int(n_codes), features, float(C), int(max_iter)
        self.w: Optional[torch.Tensor] = None
        self.b: Optional[torch.Tensor] = None

    def _index(self, codes: torch.Tensor) -> torch.Tensor:
        """Feature index of every (example, group): the one-hot features are never built, a
        logit is a sum of ``G`` gathered weights (``"bag"`` sums repeated codes, i.e. counts)."""
        if self.features == "position":
            return codes + torch.arange(codes.shape[2], device=codes.device) * self.K
        if self.features == "bag":
            return codes
        raise ScorerError(f"features must be 'position' or 'bag', got {self.features!r}")

    def _n_features(self, G: int) -> int:
        return G * self.K if self.features == "position" else self.K

    @staticmethod
    def _logits(w: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        M, N, G = idx.shape
        return torch.gather(w, 1, idx.reshape(M, N * G)).view(M, N, G).sum(-1) + b.unsqueeze(1)

    def fit(self, codes: Int[torch.Tensor, "M N G"], labels: Int[torch.Tensor, "N"]) -> "LogRegScorer":
        y = torch.as_tensor(labels).double()
        _check(codes, y, self.K)
        idx = self._index(codes)
        M, N, G = codes.shape
        w = torch.zeros(M, self._n_features(G), dtype=torch.float64, requires_grad=True)
        b = torch.zeros(M, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=self.max_iter, tolerance_grad=1e-9,
                                tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")
        yy = y.unsqueeze(0).expand(M, N)

        def closure():
            opt.zero_grad()
            logits = self._logits(w, b, idx)
            # per module: (C Σ_n logloss + ½‖w‖²) / N  — same minimiser as scikit-learn's
            loss = (self.C * F.binary_cross_entropy_with_logits(logits, yy, reduction="sum")
                    + 0.5 * w.pow(2).sum()) / N
            loss.backward()
            return loss

        opt.step(closure)
        self.w, self.b = w.detach().float(), b.detach().float()
        self.n_groups = G
        return self

    def score(self, codes: Int[torch.Tensor, "M N G"]) -> Float[torch.Tensor, "M N"]:
        if self.w is None or self.b is None:
            raise ScorerError("LogRegScorer is not fitted")
        _check(codes, None, self.K)
        if self._n_features(codes.shape[2]) != self.w.shape[1]:
            raise ScorerError(f"fitted on {self.n_groups} groups, got {codes.shape[2]}")
        return self._logits(self.w, self.b, self._index(codes))


#: the settings a GRU scorer takes (besides ``n_codes``), with the authors' values as defaults
GRU_DEFAULTS = {"epochs": 10, "hidden": 64, "emb": 64, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 32,
                "grad_clip": 1.0, "seed": 0}


class GRUScorer:
    """Log-likelihood ratio of two per-class GRU code models, all modules trained at once (module doc).

    Each of the ``2·M`` models (class × module) is the authors' ``GRUPrior``: an embedding of the
    input codes (``emb`` wide), one GRU layer (``hidden`` units, PyTorch's gate equations, zero
    initial state), a linear map to ``K`` logits per position; PyTorch's default initialisations
    (embedding N(0, 1), every GRU and read-out weight and bias U(±1/√hidden)). A class's models see
    only that class's training rows, one shuffled pass per epoch in batches of ``batch_size`` (the
    last one smaller), mean cross-entropy over the batch's codes, the gradient norm of each model
    clipped to ``grad_clip`` on its own (``clip_grad_norm_`` per model), then AdamW (betas 0.9,
    0.999; weight decay on every parameter, as ``AdamW(model.parameters())``). All modules share
    the row order (one generator, ``seed``); the fit is deterministic given ``seed`` and the
    thread count.

    Args:
        n_codes: K.
        epochs, hidden, emb, lr, weight_decay, batch_size, grad_clip, seed: see above
            (:data:`GRU_DEFAULTS`: 10, 64, 64, 1e-3, 0.01, 32, 1.0, 0). ``grad_clip=0``: no clipping.
        progress: a tqdm bar over the epochs.
    """

    name = "gru"
    #: the input at position t is (start, c_0, ..., c_{t-1}); False: (c_0, ..., c_t), target included
    shift = True

    def __init__(self, n_codes: int = 32, epochs: int = 10, hidden: int = 64, emb: int = 64, lr: float = 1e-3,
                 weight_decay: float = 0.01, batch_size: int = 32, grad_clip: float = 1.0, seed: int = 0,
                 progress: bool = False) -> None:
        if int(n_codes) < 2:
            raise ScorerError(f"n_codes must be >= 2, got {n_codes}")
        for k, v in (("epochs", epochs), ("hidden", hidden), ("emb", emb), ("batch_size", batch_size)):
            if int(v) < 1 or int(v) != v:
                raise ScorerError(f"GRU {k} must be an integer >= 1, got {v}")
        if not lr > 0:
            raise ScorerError(f"GRU lr must be > 0, got {lr}")
        if weight_decay < 0 or grad_clip < 0:
            raise ScorerError(f"GRU weight_decay and grad_clip must be >= 0, got {weight_decay} and {grad_clip}")
        self.K, self.epochs, self.hidden, self.emb = int(n_codes), int(epochs), int(hidden), int(emb)
        self.lr, self.weight_decay, self.batch_size = float(lr), float(weight_decay), int(batch_size)
        self.grad_clip, self.seed, self.progress = float(grad_clip), int(seed), bool(progress)
        self.params: Optional[list[dict[str, torch.Tensor]]] = None  # per class (0, 1): {name: [M, ...]}
        self.history: dict[str, list[float]] = {}

    @property
    def vocab(self) -> int:
        """Input symbols: the K codes, plus the start token (index K) when shifted."""
        return self.K + 1 if self.shift else self.K

    def _inputs(self, codes: torch.Tensor) -> torch.Tensor:
        if not self.shift:
            return codes
        return torch.cat([torch.full_like(codes[..., :1], self.K), codes[..., :-1]], -1)

    def _init(self, M: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        H, E, V, K = self.hidden, self.emb, self.vocab, self.K
        b = 1.0 / math.sqrt(H)

        def u(*shape):
            return (torch.rand(*shape, generator=g) * 2 - 1) * b

        # weights stored input-major (x @ W), so a layer is one batched matmul over the modules
        return {"emb": torch.randn(M, V, E, generator=g), "w_ih": u(M, E, 3 * H), "b_ih": u(M, 3 * H),
                "w_hh": u(M, H, 3 * H), "b_hh": u(M, 3 * H), "w_out": u(M, H, K), "b_out": u(M, K)}

    def _logits(self, p: dict[str, torch.Tensor], inp: torch.Tensor) -> torch.Tensor:
        """``[M, B, G, K]`` next-code logits of the models ``p`` on inputs ``inp`` ``[M, B, G]``."""
        M, B, G = inp.shape
        H, V = self.hidden, self.vocab
        # input-gate pre-activations of every symbol, then looked up (= embed, then project)
        table = torch.baddbmm(p["b_ih"].unsqueeze(1), p["emb"], p["w_ih"])  # [M, V, 3H]
        offset = (torch.arange(M, device=inp.device) * V).view(M, 1, 1)
        flat = table.reshape(M * V, 3 * H)
        idx = (inp + offset).permute(2, 0, 1)  # [G, M, B]: looked up one step at a time (small tensors)
        h = torch.zeros(M, B, H, dtype=table.dtype, device=table.device)
        outs = []
        for t in range(G):
            gh = torch.baddbmm(p["b_hh"].unsqueeze(1), h, p["w_hh"])  # [M, B, 3H]
            gi = F.embedding(idx[t], flat)
            r, z = torch.sigmoid(gi[..., :2 * H] + gh[..., :2 * H]).chunk(2, -1)  # reset, update gates
            n = torch.tanh(gi[..., 2 * H:] + r * gh[..., 2 * H:])
            h = n + z * (h - n)  # (1 - z) * n + z * h
            outs.append(h)
        out = torch.stack(outs, 2).reshape(M, B * G, H)
        return torch.baddbmm(p["b_out"].unsqueeze(1), out, p["w_out"]).view(M, B, G, self.K)

    def _train_class(self, codes: torch.Tensor, g: torch.Generator, label: int) -> tuple[dict, list[float]]:
        M, n, G = codes.shape
        p = {k: v.requires_grad_() for k, v in self._init(M, g).items()}
        opt = torch.optim.AdamW(list(p.values()), lr=self.lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=self.weight_decay)
        inputs = self._inputs(codes)
        losses = []
        bar = tqdm(range(self.epochs), desc=f"GRU{'' if self.shift else ' no-shift'} class {label} x{M}",
                   disable=not self.progress, leave=False)
        for _ in bar:
            perm = torch.randperm(n, generator=g)
            xs, ys = inputs[:, perm], codes[:, perm]
            total = 0.0
            for s in range(0, n, self.batch_size):
                x, y = xs[:, s:s + self.batch_size], ys[:, s:s + self.batch_size]
                logits = self._logits(p, x)
                # per model: mean cross-entropy over its batch's codes; the sum keeps models separate
                ce = F.cross_entropy(logits.reshape(-1, self.K), y.reshape(-1), reduction="none").view(M, -1).mean(1)
                opt.zero_grad(set_to_none=True)
                ce.sum().backward()
                if self.grad_clip > 0:
                    with torch.no_grad():
                        norm = torch.stack([q.grad.reshape(M, -1).pow(2).sum(1) for q in p.values()]).sum(0).sqrt()
                        coef = (self.grad_clip / (norm + 1e-6)).clamp(max=1.0)
                        for q in p.values():
                            q.grad.mul_(coef.view(M, *([1] * (q.ndim - 1))))
                opt.step()
                total += float(ce.detach().mean()) * x.shape[1]
            losses.append(total / n)
        return {k: v.detach() for k, v in p.items()}, losses

    def fit(self, codes: Int[torch.Tensor, "M N G"], labels: Int[torch.Tensor, "N"]) -> "GRUScorer":
        y = torch.as_tensor(labels).long()
        _check(codes, y, self.K)
        codes = codes.long()
        g = torch.Generator().manual_seed(self.seed)
        self.params, self.history = [], {}
        for c in (0, 1):
            p, losses = self._train_class(codes[:, y == c], g, c)
            self.params.append(p)
            self.history[f"ce_{c}"] = losses
        self.n_groups = codes.shape[2]
        return self

    @torch.no_grad()
    def token_loglik(self, codes: Int[torch.Tensor, "M N G"],
                     chunk: Optional[int] = None) -> Float[torch.Tensor, "M 2 N G"]:
        """``log p_c(code_t | input)`` of every code under each class model (input: see ``shift``).
        Rows are run ``chunk`` at a time (default: about 8k module-rows per chunk, the fastest on CPU)."""
        if self.params is None:
            raise ScorerError(f"{type(self).__name__} is not fitted")
        _check(codes, None, self.K)
        if self.params[0]["emb"].shape[0] != codes.shape[0]:
            raise ScorerError(f"fitted on {self.params[0]['emb'].shape[0]} modules, got {codes.shape[0]}")
        codes = codes.long()
        inputs = self._inputs(codes)
        chunk = max(1, int(chunk) if chunk is not None else 8192 // max(codes.shape[0], 1))
        out = []
        for p in self.params:
            parts = []
            for s in range(0, codes.shape[1], chunk):
                lp = torch.log_softmax(self._logits(p, inputs[:, s:s + chunk]), -1)
                parts.append(lp.gather(-1, codes[:, s:s + chunk].unsqueeze(-1)).squeeze(-1))
            out.append(torch.cat(parts, 1) if parts else codes.new_zeros(codes.shape, dtype=torch.float32))
        return torch.stack(out, 1)

    def loglik(self, codes: Int[torch.Tensor, "M N G"]) -> Float[torch.Tensor, "M 2 N"]:
        """Length-normalised log-likelihood (mean log-probability per code) under each class model."""
        return self.token_loglik(codes).mean(-1)

    def score(self, codes: Int[torch.Tensor, "M N G"]) -> Float[torch.Tensor, "M N"]:
        ll = self.loglik(codes)
        return ll[:, 1] - ll[:, 0]


class GRUNoShiftScorer(GRUScorer):
    """:class:`GRUScorer` as the authors run it: the input at position ``t`` is the code sequence
    itself, target ``t`` included (their ``model(tgt)`` scored against ``tgt``)."""

    name = "gru_noshift"
    shift = False


SCORERS = {"markov": MarkovScorer, "logreg": LogRegScorer, "gru": GRUScorer, "gru_noshift": GRUNoShiftScorer}
#: the scorers that take the GRU settings (:data:`GRU_DEFAULTS`)
GRU_SCORERS = ("gru", "gru_noshift")


def make_scorer(name: str, n_codes: int, **kw) -> "MarkovScorer | LogRegScorer | GRUScorer":
    try:
        cls = SCORERS[name]
    except KeyError:
        raise ScorerError(f"unknown scorer {name!r}; use one of {sorted(SCORERS)}") from None
    return cls(n_codes=n_codes, **kw)


def ranking_agreement(a: Float[torch.Tensor, "M"], b: Float[torch.Tensor, "M"], top: int) -> dict:
    """How two module scorings agree: Spearman rank correlation and the overlap of their top-``top`` sets."""
    from scipy.stats import spearmanr

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    # undefined (NaN) when either scoring is constant, e.g. every module at AUC 1.0: say so, no warning
    constant = a.numel() < 2 or bool((a == a[0]).all()) or bool((b == b[0]).all())
    rho = float("nan") if constant else float(spearmanr(a.numpy(), b.numpy()).statistic)
    top = min(int(top), a.numel())
    ta = set(torch.argsort(-a, stable=True)[:top].tolist())
    tb = set(torch.argsort(-b, stable=True)[:top].tolist())
    return {"spearman": rho, "top": top, "top_overlap": len(ta & tb), "top_overlap_frac": len(ta & tb) / max(top, 1)}
