"""Save and reload the contrastive activations a selector reads (one capture, many selections).

``save_acts(acts, path, data=...)`` writes a :class:`~steerlens.pipeline.contrastive.ContrastiveActs` as one
safetensors file (atomically) with the sites, reading position, pairing and the data's fingerprint
in its metadata; ``load_acts(path, data=...)`` reads it back and refuses a file made from other
data. Benchmarks and experiments that select heads several times (stability over seeds, causal
checks) capture once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from ..fileio import atomic_write
from ..hooks.sites import parse_site
from .contrastive import ContrastiveActs, data_info
from .errors import PipelineError


def save_acts(acts: ContrastiveActs, path: Union[str, os.PathLike], data: Any = None) -> Path:
    from safetensors.torch import save_file

    tensors = {}
    for side, store in (("pos", acts.pos), ("neg", acts.neg)):
        for site, t in store.items():
            tensors[f"{side}|{site}"] = t.contiguous()
    meta = {"position": acts.position, "paired": json.dumps(acts.paired),
            "fingerprint": data_info(data)["fingerprint"] if data is not None else ""}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_acts(path: Union[str, os.PathLike], data: Any = None) -> Optional[ContrastiveActs]:
    """The saved activations, or ``None`` when ``path`` does not exist."""
    from safetensors import safe_open

    p = Path(path)
    if not p.exists():
        return None
    pos, neg = {}, {}
    with safe_open(str(p), "pt") as f:
        meta = f.metadata() or {}
        if data is not None and meta.get("fingerprint") and meta["fingerprint"] != data_info(data)["fingerprint"]:
            raise PipelineError(f"{p} was captured from other data (fingerprint {meta['fingerprint']})")
        for key in f.keys():
            side, site = key.split("|", 1)
            (pos if side == "pos" else neg)[parse_site(site)] = f.get_tensor(key)
    return ContrastiveActs(pos, neg, position=meta.get("position", "last"), paired=json.loads(meta.get("paired", "false")))


__all__ = ["save_acts", "load_acts"]
