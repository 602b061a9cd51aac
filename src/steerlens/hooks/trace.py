"""Per-token traces of steered runs: what every edit and gate did at every generated token.

``generate(..., trace=True)`` returns a :class:`Trace` (``GenerationResult.trace``) with one
record per input, generated token and edit::

    {"input": 3, "token": 0, "token_text": " I", "edit": "caa@blocks.10.hook_resid_post",
     "site": "blocks.10.hook_resid_post", "delta_norm": 4.1, "gate_score": 2.3, "gate_scale": 1.0,
     "expert_weights": [0.1, 0.9], ...}

Token 0 is the last prompt token (whose activation produces the first generated token), token k
the k-th generated token. ``delta_norm`` is the norm of the change actually applied at that
token (after strength, gate and position window: 0 where the gate is closed); every other key is
a value the edit reported (:meth:`~steerlens.hooks.edits.TokenInfo.report`).

:meth:`Trace.write_jsonl` writes it next to results; :meth:`Trace.plot` draws one reply: tokens on
the x-axis, gate scale and ‖delta‖ as lines, and each reported scalar as another line.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from ..fileio import atomic_savefig, atomic_write_text

_FIXED = ("input", "token", "token_text", "edit", "site")


def _jsonable(v: torch.Tensor):
    if v.ndim == 0:
        x = float(v)
        return round(x, 6) if math.isfinite(x) else None
    return [round(float(x), 6) for x in v.flatten()]


@dataclass
class Trace:
    """Per-token records of a steered run (see the module docstring)."""

    records: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def add_run(self, run, labels: Sequence[str], sites: Sequence[str], rows: Sequence[int],
                n_tokens: Optional[Sequence[int]] = None, token_texts: Optional[Sequence[Sequence[str]]] = None,
                input_offset: int = 0) -> None:
        """Append the records of one batch's :class:`~steerlens.hooks.runtime.Run`.

        Args:
            labels, sites: per edit of the run.
            rows: per batch row, its input index.
            n_tokens: per batch row, how many tokens to keep (steps after a reply ended are dropped).
            token_texts: per batch row, the text of each generated token (for plots).
        """
        for step, i, vals in run.records:
            for j, row in enumerate(rows):
                if n_tokens is not None and step >= n_tokens[j]:
                    continue
                rec = {"input": int(row) + input_offset, "token": int(step)}
                if token_texts is not None and step < len(token_texts[j]):
                    rec["token_text"] = token_texts[j][step]
                rec["edit"], rec["site"] = labels[i], sites[i]
                for k, v in vals.items():
                    rec[k] = _jsonable(v[j])
                self.records.append(rec)

    def for_input(self, i: int) -> list[dict]:
        return [r for r in self.records if r["input"] == i]

    def write_jsonl(self, path: Union[str, os.PathLike]) -> None:
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records))

    @classmethod
    def read_jsonl(cls, path: Union[str, os.PathLike]) -> "Trace":
        with open(path, encoding="utf-8") as f:
            return cls([json.loads(line) for line in f if line.strip()])

    def plot(self, input_index: int, path: Union[str, os.PathLike], title: Optional[str] = None) -> None:
        """One reply: tokens along the x-axis; per edit, gate scale and ‖delta‖ (and every other
        reported scalar) as lines, one panel per quantity."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recs = self.for_input(input_index)
        if not recs:
            raise ValueError(f"no trace records for input {input_index}")
        series: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        texts: dict[int, str] = {}
        for r in recs:
            texts.setdefault(r["token"], r.get("token_text", ""))
            for k, v in r.items():
                if k in _FIXED or v is None:
                    continue
                if isinstance(v, list):
                    for n, x in enumerate(v):
                        series[f"{k}[{n}]"][r["edit"]][r["token"]] = x
                else:
                    series[k][r["edit"]][r["token"]] = v
        order = ["gate_scale", "delta_norm", "gate_score"]
        keys = [k for k in order if k in series] + sorted(k for k in series if k not in order)
        fig, axes = plt.subplots(len(keys), 1, figsize=(max(6, 0.28 * len(texts) + 2), 1.6 * len(keys) + 0.8),
                                 sharex=True, squeeze=False)
        steps = sorted(texts)
        for ax, k in zip(axes[:, 0], keys):
            for edit, pts in series[k].items():
                xs = sorted(pts)
                ax.plot(xs, [pts[x] for x in xs], marker=".", label=edit)
            ax.set_ylabel(k, fontsize=8)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7, loc="upper right")
        axes[-1, 0].set_xticks(steps)
        axes[-1, 0].set_xticklabels([repr(texts[s])[1:-1][:12] for s in steps], rotation=90, fontsize=7)
        axes[0, 0].set_title(title or f"input {input_index}: per-token steering trace", fontsize=9)
        fig.tight_layout()
        atomic_savefig(fig, path, dpi=110)
        plt.close(fig)


__all__ = ["Trace"]
