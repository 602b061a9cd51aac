"""REAL: behaviour-relevant module selection with VQ autoencoders (methods.md, REAL).

:func:`real_relevance` is the whole scoring step for ``M`` modules of equal width:

1. split the examples 80/20 (seeded; by pair for paired data, so both answers to one question
   fall on the same side — :func:`steerlens.pipeline.selectors.class_split`);
2. train one VQ autoencoder per module on the *training* rows only, all modules at once
   (:func:`~.vqae.train_vqae`; the supervised contrastive term sees training labels only, so the
   held-out rows never shape the codes);
3. encode every row to its ``G`` code indices;
4. fit each scorer on the training codes and take its ROC-AUC on the held-out codes.

:class:`REALSelector` wraps this as a pipeline selector: candidates are every attention head
(``hook_z``, default) or every residual layer; it keeps the top ``H`` modules by AUC with weights
``w = AUC / max AUC over the selected``; steering then uses the ITI editor,
``z ← z + alpha · w · sigma · theta``. The method is registered as ``"real"``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Optional, Sequence

import torch
from jaxtyping import Float, Int

from ....hooks import Site
from ....models import as_model
from ...contrastive import ContrastiveActs
from ...errors import PipelineError
from ...roles import Selector, register_role
from ...selection import Selection, all_head_modules, resid_module
from ...steerer import Steerer
from ...editors import ITIEditor
from ...params import MethodParams, list_or_none
from ...registry import register_method
from ...selectors import class_split, top_h_selection
from .scorers import (GRU_DEFAULTS, GRU_SCORERS, ScorerError, batched_auc, batched_separation, make_scorer,
                      ranking_agreement)
from .vqae import VQAEConfig, train_vqae

#: REAL's published H is 48 of 1024 heads (7B Llama); by default H scales with the candidate count.
PUBLISHED_H, PUBLISHED_CANDIDATES = 48, 1024
#: Runs (folds x seeds) REAL's relevance is averaged over by default (see REALSelector ``repeats``).
DEFAULT_REPEATS = 10


def default_heads(n_candidates: int) -> int:
    """H scaled from the published 48 of 1024 (13 of SmolLM2's 270 heads)."""
    return max(1, round(PUBLISHED_H * n_candidates / PUBLISHED_CANDIDATES))


@dataclass
class RelevanceResult:
    """Everything :func:`real_relevance` computed (tensors over ``M`` modules).

    Attributes:
        auc: ``{scorer: [M]}`` held-out ROC-AUC per module.
        separation: ``{scorer: [M]}`` held-out d' of the scores (tie-breaker where AUCs saturate).
        codes: ``[M, N, G]`` code indices of every row (rows: pos then neg).
        labels: ``[N]`` 1 = positive.
        train: ``[N]`` bool, the rows the autoencoders and scorers were fitted on.
        usage: ``[M, K, 2]`` how often each code is used by negative (0) / positive (1) training rows.
        history: per-epoch mean loss parts.
        seconds: ``{"vqae": ..., "scorers": ...}`` wall time.
    """

    auc: dict[str, torch.Tensor]
    separation: dict[str, torch.Tensor]
    codes: torch.Tensor
    labels: torch.Tensor
    train: torch.Tensor
    usage: torch.Tensor
    history: dict
    seconds: dict = field(default_factory=dict)

    @property
    def dead_codes(self) -> Int[torch.Tensor, "M"]:
        """Codes no training row uses, per module."""
        return (self.usage.sum(-1) == 0).sum(-1)

    def agreement(self, a: str, b: str, top: int) -> dict:
        return ranking_agreement(self.auc[a], self.auc[b], top)


def code_usage(codes: Int[torch.Tensor, "M N G"], labels: Int[torch.Tensor, "N"], n_codes: int) -> Int[torch.Tensor, "M K 2"]:
    """Per module, how often each code appears in the rows of each class (``[..., 0]`` negative)."""
    M, N, G = codes.shape
    y = torch.as_tensor(labels).long().view(1, N, 1).expand(M, N, G)
    mod = torch.arange(M).view(M, 1, 1).expand(M, N, G)
    key = (mod * n_codes + codes) * 2 + y
    return torch.bincount(key.reshape(-1), minlength=M * n_codes * 2).view(M, n_codes, 2)


def real_relevance(
    pos: Float[torch.Tensor, "M n_pos d"],
    neg: Float[torch.Tensor, "M n_neg d"],
    cfg: Optional[VQAEConfig] = None,
    *,
    scorers: Sequence[str] = ("markov", "logreg"),
    scorer_kwargs: Optional[dict[str, dict]] = None,
    test_frac: float = 0.2,
    seed: int = 0,
    paired: bool = False,
    module_chunk: Optional[int] = None,
    progress: bool = True,
    fold: Optional[tuple[int, int]] = None,
    ae_rows: str = "train",
    auc_split: str = "grouped",
) -> RelevanceResult:
    """Score ``M`` modules by how well their VQ codes separate ``pos`` from ``neg`` (see module doc).

    Args:
        pos, neg: activations ``[M, n, d]`` of every module (same width ``d``).
        cfg: autoencoder hyper-parameters (default :class:`VQAEConfig`).
        scorers: names from :data:`.scorers.SCORERS`; the AUC of each is returned.
        scorer_kwargs: ``{name: kwargs}`` for the scorers (e.g. ``{"markov": {"order": 0}}``,
            ``{"gru_noshift": {"epochs": 6}}``; the GRU scorers' bars follow ``progress``).
        test_frac, seed: the held-out split (80/20 by default; ``seed`` also seeds nothing else —
            the autoencoders use ``cfg.seed``).
        paired: ``pos[:, i]`` and ``neg[:, i]`` belong together (split by pair).
        module_chunk: train at most this many modules at once (bounds memory; ``None`` = all).
        fold: ``(k, n_folds)``: hold out fold ``k`` of a seeded ``n_folds``-fold partition
            (:func:`class_folds`) instead of a random ``test_frac`` split.
        ae_rows: ``"train"`` (default): the autoencoders see the training rows only; ``"all"``:
            every row, held-out ones included with their labels (the authors' code; a leak, to
            reproduce their figures).
        auc_split: ``"grouped"`` (default): held-out rows by pair when ``paired``; ``"rows_balanced"``
            (the authors' code): each class split on its own (pairs ignored), then the held-out
            rows of the larger class cut to the smaller class's count.
    """
    if ae_rows not in AE_ROWS:
        raise PipelineError(f"ae_rows must be one of {AE_ROWS}, got {ae_rows!r}")
    if auc_split not in AUC_SPLITS:
        raise PipelineError(f"auc_split must be one of {AUC_SPLITS}, got {auc_split!r}")
    cfg = cfg or VQAEConfig()
    if pos.ndim != 3 or neg.ndim != 3 or pos.shape[0] != neg.shape[0] or pos.shape[2] != neg.shape[2]:
        raise PipelineError(f"pos/neg must be [modules, n, d] with equal modules and width; got "
                            f"{tuple(pos.shape)} and {tuple(neg.shape)}")
    if not scorers:
        raise PipelineError("give at least one scorer")
    if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
        raise PipelineError("activations contain NaN or inf")
    by_pair = paired and auc_split == "grouped"
    if fold is None:
        (trp, trn), (tep, ten) = class_split(pos.shape[1], neg.shape[1], by_pair, test_frac, seed)
    else:
        (trp, trn), (tep, ten) = class_folds(pos.shape[1], neg.shape[1], by_pair, fold[1], fold[0], seed)
    if auc_split == "rows_balanced":
        m = min(len(tep), len(ten))
        tep, ten = tep[:m], ten[:m]
    x = torch.cat([pos, neg], 1).float()
    n_pos = pos.shape[1]
    labels = torch.cat([torch.ones(n_pos, dtype=torch.long), torch.zeros(neg.shape[1], dtype=torch.long)])
    train = torch.zeros(x.shape[1], dtype=torch.bool)
    train[trp] = True
    train[trn + n_pos] = True
    test = torch.zeros_like(train)
    test[tep] = True
    test[ten + n_pos] = True

    t0 = time.perf_counter()
    M = x.shape[0]
    step = M if module_chunk is None else max(1, int(module_chunk))
    codes, hist = [], {}
    ae = train if ae_rows == "train" else torch.ones_like(train)
    for s in range(0, M, step):
        model, hist = train_vqae(x[s:s + step, ae], labels[ae], cfg, progress=progress)
        codes.append(model.codes(x[s:s + step]))
        del model
    codes_t = torch.cat(codes, 0)
    t1 = time.perf_counter()
    aucs, seps = {}, {}
    kw = scorer_kwargs or {}
    for name in scorers:
        skw = dict(kw.get(name, {}))
        if name in GRU_SCORERS:
            skw.setdefault("progress", progress)
        sc = make_scorer(name, cfg.n_codes, **skw).fit(codes_t[:, train], labels[train])
        held = sc.score(codes_t[:, test])
        aucs[name] = batched_auc(held, labels[test])
        seps[name] = batched_separation(held, labels[test])
    t2 = time.perf_counter()
    usage = code_usage(codes_t[:, train], labels[train], cfg.n_codes)
    return RelevanceResult(aucs, seps, codes_t, labels, train, usage, hist,
                           {"vqae": t1 - t0, "scorers": t2 - t1})


def _fold_indices(n: int, n_folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n < n_folds:
        raise PipelineError(f"need at least {n_folds} examples per class for {n_folds} folds, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    bounds = [round(i * n / n_folds) for i in range(n_folds + 1)]
    test = perm[bounds[fold]:bounds[fold + 1]]
    train = torch.cat([perm[:bounds[fold]], perm[bounds[fold + 1]:]])
    return train.sort().values, test.sort().values


def class_folds(n_pos: int, n_neg: int, paired: bool, n_folds: int, fold: int, seed: int):
    """``((train_pos, train_neg), (test_pos, test_neg))`` for fold ``fold`` of a seeded
    ``n_folds``-fold partition: over the folds every example is held out exactly once. Paired
    data is partitioned by pair (as :func:`~steerlens.pipeline.selectors.class_split`). A class
    with fewer than ``n_folds`` examples (but at least 2) is split into as many folds as it has
    examples (fold ``fold mod n``)."""
    if not 0 <= fold < n_folds or n_folds < 2:
        raise PipelineError(f"fold {fold} of {n_folds}: need n_folds >= 2 and 0 <= fold < n_folds")
    smallest = min(n_pos, n_neg)
    if smallest < 2:
        raise PipelineError(f"need at least 2 examples per class to hold some out, got {smallest}")
    if smallest < n_folds:
        n_folds, fold = smallest, fold % smallest
    if paired and n_pos == n_neg:
        tr, te = _fold_indices(n_pos, n_folds, fold, seed)
        return (tr, tr), (te, te)
    trp, tep = _fold_indices(n_pos, n_folds, fold, seed)
    trn, ten = _fold_indices(n_neg, n_folds, fold, seed + 1)
    return (trp, trn), (tep, ten)


def repeat_plan(repeats: int, test_frac: float, seed: int) -> list[dict]:
    """The (partition seed, fold, autoencoder seed offset) of each of REAL's ``repeats`` runs.

    ``K = round(1 / test_frac)`` folds (5 for the 80/20 split): run ``r`` holds out fold ``r mod K``
    of the partition drawn with seed ``1000·seed + r // K`` and trains its autoencoders from seed
    offset ``1000·seed + r``. So every ``K`` runs cover each example once as held-out data, and
    selectors built with different ``seed`` share no partition and no initialisation."""
    k = max(2, round(1 / test_frac))
    return [{"partition_seed": 1000 * seed + r // k, "fold": r % k, "n_folds": k, "init_offset": 1000 * seed + r}
            for r in range(repeats)]


_VQ_FIELDS = {f.name for f in fields(VQAEConfig)}
#: which rows the autoencoders see (``ae_rows``) and how rows are held out for the AUC (``auc_split``)
AE_ROWS = ("train", "all")
AUC_SPLITS = ("grouped", "rows_balanced")
#: the held-out AUC at which a module counts as separating perfectly (``saturation_max``)
SATURATED_AUC = 0.99


def check_gru_settings(gru: Optional[dict]) -> None:
    """A one-line error for unknown or bad GRU scorer settings (``REALSelector(gru=...)``)."""
    if not gru:
        return
    if not isinstance(gru, dict):
        raise PipelineError(f"gru must be a dict of GRU scorer settings, got {type(gru).__name__}")
    bad = sorted(set(gru) - set(GRU_DEFAULTS))
    if bad:
        raise PipelineError(f"unknown GRU scorer settings {bad}; known: {sorted(GRU_DEFAULTS)}")
    try:
        make_scorer("gru", 2, **gru)
    except (ScorerError, TypeError, ValueError) as e:
        raise PipelineError(f"bad GRU scorer settings: {e}") from None


def top_h_by_auc(modules: Sequence[Site], auc: torch.Tensor, h: int, score_name: str,
                 tiebreak: Optional[torch.Tensor] = None, margin: float = 0.0) -> Selection:
    """The ``h`` modules with the highest AUC, weights ``AUC / max AUC`` over the selected.

    Ties in AUC (common when classes separate perfectly: on response-side refusal data most
    heads reach AUC 1.0) are broken by ``tiebreak`` (higher first; REAL uses the held-out d' of
    the scores), then by module order: :func:`~steerlens.pipeline.selectors.top_h_selection` with
    relative weights, the same rule ITI's selector uses."""
    return top_h_selection(modules, auc, h, score_name, weights="relative", tiebreak=tiebreak, margin=margin)


@register_role
class REALSelector(Selector):
    """REAL's module ranking: top-H modules by held-out AUC of a scorer on their VQ codes.

    Open choices (parameters):
        heads: H (default ``None``: scaled from the published 48 of 1024 to the candidate count).
        target: ``"heads"`` (every head's ``hook_z``) or ``"resid"`` (every layer's residual).
        where: residual hook for ``target="resid"`` (``"post"``).
        scorer: the ranking scorer, ``"markov"`` (per-class order-1 Markov chains, log-likelihood
            ratio), ``"logreg"`` (code-usage one-hot), ``"gru_noshift"`` (the authors' per-class GRUs
            as they run them: the input holds the code being predicted) or ``"gru"`` (the same GRUs,
            autoregressive); see :mod:`.scorers`.
        compare: a second scorer also run for diagnostics (its AUCs and the ranking agreement are
            stored), or ``None``.
        markov_order, smoothing: the Markov scorer's order (0/1) and pseudo-count.
        gru: settings of both GRU scorers (keys of :data:`.scorers.GRU_DEFAULTS`: ``epochs``,
            ``hidden``, ``emb``, ``lr``, ``weight_decay``, ``batch_size``, ``grad_clip``, ``seed``;
            the authors' values are the defaults). Each run offsets ``seed`` as it offsets the
            autoencoders' (``1000·seed`` for one run, the run's ``init_offset`` for repeats).
        tiebreak: ``"separation"`` (default) orders modules of equal AUC by the held-out d' of their
            scores (AUCs saturate at 1.0 on easy data, e.g. refusal vs compliance, where ordering
            ties by module index would pick the first layers); ``"order"``: by module index.
        test_frac, seed: the held-out split (80/20, by pair for paired data).
        repeats: average the held-out AUC (and d') over this many runs, each with its own held-out
            fold and autoencoder initialisation (:func:`repeat_plan`: ``K = 1/test_frac`` folds per
            partition seed, so 10 runs = two 5-fold cross-validations). One run's AUC moves a lot
            with the split and the initialisation (Spearman 0.6 between seeds on TruthfulQA);
            the average is the stable relevance. ``repeats=1`` is the single published-style run
            (random 80/20 split from ``seed``, autoencoders from ``vqae["seed"] + 1000·seed``).
        layers: restrict candidates to these layers (in this order: the order of preference when
            ``margin > 0``).
        margin: AUCs within ``margin`` of the best count as tied, and the first listed candidate
            among them is chosen (:func:`~steerlens.pipeline.selectors.margin_order`; 0: the best
            AUC, ties by ``tiebreak``). On the main job's data REAL's layer AUCs lie within 0.03 of
            each other and a 1e-5 relative perturbation of the activations (another BLAS) flips the
            plain argmax; with ``repeats=3, margin=0.05`` the choice holds.
        module_chunk: train at most this many autoencoders at once (memory bound).
        vqae: overrides of :class:`~.vqae.VQAEConfig` fields (``epochs``, ``n_codes``, ``lam``, ...).

    Weights: ``AUC / max AUC`` over the selected modules. ``Selection.scores`` holds every
    candidate's (mean) AUC; fitted state also keeps the comparison scorer's AUCs, every run's AUC
    (``auc_runs_<scorer>`` ``[repeats, M]``) and their spread (``auc_std_<scorer>``), dead codes and
    per-class code usage (``usage`` tensor ``[M, K, 2]``, of the first run).
    """

    kind = "real_selector"

    def __init__(self, heads: Optional[int] = None, target: str = "heads", where: str = "post",
                 scorer: str = "markov", compare: Optional[str] = "logreg", markov_order: int = 1,
                 smoothing: float = 0.5, test_frac: float = 0.2, seed: int = 0,
                 layers: Optional[Sequence[int]] = None, module_chunk: Optional[int] = None,
                 vqae: Optional[dict] = None, tiebreak: str = "separation", repeats: int = DEFAULT_REPEATS,
                 margin: float = 0.0, drop_zero_auc: bool = False, saturation_max: Optional[float] = None,
                 ae_rows: str = "train", auc_split: str = "grouped", gru: Optional[dict] = None) -> None:
        if ae_rows not in AE_ROWS:
            raise PipelineError(f"ae_rows must be one of {AE_ROWS}, got {ae_rows!r}")
        if auc_split not in AUC_SPLITS:
            raise PipelineError(f"auc_split must be one of {AUC_SPLITS}, got {auc_split!r}")
        if saturation_max is not None and not 0 <= float(saturation_max) <= 1:
            raise PipelineError(f"saturation_max must be in [0, 1] (a fraction of modules) or None, got {saturation_max}")
        if not 0 <= float(margin) < 1:
            raise PipelineError(f"margin must be in [0, 1) (an AUC difference), got {margin}")
        if int(repeats) < 1:
            raise PipelineError(f"repeats must be >= 1, got {repeats}")
        if tiebreak not in ("separation", "order"):
            raise PipelineError(f"tiebreak must be 'separation' or 'order', got {tiebreak!r}")
        if heads is not None and int(heads) < 1:
            raise PipelineError(f"heads (H) must be >= 1, got {heads}")
        if target not in ("heads", "resid"):
            raise PipelineError(f"target must be 'heads' or 'resid', got {target!r}")
        if not 0 < test_frac < 1:
            raise PipelineError(f"test_frac must be in (0, 1), got {test_frac}")
        from .scorers import SCORERS

        for s in (scorer, compare):
            if s is not None and s not in SCORERS:
                raise PipelineError(f"unknown scorer {s!r}; use one of {sorted(SCORERS)}")
        bad = sorted(set(vqae or {}) - _VQ_FIELDS)
        if bad:
            raise PipelineError(f"unknown VQ-AE settings {bad}; known: {sorted(_VQ_FIELDS)}")
        check_gru_settings(gru)
        super().__init__(heads=None if heads is None else int(heads), target=target, where=where, scorer=scorer,
                         compare=None if compare == scorer else compare, markov_order=int(markov_order),
                         smoothing=float(smoothing), test_frac=float(test_frac), seed=int(seed),
                         layers=None if layers is None else [int(x) for x in layers],
                         module_chunk=None if module_chunk is None else int(module_chunk),
                         vqae=dict(vqae or {}), tiebreak=tiebreak, repeats=int(repeats), margin=float(margin),
                         **({"drop_zero_auc": True} if drop_zero_auc else {}),
                         **({} if saturation_max is None else {"saturation_max": float(saturation_max)}),
                         **({} if ae_rows == "train" else {"ae_rows": ae_rows}),
                         **({} if auc_split == "grouped" else {"auc_split": auc_split}),
                         **({"gru": dict(gru)} if gru else {}))
        self.result_info: dict = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self.result: Optional[RelevanceResult] = None

    @property
    def vqae_config(self) -> VQAEConfig:
        return VQAEConfig(**self.params["vqae"])

    def candidates(self, model) -> list[Site]:
        m = as_model(model)
        if self.params["target"] == "heads":
            return all_head_modules(m, self.params["layers"])
        layers = range(m.n_layers) if self.params["layers"] is None else self.params["layers"]
        return [resid_module(layer, self.params["where"]) for layer in layers]

    def candidate_sites(self, model) -> list[Site]:
        m = as_model(model)
        if self.params["target"] == "resid":
            return [s.validate(m) for s in self.candidates(m)]
        layers = range(m.n_layers) if self.params["layers"] is None else self.params["layers"]
        return [Site.head(layer, range(m.n_heads)).validate(m) for layer in layers]

    def score(self, model, acts: ContrastiveActs, progress: bool = False) -> tuple[list[Site], RelevanceResult]:
        """Every candidate and the :class:`RelevanceResult` (AUC and d' averaged over the runs;
        codes and usage of the first run; ``runs`` holds every run's AUCs)."""
        mods = self.candidates(model)
        pos, neg = acts.stacked(mods)
        names = [self.params["scorer"]] + ([self.params["compare"]] if self.params["compare"] else [])
        gru = self.params.get("gru", {})

        def scorer_kwargs(offset: int) -> dict:
            # the GRUs are initialised and shuffled from their seed offset like the autoencoders
            g = {**gru, "seed": int(gru.get("seed", GRU_DEFAULTS["seed"])) + offset}
            return {"markov": {"order": self.params["markov_order"], "smoothing": self.params["smoothing"]},
                    **{name: dict(g) for name in GRU_SCORERS}}

        kw = dict(scorers=names,
                  test_frac=self.params["test_frac"], paired=acts.paired, module_chunk=self.params["module_chunk"],
                  progress=progress, ae_rows=self.params.get("ae_rows", "train"),
                  auc_split=self.params.get("auc_split", "grouped"))
        cfg = self.vqae_config
        R = self.params.get("repeats", 1)
        if R == 1:  # autoencoders from vqae["seed"], offset by the selector's seed (0: unchanged)
            run_cfg = VQAEConfig(**{**cfg.to_dict(), "seed": cfg.seed + 1000 * self.params["seed"]})
            return mods, real_relevance(pos, neg, run_cfg, seed=self.params["seed"],
                                        scorer_kwargs=scorer_kwargs(1000 * self.params["seed"]), **kw)
        runs = []
        for plan in repeat_plan(R, self.params["test_frac"], self.params["seed"]):
            run_cfg = VQAEConfig(**{**cfg.to_dict(), "seed": cfg.seed + plan["init_offset"]})
            runs.append(real_relevance(pos, neg, run_cfg, seed=plan["partition_seed"],
                                       fold=(plan["fold"], plan["n_folds"]),
                                       scorer_kwargs=scorer_kwargs(plan["init_offset"]), **kw))
        first = runs[0]
        res = RelevanceResult(
            {k: torch.stack([r.auc[k] for r in runs]).mean(0) for k in names},
            {k: torch.stack([r.separation[k] for r in runs]).mean(0) for k in names},
            first.codes, first.labels, first.train, first.usage, first.history,
            {k: sum(r.seconds[k] for r in runs) for k in first.seconds})
        res.runs = {k: torch.stack([r.auc[k] for r in runs]) for k in names}  # type: ignore[attr-defined]
        res.separation_runs = {k: torch.stack([r.separation[k] for r in runs]) for k in names}  # type: ignore[attr-defined]
        return mods, res

    def fit(self, model, acts: ContrastiveActs) -> Selection:
        mods, res = self.score(model, acts)
        h = self.params["heads"] or default_heads(len(mods))
        primary = self.params["scorer"]
        auc = res.auc[primary]
        tie = res.separation[primary] if self.params["tiebreak"] == "separation" else None
        sat = self.params.get("saturation_max")
        if sat is not None:  # a reading so easy that most modules separate perfectly cannot be ranked
            frac = float((auc >= SATURATED_AUC).float().mean())
            if frac > sat:
                raise PipelineError(f"REAL: {frac:.0%} of the {len(mods)} candidate modules reach a held-out AUC >= "
                                    f"{SATURATED_AUC} (more than saturation_max={sat:.0%}): the task is too easy to "
                                    "rank modules on; not ranking")
        ranked = mods
        if self.params.get("drop_zero_auc"):  # collapsed or failed runs score exactly 0 (the authors drop them)
            keep = (auc != 0).nonzero().flatten().tolist()
            ranked, auc = [mods[i] for i in keep], auc[keep]
            tie = None if tie is None else tie[keep]
        if len(ranked) < len(mods):
            if not ranked:
                raise PipelineError("REAL: every candidate module scored AUC 0 (drop_zero_auc left none to rank)")
            h = min(h, len(ranked))
        sel = top_h_by_auc(ranked, auc, h, f"heldout_auc_{primary}", tiebreak=tie,
                           margin=self.params.get("margin", 0.0))
        info = {"modules": [str(m) for m in mods], "n_train": int(res.train.sum()),
                "n_test": int((~res.train).sum()), "heads": h, "seconds": res.seconds,
                "final_loss": {k: v[-1] for k, v in res.history.items() if v},
                "dead_codes": res.dead_codes.tolist(), "repeats": self.params.get("repeats", 1)}
        if self.params["compare"]:
            info["agreement"] = res.agreement(primary, self.params["compare"], h)
        self.result, self.result_info = res, info
        self.tensors = {f"auc_{k}": v.float().clone() for k, v in res.auc.items()}
        self.tensors.update({f"separation_{k}": v.float().clone() for k, v in res.separation.items()})
        self.tensors["usage"] = res.usage.to(torch.int64).clone()
        for k, v in getattr(res, "runs", {}).items():
            self.tensors[f"auc_runs_{k}"] = v.float().clone()
            self.tensors[f"auc_std_{k}"] = v.float().std(0) if v.shape[0] > 1 else torch.zeros(v.shape[1])
        return sel

    def extra_state(self) -> dict:
        return dict(self.result_info)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors)

    def load_state(self, extra: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.result_info = dict(extra)
        self.tensors = dict(tensors)


@dataclass(frozen=True)
class REALParams(MethodParams):
    """:func:`make_real`'s parameters (``layers`` recorded as a list, ``vqae`` as a dict)."""
    heads: Optional[int] = None
    alpha: float = 5.0
    target: str = "heads"
    scorer: str = "markov"
    compare: Optional[str] = "logreg"
    markov_order: int = 1
    smoothing: float = 0.5
    test_frac: float = 0.2
    seed: int = 0
    layers: Optional[Sequence[int]] = None
    module_chunk: Optional[int] = None
    vqae: Optional[dict] = None
    tiebreak: str = "separation"
    positions: str = "all"
    sigma_over: str = "all"
    batch_size: int = 16
    repeats: int = DEFAULT_REPEATS
    margin: float = 0.0
    drop_zero_auc: bool = False
    saturation_max: Optional[float] = None
    ae_rows: str = "train"
    auc_split: str = "grouped"
    gru: Optional[dict] = None

    def __post_init__(self) -> None:
        self._set(layers=list_or_none(self.layers), vqae=dict(self.vqae or {}),
                  gru=None if self.gru is None else dict(self.gru))


#: The authors' settings (``liam0949/REAL_ICLR``; docs/fidelity.md, "REAL"): α 15 (σ units, carries
#: over), H left to the fraction rule (:func:`default_heads`: 48 of 1024 heads, 13 on the default
#: model), raw activations into the autoencoder, codebook from N(0, 1) with EMA sizes starting at
#: 0, 20 epochs, one run (no repeats), ties in dataset order, modules at AUC 0 dropped, and the
#: issue's check: no ranking when more than 5 % of the modules reach AUC >= 0.99, the autoencoders
#: trained on every row (held-out ones included, as theirs), the class-balanced row-level AUC split,
#: their scorer: per-class GRUs whose input holds the code being predicted (``gru_noshift``; 10
#: epochs, hidden 64, AdamW 1e-3 / 0.01, batch 32, clip 1 are the GRU defaults), with the Markov
#: chains as the comparison, and σ over a bank of other texts (``sigma_over="bank"``: fit it on the
#: ``truthfulness-mc`` fit task, their reading: every answer as a plain "Q: … A: …" row, last token).
#: Their 2-fold protocol and MC scoring are the experiment's (``experiments/real_paper.py``).
REAL_PAPER = {"heads": None, "alpha": 15.0, "tiebreak": "order", "repeats": 1, "drop_zero_auc": True,
              "scorer": "gru_noshift", "compare": "markov",
              "saturation_max": 0.05, "ae_rows": "all", "auc_split": "rows_balanced", "sigma_over": "bank",
              "vqae": {"standardize": False, "codebook_init": "normal", "ema_init_size": 0.0, "epochs": 20}}


@register_method("real", help="REAL: top-H heads by VQ-AE code AUC, ITI-style alpha·w·sigma·theta shifts",
                 family="heads", contract={"params": {"heads": 3, "alpha": 50.0, "vqae": {"epochs": 3}},
                                           "gen_alpha": 1000.0},
                 presets={"paper": REAL_PAPER})
def make_real(*, heads: Optional[int] = None, alpha: float = 5.0, target: str = "heads", scorer: str = "markov",
              compare: Optional[str] = "logreg", markov_order: int = 1, smoothing: float = 0.5,
              test_frac: float = 0.2, seed: int = 0, layers: Optional[Sequence[int]] = None,
              module_chunk: Optional[int] = None, vqae: Optional[dict] = None, tiebreak: str = "separation",
              positions: str = "all", sigma_over: str = "all", batch_size: int = 16,
              repeats: int = DEFAULT_REPEATS, margin: float = 0.0, drop_zero_auc: bool = False,
              saturation_max: Optional[float] = None, ae_rows: str = "train", auc_split: str = "grouped",
              gru: Optional[dict] = None) -> Steerer:
    """REAL selection (see :class:`REALSelector`) + :class:`~steerlens.pipeline.ITIEditor`."""
    p = REALParams.of(locals())
    sel = REALSelector(**p.pick("heads", "target", "scorer", "compare", "markov_order", "smoothing", "test_frac",
                                "seed", "layers", "module_chunk", "vqae", "tiebreak", "repeats", "margin",
                                "drop_zero_auc", "saturation_max", "ae_rows", "auc_split", "gru"))
    return Steerer(sel, ITIEditor(**p.pick("positions", "sigma_over")), alpha=p.alpha, method="real",
                   method_params=p.record(), batch_size=p.batch_size)


__all__ = ["REALSelector", "RelevanceResult", "real_relevance", "code_usage", "make_real", "default_heads",
           "top_h_by_auc", "class_folds", "repeat_plan", "DEFAULT_REPEATS", "REALParams", "REAL_PAPER"]
