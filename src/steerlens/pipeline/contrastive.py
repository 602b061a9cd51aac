"""What the roles are fitted on: contrastive data, its provenance, and the activations read from it.

- :class:`ContrastiveActs`: the positive and negative examples' activations at the captured sites;
- reading positions (:func:`normalise_read_position`): where the activations are read
  (``"last"`` prompt token, ``"response_mean"``, ``"response_last"``) — distinct from the
  *editing* positions of an edit (``steerlens.hooks.edits.EDIT_POSITIONS``);
- data provenance (:func:`data_info`): the fit task, split, size and fingerprints that artifacts
  record; :class:`SimpleContrastiveData`: a minimal stand-in for
  :class:`steerlens.evals.data.ContrastiveData`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from jaxtyping import Float

from ..hooks import Site
from .errors import PipelineError

# ----------------------------------------------------------------------------------------
# Activations handed to the roles
# ----------------------------------------------------------------------------------------

@dataclass
class ContrastiveActs:
    """Activations of the positive and negative examples, read at captured sites.

    ``pos[site]`` is ``[n_pos, d_model]`` for a residual site and ``[n_pos, n_heads, d_head]``
    for a whole-layer head site (as :func:`steerlens.capture` returns them); ``neg`` likewise.

    Attributes:
        position: the reading (``"last"`` prompt token, ``"response_mean"`` or ``"response_last"``).
        paired: whether ``pos[i]`` and ``neg[i]`` are two versions of the same example.
        query: optional last-prompt-token activations of the positive examples' prompts
            (query-dependent editors, e.g. MoSE), ``{site: [n_pos, ...]}``.
        bank: optional activations of the data's unlabelled σ texts at the selected modules
            (ITI's ``sigma_over="bank"``), ``{site: [n_bank, ...]}``.
    """

    pos: dict[Site, torch.Tensor]
    neg: dict[Site, torch.Tensor]
    position: str = "last"
    paired: bool = False
    query: dict[Site, torch.Tensor] = field(default_factory=dict)
    bank: dict[Site, torch.Tensor] = field(default_factory=dict)

    @property
    def n_pos(self) -> int:
        return int(next(iter(self.pos.values())).shape[0])

    @property
    def n_neg(self) -> int:
        return int(next(iter(self.neg.values())).shape[0])

    def _read(self, store: dict[Site, torch.Tensor], module: Site) -> torch.Tensor:
        if module in store:
            t = store[module]
            return t[:, 0] if module.is_head else t
        for site, t in store.items():
            if site.is_head and module.is_head and site.layer == module.layer and module.heads[0] in site.heads:  # type: ignore[index,operator]
                return t[:, list(site.heads).index(module.heads[0])]  # type: ignore[arg-type,index]
        raise PipelineError(f"{module} was not captured (captured: {[str(s) for s in store]})")

    def module(self, module: Site) -> tuple[Float[torch.Tensor, "n_pos d"], Float[torch.Tensor, "n_neg d"]]:
        """``(pos, neg)`` activations of one module, ``[n, d]`` each, float32."""
        return self._read(self.pos, module).float(), self._read(self.neg, module).float()

    def bank_module(self, module: Site) -> Float[torch.Tensor, "n_bank d"]:
        """The σ-bank activations of one module, ``[n_bank, d]``, float32."""
        return self._read(self.bank, module).float()

    def stacked(self, modules: Sequence[Site]) -> tuple[Float[torch.Tensor, "m n_pos d"], Float[torch.Tensor, "m n_neg d"]]:
        """``[m, n, d]`` for modules of equal width (e.g. all heads)."""
        ps, ns = zip(*(self.module(m) for m in modules))
        return torch.stack(ps), torch.stack(ns)


def split_indices(n: int, test_frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded ``(train, test)`` split of ``range(n)``; both parts non-empty when ``n >= 2``."""
    if n < 2:
        raise PipelineError(f"need at least 2 examples per class to split, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_test = min(n - 1, max(1, int(round(n * test_frac))))
    return perm[n_test:].sort().values, perm[:n_test].sort().values


# ----------------------------------------------------------------------------------------
# Contrastive data
# ----------------------------------------------------------------------------------------

#: Reading positions (where ``fit`` reads activations: :data:`steerlens.hooks.activations.READ_POSITIONS`)
#: and their accepted spellings. Not the *editing* positions of an edit
#: (:data:`steerlens.hooks.edits.EDIT_POSITIONS`: which tokens an edit changes).
_READ_POSITION_ALIASES = {"last": "last", "prompt": "last", "prompt_last": "last",
                     "response_mean": "response_mean", "response": "response_mean", "mean": "mean",
                     "response_last": "response_last"}


#: Response-side readings: ``pos[i]`` and ``neg[i]`` share a prompt (paired data).
RESPONSE_POSITIONS = ("response_mean", "response_last")


def normalise_read_position(position: str) -> str:
    """The canonical reading position (``"prompt"`` → ``"last"``, ``"response"`` → ``"response_mean"``)."""
    try:
        return _READ_POSITION_ALIASES[str(position)]
    except KeyError:
        raise PipelineError(f"unknown reading position {position!r}; use 'last' (prompt-side), "
                            "'response_mean' or 'response_last' (response-side)") from None


def ids_hash(ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


def data_info(data: Any) -> dict:
    """Provenance of the fitting data recorded in artifacts: task, split, size, fingerprints."""
    pos, neg = list(data.pos), list(data.neg)
    ids = list(getattr(data, "ids", None) or [])
    fp = data.fingerprint() if hasattr(data, "fingerprint") else hashlib.sha256(
        json.dumps([pos, neg], default=list).encode()).hexdigest()[:16]
    return {"task": getattr(data, "task", None), "split": getattr(data, "split", None),
            "position": normalise_read_position(getattr(data, "position", "last")),
            "n_pos": len(pos), "n_neg": len(neg), "fingerprint": fp,
            "ids_sha256": ids_hash(ids) if ids else None, "n_ids": len(ids)}


def check_data(data: Any) -> tuple[list, list, str]:
    if not hasattr(data, "pos") or not hasattr(data, "neg"):
        raise PipelineError(f"expected ContrastiveData (with .pos, .neg, .position), got {type(data).__name__}")
    pos, neg = list(data.pos), list(data.neg)
    if not pos or not neg:
        raise PipelineError(f"contrastive data is empty: {len(pos)} positive, {len(neg)} negative examples")
    position = normalise_read_position(getattr(data, "position", "last"))
    return pos, neg, position


@dataclass
class SimpleContrastiveData:
    """A minimal stand-in for :class:`steerlens.evals.data.ContrastiveData` (tests, ad-hoc use)."""

    pos: list
    neg: list
    position: str = "last"
    ids: list = field(default_factory=list)
    split: str = "fit"
    task: str = "custom"

    def fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps([self.pos, self.neg, self.position, self.split], default=list).encode())
        return h.hexdigest()[:16]




#: The former name of :func:`normalise_read_position`.
normalise_position = normalise_read_position


__all__ = ["ContrastiveActs", "split_indices", "RESPONSE_POSITIONS", "normalise_read_position", "normalise_position",
           "ids_hash", "data_info", "check_data", "SimpleContrastiveData"]
