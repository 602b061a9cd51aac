"""Batched activation capture at any supported site (residual, block outputs, heads, neurons, patterns).

``capture(model, inputs, sites, position=...)`` runs the model over many inputs in padded
batches and returns, per site, one row per input:

- residual sites: ``[n, d_model]``; head sites: ``[n, n_heads_selected, d_head]``; neuron sites
  ``[n, n_neurons_selected]`` (``[n, d_mlp]`` for a whole layer); attention patterns only with
  ``position="all"``: ``[seq_i, n_heads_selected, seq_i]`` per input (query, head, key);
- ``position="last"``: the last prompt token (after the chat template's assistant header);
- ``position="response_mean"``: the mean over the response tokens of ``(prompt, response)`` pairs;
- ``position="response_last"``: the last token of each input (the response's last token for pairs);
- ``position="mean"``: the mean over all real tokens;
- ``position="all"``: a list with one ``[seq_i, ...]`` tensor per input (real tokens only).

The forward pass stops right after the deepest requested site, so capture at early layers
costs less than a full forward pass. With ``out_dir`` the rows are written to disk in
safetensors shards as they come (memory stays bounded by one shard) and a
:class:`ShardedActivations` is returned instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .. import parallel
from ..fileio import atomic_write
from ..models import as_model
from .batching import Batch, InputError, Item, check_items, iter_batches
from .edits import Edit, check_edit_inputs, validate_edits
from .sites import Site, SiteLike, parse_site, parse_sites
from .runtime import StopForward, batch_run, site_order

Position = Literal["last", "response_mean", "response_last", "mean", "all"]
#: Reading positions: where a capture reads activations. Not the *editing* positions of an edit
#: (:data:`steerlens.hooks.edits.EDIT_POSITIONS`: which tokens it changes).
READ_POSITIONS = ("last", "response_mean", "response_last", "mean", "all")
POSITIONS = READ_POSITIONS  # the former name


class SiteDict(dict):
    """``{Site: tensor}`` that also answers to the strings the caller passed (hook names such as
    ``"blocks.10.hook_resid_post"``, or ``"blocks.3.attn.hook_z"`` for all heads) and to any
    string form of a site."""

    def __init__(self, data=(), aliases: Optional[dict] = None) -> None:
        super().__init__(data)
        self._aliases = dict(aliases or {})

    def _key(self, key):
        if isinstance(key, str):
            if key in self._aliases:
                return self._aliases[key]
            try:
                return parse_site(key)
            except Exception:  # noqa: BLE001 - not a site string: a plain KeyError below
                return key
        return key

    def __getitem__(self, key):
        k = self._key(key)
        try:
            return super().__getitem__(k)
        except KeyError:
            raise KeyError(f"{key!r} was not captured; captured: {[str(s) for s in self]}") from None

    def __contains__(self, key) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key, default=None):
        return super().get(self._key(key), default)


def _reduce(act: torch.Tensor, batch: Batch, position: str) -> Union[torch.Tensor, list[torch.Tensor]]:
    """``act``: ``[b, L, ...]`` -> ``[b, ...]`` (or a list of ``[seq_i, ...]`` for "all")."""
    dev = act.device  # the layer's device: on a dispatched model not always the inputs'
    if position == "last":
        return act[torch.arange(act.shape[0], device=dev), batch.prompt_last.to(dev)]
    if position == "response_last":  # left padding: every input ends in the last column
        return act[:, -1]
    if position in ("response_mean", "mean"):
        mask = batch.response_mask if position == "response_mean" else batch.attention_mask.bool()
        w = mask.to(device=dev, dtype=act.dtype).view(*mask.shape, *([1] * (act.ndim - 2)))
        return (act * w).sum(1) / w.sum(1).clamp(min=1)
    keep = batch.attention_mask.bool().to(dev)
    return [act[i, keep[i]] for i in range(act.shape[0])]


def _run_forward(model, batch: Batch, stop: bool) -> None:
    hf = model.hf_model
    try:
        hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
           position_ids=batch.position_ids, use_cache=False, logits_to_keep=1)
    except StopForward:
        if not stop:
            raise


class ShardedActivations:
    """Activations streamed to ``out_dir`` as safetensors shards plus ``index.json``.

    ``acts[site]`` loads one site for all inputs; ``iter_shards()`` yields one shard at a time.
    """

    def __init__(self, out_dir: Union[str, os.PathLike]) -> None:
        self.dir = Path(out_dir)
        idx = self.dir / "index.json"
        if not idx.exists():
            raise FileNotFoundError(f"{idx} not found: not a complete capture directory")
        self.index = json.loads(idx.read_text())

    @property
    def sites(self) -> list[str]:
        return list(self.index["sites"])

    def __len__(self) -> int:
        return int(self.index["n"])

    def iter_shards(self):
        for name in self.index["shards"]:
            yield load_file(str(self.dir / name))

    def __getitem__(self, site: SiteLike) -> torch.Tensor:
        key = str(site)
        if key not in self.index["sites"]:
            raise KeyError(f"{key} was not captured; captured: {self.sites}")
        return torch.cat([s[key] for s in self.iter_shards()], 0)


_CACHE: Optional[dict] = None


@contextlib.contextmanager
def capture_cache():
    """Inside the block, an unsteered in-memory capture that repeats an earlier one (the same
    model, inputs, position, chat flag, length cap and dtype) reads the sites it already has
    from memory and runs the model only for the others. Fitting several steerers on the same
    data (for example two gates at one layer) then captures once. Yields the cache; the
    ``"hits"`` and ``"misses"`` entries count sites read from memory and from the model."""
    global _CACHE
    outer = _CACHE
    if outer is None:
        _CACHE = {"hits": 0, "misses": 0}
    try:
        yield _CACHE
    finally:
        if outer is None:
            _CACHE = None


def _write_shard(out_dir: Path, i: int, rows: dict[str, list[torch.Tensor]]) -> str:
    name = f"shard_{i:05d}.safetensors"
    tensors = {k: torch.cat(v, 0).contiguous() for k, v in rows.items()}
    atomic_write(out_dir / name, lambda tmp: save_file(tensors, tmp))
    return name


@torch.no_grad()
def capture(
    model,
    inputs: Sequence[Item],
    sites: Union[SiteLike, Sequence[SiteLike]],
    position: Position = "last",
    *,
    batch_size: int = 16,
    edits: Optional[Sequence[Edit]] = None,
    chat: Optional[bool] = None,
    progress: bool = True,
    out_dir: Optional[Union[str, os.PathLike]] = None,
    shard_size: int = 1024,
    max_length: Optional[int] = None,
    dtype: Optional[torch.dtype] = None,
    system: Optional[str] = None,
    close_turn: bool = False,
) -> Union[dict[Site, torch.Tensor], dict[Site, list[torch.Tensor]], ShardedActivations]:
    """Read activations at ``sites`` for every input; see the module docstring.

    Args:
        model: a :class:`~steerlens.SteerModel` (or TransformerBridge).
        inputs: prompts, or ``(prompt, response)`` pairs.
        sites: ``Site`` objects or strings (``"blocks.3.hook_resid_post"``,
            ``"blocks.3.attn.hook_z[0,5]"``, or ``"blocks.3.attn.hook_z"`` for all heads).
        position: ``"last" | "response_mean" | "response_last" | "mean" | "all"``.
        batch_size: inputs per forward pass.
        edits: optional steering applied while reading (per-input edits are sliced per batch).
        out_dir: stream to safetensors shards there (not with ``position="all"``).
        dtype: store activations in this dtype (default: the model's).
        system: a system prompt before every input (chat template; plain text: a paragraph first).
        close_turn: a pair's response is a finished chat turn: the template's end-of-turn tokens
            follow it and are response tokens (read by ``response_mean`` / ``response_last``).

    Returns:
        ``{site: tensor}`` in input order, or a :class:`ShardedActivations` with ``out_dir``.
    """
    global _CACHE
    m = as_model(model)
    items, is_pair = check_items(inputs)
    site_list = parse_sites(sites, m)
    given = [sites] if isinstance(sites, (str, Site)) else list(sites)
    aliases = {str(g): s for g, s in zip(given, site_list) if isinstance(g, str)}
    if position not in READ_POSITIONS:
        raise InputError(f"position must be one of {READ_POSITIONS}, got {position!r}")
    if position in ("response_mean", "response_last") and not is_pair:
        raise InputError(f"position={position!r} needs (prompt, response) pairs")
    if out_dir is not None and position == "all":
        raise InputError("streaming to disk needs a fixed-size position (not 'all')")
    edit_list = validate_edits(m, edits)
    check_edit_inputs(edit_list, len(items))

    cache_key = None
    if _CACHE is not None and not edit_list and out_dir is None and position != "all":
        # batch_size is part of the key: SDPA reduces rows padded to other lengths in another order
        cache_key = (id(m.hf_model), tuple(items), position, batch_size, chat, max_length, dtype, system, close_turn)
        try:
            hash(cache_key)
        except TypeError:  # e.g. token-id lists as responses: read without the cache
            cache_key = None
    if cache_key is not None:
        have = {s: _CACHE.get((cache_key, s)) for s in site_list}
        missing = [s for s in site_list if have[s] is None]
        _CACHE["hits"] += len(site_list) - len(missing)
        _CACHE["misses"] += len(missing)
        if missing:
            cache, _CACHE = _CACHE, None
            try:
                fresh = capture(m, items, missing, position, batch_size=batch_size, chat=chat, progress=progress,
                                max_length=max_length, dtype=dtype, system=system, close_turn=close_turn)
            finally:
                _CACHE = cache
            for s in missing:
                _CACHE[(cache_key, s)] = have[s] = fresh[s]
        out = SiteDict(aliases=aliases)
        for s in site_list:
            out[s] = have[s].clone()
        return out

    by_hook: dict[str, list[Site]] = {}
    for s in site_list:
        by_hook.setdefault(s.hook_name, []).append(s)
    if position != "all" and any(s.is_pattern for s in site_list):
        raise InputError("attention patterns vary in length with the input: capture them with position='all' "
                         "(one [seq_i, n_heads_selected, seq_i] tensor per input, real tokens only)")
    deepest = max(site_list, key=site_order)
    state: dict = {}

    def make_reader(hook_sites: list[Site], stop_here: bool):
        def read(act: torch.Tensor, hook=None) -> torch.Tensor:
            batch: Batch = state["batch"]
            for s in hook_sites:
                a = act.transpose(1, 2) if s.is_pattern else act  # [b, q_pos, heads, k_pos]
                a = a[:, :, list(s.heads)] if s.heads is not None else a
                if s.is_pattern:  # real tokens on both axes
                    keep = batch.attention_mask.bool().to(a.device)
                    red = [a[i, keep[i]][..., keep[i]].detach() for i in range(a.shape[0])]
                else:
                    red = _reduce(a.detach(), batch, position)
                if isinstance(red, list):
                    red = [r.to(dtype or r.dtype).cpu() for r in red]
                else:
                    red = red.to(dtype or red.dtype).cpu()
                state["out"][s] = red
            if stop_here:
                raise StopForward
            return act
        return read

    # Readers go after the edits on the same hook, so a steered capture reads the steered value.
    read_hooks = [(h, make_reader(ss, deepest.hook_name == h)) for h, ss in by_hook.items()]

    results: dict[Site, list] = {s: [] for s in site_list}
    order: list[torch.Tensor] = []
    shard_dir: Optional[Path] = None
    shards: list[str] = []
    pending, n_pending, n_done = {str(s): [] for s in site_list}, 0, 0
    streaming = out_dir is not None
    writer = streaming and parallel.is_main()  # in a data-parallel run, rank 0 writes the shards
    if writer:
        final = Path(out_dir)  # type: ignore[arg-type]
        final.parent.mkdir(parents=True, exist_ok=True)
        shard_dir = Path(tempfile.mkdtemp(prefix=final.name + ".", suffix=".partial", dir=final.parent))
        shard_dir.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary directory

    def run_batch(batch: Batch) -> dict:
        state["batch"], state["out"] = batch, {}
        with batch_run(m, edit_list, batch, extra_hooks=read_hooks):
            _run_forward(m, batch, stop=True)
        return state["out"]

    try:
        # Streaming keeps input order (shards concatenate to input order); in memory, batches
        # are grouped by length to save padding and put back in order at the end. In a
        # data-parallel run each rank runs every N-th batch (steerlens.parallel).
        batches = iter_batches(m, items, batch_size, chat=chat, max_length=max_length, sort_by_length=not streaming,
                               system=system, close_turn=close_turn)
        if streaming:  # one round of N batches at a time: memory stays bounded
            bar = tqdm(total=len(items), desc="capture", unit="input", disable=not (progress and parallel.is_main()),
                       leave=False)
            for bi, batch in parallel.rounds(batches):
                mine = [] if batch is None else [(bi, (run_batch(batch), batch.size))]
                for _, (got, size) in parallel.gather(mine):
                    if writer:
                        for s in site_list:
                            pending[str(s)].append(got[s])
                        n_pending += size
                        if n_pending >= shard_size:
                            shards.append(_write_shard(shard_dir, len(shards), pending))  # type: ignore[arg-type]
                            pending, n_pending = {str(s): [] for s in site_list}, 0
                    n_done += size
                    bar.update(size)
            bar.close()
        else:
            for got, rows in parallel.map_batches(lambda i, b: (run_batch(b), b.rows.cpu()), batches,
                                                  total=len(items), desc="capture", unit="input", progress=progress):
                for s in site_list:
                    results[s].append(got[s])
                order.append(rows)
    except BaseException:
        if shard_dir is not None:
            shutil.rmtree(shard_dir, ignore_errors=True)
        raise

    if streaming:
        final = Path(out_dir)  # type: ignore[arg-type]
        if shard_dir is not None:
            if n_pending:
                shards.append(_write_shard(shard_dir, len(shards), pending))
            index = {"n": n_done, "sites": [str(s) for s in site_list], "position": position,
                     "shards": shards, "model": m.name}
            (shard_dir / "index.json").write_text(json.dumps(index))
            if final.exists():
                shutil.rmtree(final)
            os.replace(shard_dir, final)
        parallel.barrier()  # the other ranks read what rank 0 wrote
        return ShardedActivations(final)

    inv = torch.argsort(torch.cat(order))
    out = SiteDict(aliases=aliases)
    for s in site_list:
        if position == "all":
            flat = [t for chunk in results[s] for t in chunk]
            out[s] = [flat[i] for i in inv.tolist()]
        else:
            out[s] = torch.cat(results[s], 0)[inv]
    return out
