"""Selectors: fixed sites (CAA, RepE) and the ITI head ranking by held-out probe accuracy."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..hooks import Site
from ..hooks.sites import parse_site
from ..models import as_model
from .contrastive import ContrastiveActs, split_indices
from .errors import PipelineError
from .roles import Selector, register_role
from .selection import Selection, all_head_modules, capture_site_for, check_module


@register_role
class FixedSelector(Selector):
    """A fixed list of modules (e.g. one residual layer for CAA), weight 1 each unless given.

    Args:
        modules: site strings, each one residual layer (``blocks.10.hook_resid_post``) or one
            head (``blocks.3.attn.hook_z[5]``).
        weights: optional per-module weights (default 1).
    """

    kind = "fixed"

    def __init__(self, modules: Sequence[str], weights: Optional[Sequence[float]] = None) -> None:
        mods = [str(check_module(parse_site(m))) for m in modules]
        if not mods:
            raise PipelineError("FixedSelector needs at least one module")
        if weights is not None and len(weights) != len(mods):
            raise PipelineError(f"{len(mods)} modules but {len(weights)} weights")
        super().__init__(modules=mods, weights=None if weights is None else [float(w) for w in weights])

    @property
    def modules(self) -> list[Site]:
        return [parse_site(m) for m in self.params["modules"]]

    def candidate_sites(self, model) -> list[Site]:
        m = as_model(model)
        sites = list(dict.fromkeys(capture_site_for(mod, m.n_heads) for mod in self.modules))
        for s in sites:
            s.validate(m)
        return sites

    def fit(self, model, acts: ContrastiveActs) -> Selection:
        w = self.params["weights"]
        return Selection(self.modules, torch.ones(len(self.modules)) if w is None else torch.tensor(w),
                         scores={}, score_name="fixed", weighting="fixed")


def class_split(n_pos: int, n_neg: int, paired: bool, test_frac: float, seed: int):
    """``((train_pos, train_neg), (test_pos, test_neg))`` indices. Paired data is split by pair,
    so both versions of an example fall on the same side (no leakage through the shared prompt);
    otherwise each class is split on its own (stratified)."""
    if paired and n_pos == n_neg:
        tr, te = split_indices(n_pos, test_frac, seed)
        return (tr, tr), (te, te)
    trp, tep = split_indices(n_pos, test_frac, seed)
    trn, ten = split_indices(n_neg, test_frac, seed + 1)
    return (trp, trn), (tep, ten)


def probe_accuracies(pos: torch.Tensor, neg: torch.Tensor, *, test_frac: float = 0.2, seed: int = 0,
                     C: float = 1.0, max_iter: int = 1000, paired: bool = False,
                     progress: bool = False, return_separation: bool = False):
    """Held-out accuracy of one logistic probe per module.

    Args:
        pos, neg: ``[m, n, d]`` activations of ``m`` modules.
        test_frac, seed: the seeded held-out split (by pair when ``paired``).
        C, max_iter: scikit-learn ``LogisticRegression`` settings (L2, lbfgs).
        return_separation: also return the held-out d' of the probe's decision values
            (``(mean⁺ − mean⁻) / pooled std``), a continuous tie-breaker for saturated accuracies.

    Returns:
        ``[m]`` accuracies on the held-out part (and ``[m]`` d' with ``return_separation``).
    """
    from sklearn.linear_model import LogisticRegression

    (trp, trn), (tep, ten) = class_split(pos.shape[1], neg.shape[1], paired, test_frac, seed)
    y_tr = np.r_[np.ones(len(trp)), np.zeros(len(trn))]
    y_te = np.r_[np.ones(len(tep)), np.zeros(len(ten))]
    out, sep = torch.zeros(pos.shape[0]), torch.zeros(pos.shape[0])
    for i in tqdm(range(pos.shape[0]), desc="ITI probes", disable=not progress, leave=False):
        x_tr = torch.cat([pos[i, trp], neg[i, trn]]).double().numpy()
        x_te = torch.cat([pos[i, tep], neg[i, ten]]).double().numpy()
        clf = LogisticRegression(C=C, max_iter=max_iter)
        clf.fit(x_tr, y_tr)
        out[i] = float((clf.predict(x_te) == y_te).mean())
        if return_separation:
            f = clf.decision_function(x_te)
            fp, fn = f[y_te == 1], f[y_te == 0]
            pooled = np.sqrt(0.5 * (fp.var() + fn.var())) + 1e-8
            sep[i] = float((fp.mean() - fn.mean()) / pooled)
    return (out, sep) if return_separation else out


@register_role
class ITISelector(Selector):
    """ITI's head ranking: a logistic probe per head on ``hook_z``, top-H by held-out accuracy.

    Open choices (parameters):
        heads: H, the number of heads kept.
        test_frac, seed: the held-out split (20% by default; by pair for paired data).
        C, max_iter: the probe's L2 regularisation and iterations (scikit-learn, lbfgs).
        layers: restrict candidates to these layers (default: all).
        tiebreak: ``"separation"`` (default) orders heads of equal held-out accuracy by the held-out
            d' of the probe's decision values (on response-side refusal data most heads reach
            accuracy 1.0); ``"order"`` keeps (layer, head) order. Either way the ranking is
            deterministic. REAL breaks its AUC ties the same way, so the two compare fairly.

    Every head's accuracy is kept in ``Selection.scores``; selected heads get weight 1.
    """

    kind = "iti_selector"

    def __init__(self, heads: int = 16, test_frac: float = 0.2, seed: int = 0, C: float = 1.0,
                 max_iter: int = 1000, layers: Optional[Sequence[int]] = None,
                 tiebreak: str = "separation") -> None:
        if tiebreak not in ("separation", "order"):
            raise PipelineError(f"tiebreak must be 'separation' or 'order', got {tiebreak!r}")
        if int(heads) < 1:
            raise PipelineError(f"heads (H) must be >= 1, got {heads}")
        if not 0 < test_frac < 1:
            raise PipelineError(f"test_frac must be in (0, 1), got {test_frac}")
        super().__init__(heads=int(heads), test_frac=float(test_frac), seed=int(seed), C=float(C),
                         max_iter=int(max_iter), layers=None if layers is None else [int(x) for x in layers],
                         tiebreak=tiebreak)

    def candidates(self, model) -> list[Site]:
        return all_head_modules(model, self.params["layers"])

    def candidate_sites(self, model) -> list[Site]:
        m = as_model(model)
        layers = range(m.n_layers) if self.params["layers"] is None else self.params["layers"]
        return [Site.head(layer, range(m.n_heads)).validate(m) for layer in layers]

    def score(self, model, acts: ContrastiveActs) -> tuple[list[Site], torch.Tensor, torch.Tensor]:
        """Every candidate head, its held-out probe accuracy and held-out d' (the tie-breaker)."""
        mods = self.candidates(model)
        pos, neg = acts.stacked(mods)
        acc, sep = probe_accuracies(pos, neg, test_frac=self.params["test_frac"], seed=self.params["seed"],
                                    C=self.params["C"], max_iter=self.params["max_iter"], paired=acts.paired,
                                    return_separation=True)
        return mods, acc, sep

    def fit(self, model, acts: ContrastiveActs) -> Selection:
        mods, acc, sep = self.score(model, acts)
        tie = sep if self.params.get("tiebreak", "separation") == "separation" else None
        return top_h_selection(mods, acc, self.params["heads"], "heldout_probe_accuracy", weights="ones",
                               tiebreak=tie)


def margin_order(scores: torch.Tensor, h: int, margin: float) -> list[int]:
    """Indices of ``h`` candidates chosen one at a time: each pick is the **first listed** remaining
    candidate whose score is within ``margin`` of the best remaining score. Candidates are thus
    listed in order of preference, and a later one displaces an earlier one only when it scores
    more than ``margin`` higher: a choice that does not flip on noise smaller than the margin."""
    left = list(range(len(scores)))
    out = []
    for _ in range(h):
        best = max(float(scores[i]) for i in left)
        pick = next(i for i in left if float(scores[i]) >= best - margin)
        out.append(pick)
        left.remove(pick)
    return out


def top_h_selection(modules: Sequence[Site], scores: torch.Tensor, h: int, score_name: str,
                    weights: str = "ones", tiebreak: Optional[torch.Tensor] = None, margin: float = 0.0) -> Selection:
    """The ``h`` best-scoring modules.

    Ties in ``scores`` (common when the classes separate perfectly: on response-side refusal data
    most heads reach accuracy / AUC 1.0) are broken by ``tiebreak`` (higher first, e.g. the
    held-out d' of the scores), then by site order (layer, then head).
    ``margin > 0``: scores within ``margin`` of the best count as tied and the first listed
    candidate wins (:func:`margin_order`; ``tiebreak`` is not used).
    ``weights="ones"`` (ITI) or ``"relative"`` (score / max selected score, as REAL does).
    """
    if h > len(modules):
        raise PipelineError(f"asked for H={h} modules but there are only {len(modules)} candidates")
    if margin < 0:
        raise PipelineError(f"margin must be >= 0, got {margin}")
    tb = torch.zeros(len(modules)) if tiebreak is None else tiebreak
    if margin > 0:
        order = margin_order(scores, h, margin)
    else:
        order = sorted(range(len(modules)), key=lambda i: (-float(scores[i]), -float(tb[i]), modules[i]))[:h]
    chosen = [modules[i] for i in order]
    sel = scores[order].float()
    if weights == "ones":
        w = torch.ones(h)
    elif weights == "relative":
        top = sel.max()
        if top <= 0:
            raise PipelineError("cannot weight by relative score: the best selected score is <= 0")
        w = sel / top
    else:
        raise PipelineError(f"weights must be 'ones' or 'relative', got {weights!r}")
    return Selection(chosen, w, {str(m): float(s) for m, s in zip(modules, scores)}, score_name, weights)


__all__ = ["FixedSelector", "ITISelector", "probe_accuracies", "top_h_selection", "margin_order", "class_split"]
