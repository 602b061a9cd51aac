"""The small pieces of numerics several methods share: one ROC-AUC and one PCA.

Low in the import graph on purpose (torch and numpy only), so any module may use it.

- :func:`roc_auc` / :func:`batched_roc_auc`: the Mann–Whitney ROC-AUC
  ``P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)``, exact with ties (the same number as
  ``sklearn.metrics.roc_auc_score``), by counting for each positive the negatives below and equal
  to it in the sorted negatives (``O((p + q) log q)``, not a ``p × q`` comparison table).
- :func:`pca`: principal components of ``x`` by a float64 SVD of ``x − center``, with a
  deterministic sign (each component's largest-magnitude entry is positive), so refits on the same
  data give the same tensors whatever sign LAPACK happens to return on a machine / thread count.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np
import torch


def _as_f64(x) -> torch.Tensor:
    """``x`` as a float64 tensor (a tensor stays on its device)."""
    if isinstance(x, torch.Tensor):
        return x.detach().double()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def batched_roc_auc(pos, neg) -> torch.Tensor:
    """ROC-AUC of positive scores ``pos`` (``[..., p]``) against negative scores ``neg``
    (``[..., q]``) along the last dimension: ``P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)`` (float64, shape
    ``[...]``). Raises ``ValueError`` when either class is empty."""
    p, n = _as_f64(pos), _as_f64(neg)
    if p.ndim == 0 or n.ndim == 0 or p.shape[-1] == 0 or n.shape[-1] == 0:
        raise ValueError(f"ROC-AUC needs both classes, got {tuple(p.shape)} positive and "
                         f"{tuple(n.shape)} negative scores")
    lead = torch.broadcast_shapes(p.shape[:-1], n.shape[:-1])
    p = p.expand(*lead, p.shape[-1]).contiguous()
    sn = torch.sort(n.expand(*lead, n.shape[-1]), dim=-1).values.contiguous()
    below = torch.searchsorted(sn, p, right=False)  # negatives strictly below each positive
    upto = torch.searchsorted(sn, p, right=True)  # ... and those equal to it
    return (below + upto).sum(-1).double() / (2.0 * p.shape[-1] * sn.shape[-1])


def roc_auc(pos, neg) -> float:
    """ROC-AUC (a float) of the positive scores ``pos`` against the negative ``neg`` (any array-like,
    flattened); see :func:`batched_roc_auc`."""
    return float(batched_roc_auc(_as_f64(pos).flatten(), _as_f64(neg).flatten()))


class PCA(NamedTuple):
    """Result of :func:`pca` (all float64).

    components: ``[k, d]`` orthonormal rows, the top-``k`` principal directions, sign-fixed.
    singular_values: ``[min(n, d)]`` every singular value of the centred data (not only the top k).
    center: ``[d]`` what was subtracted (zeros for ``center=False``).
    """

    components: torch.Tensor
    singular_values: torch.Tensor
    center: torch.Tensor

    @property
    def total_energy(self) -> float:
        """``Σ s²``: the squared Frobenius norm of the centred data."""
        return float((self.singular_values ** 2).sum())

    @property
    def explained_variance_ratio(self) -> torch.Tensor:
        """``s² / Σ s²`` for every singular value (zeros when the centred data is all zero)."""
        e = self.singular_values ** 2
        return e / e.sum().clamp_min(1e-30)


def pca(x, rank: Union[int, None] = None, center: Union[bool, torch.Tensor] = True) -> PCA:
    """Principal components of the rows of ``x`` (``[n, d]``) by a float64 SVD of ``x − center``.

    Args:
        rank: how many components to return (capped at ``min(n, d)``; ``None``: all).
        center: ``True`` the mean of ``x``, ``False`` none (an uncentred SVD), or a ``[d]`` tensor.

    Each component's sign is fixed so that its largest-magnitude entry (the first such on ties) is
    positive."""
    xd = _as_f64(x)
    if xd.ndim != 2 or xd.shape[0] < 1:
        raise ValueError(f"pca needs [n, d] data with n >= 1, got {tuple(xd.shape)}")
    if rank is not None and int(rank) < 1:
        raise ValueError(f"pca rank must be >= 1, got {rank}")
    if isinstance(center, torch.Tensor):
        c = center.detach().to(xd.device, torch.float64)
    else:
        c = xd.mean(0) if center else xd.new_zeros(xd.shape[1])
    _, s, vh = torch.linalg.svd(xd - c, full_matrices=False)
    k = vh.shape[0] if rank is None else min(int(rank), vh.shape[0])
    comp = vh[:k]
    sign = torch.sign(comp.gather(1, comp.abs().argmax(1, keepdim=True)))
    sign[sign == 0] = 1
    return PCA((comp * sign).contiguous(), s, c)


__all__ = ["roc_auc", "batched_roc_auc", "pca", "PCA"]
