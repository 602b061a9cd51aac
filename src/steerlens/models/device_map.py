"""dtypes and accelerate device maps: checked before any weights are read, resolved, dispatched."""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from .common import ModelLoadError
from .steermodel import _device_name


#: ``dtype`` names :func:`load_model` accepts.
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                                  "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
#: accelerate's named placement strategies (``device_map="auto"`` etc.).
MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.bfloat16`` or one of :data:`DTYPES` (``"bf16"``, ``"float16"``, ...)."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ModelLoadError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} or a torch dtype")
    return DTYPES[key]


def _summarise_map(dm: dict) -> str:
    counts: dict[str, int] = {}
    for v in dm.values():
        counts[_device_name(v)] = counts.get(_device_name(v), 0) + 1
    return "{" + ", ".join(f"{k}: {n} module(s)" for k, n in counts.items()) + "}"


def _check_map_values(device_map: dict) -> dict:
    out = {}
    for k, v in device_map.items():
        if isinstance(v, torch.device):
            v = str(v)
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ModelLoadError(f"device_map[{k!r}] = {v!r}: expected a device such as 'cuda:0', 0, 'cpu' or 'disk'")
        if isinstance(v, str):
            v = v.strip().lower()
            if v == "meta":
                raise ModelLoadError(f"device_map[{k!r}] = 'meta': a meta module has no weights to run")
            if v not in ("cpu", "disk", "mps") and not v.startswith(("cuda", "xpu", "npu", "mps")):
                raise ModelLoadError(f"device_map[{k!r}] = {v!r}: not a device ('cuda:0', 0, 'cpu', 'disk')")
            if v.startswith("cuda") and not torch.cuda.is_available():
                raise ModelLoadError(f"device_map[{k!r}] = {v!r} but CUDA is not available on this machine")
        elif not torch.cuda.is_available() or v >= torch.cuda.device_count():
            raise ModelLoadError(f"device_map[{k!r}] = {v} but this machine has "
                                 f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} CUDA device(s)")
        out[str(k)] = v
    return out


def check_device_map(device_map: str | dict) -> str | dict:
    """A device map as given, checked: a non-empty dict's values, or a strategy name of
    :data:`MAP_STRATEGIES` (``"disk"`` entries are checked against the offload folder by
    :func:`_check_disk` once the map is explicit)."""
    if isinstance(device_map, dict):
        if not device_map:
            raise ModelLoadError("device_map is empty")
        return _check_map_values(device_map)
    if device_map not in MAP_STRATEGIES:
        raise ModelLoadError(f"device_map must be a dict or one of {MAP_STRATEGIES}, got {device_map!r}")
    return device_map


def _check_disk(device_map: dict, offload_folder) -> None:
    if "disk" in device_map.values() and offload_folder is None:
        raise ModelLoadError("device_map puts modules on 'disk': give offload_folder= (where accelerate keeps "
                             "their weights)")


def resolve_device_map(hf_model: torch.nn.Module, device_map: str | dict, *, max_memory: Optional[dict] = None,
                       dtype: Optional[torch.dtype] = None) -> dict[str, Any]:
    """An explicit ``{module name: device}`` map: a dict is checked and returned; a strategy name
    (:data:`MAP_STRATEGIES`) is resolved by accelerate (``infer_auto_device_map``, with
    ``get_balanced_memory`` for the balanced ones) under ``max_memory`` (e.g. ``{0: "20GiB", "cpu": "64GiB"}``).
    Decoder layers are never split across devices (the model's ``_no_split_modules``)."""
    device_map = check_device_map(device_map)
    if isinstance(device_map, dict):
        return device_map
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(hf_model, "_no_split_modules", None) or [])
    mm = max_memory
    if device_map != "sequential":
        mm = get_balanced_memory(hf_model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype,
                                 low_zero=device_map == "balanced_low_0")
    return _check_map_values(infer_auto_device_map(hf_model, max_memory=mm, no_split_module_classes=no_split,
                                                   dtype=dtype))


def dispatch(hf_model: torch.nn.Module, device_map: str | dict, *, max_memory: Optional[dict] = None,
             offload_folder: Optional[str | os.PathLike] = None, dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
    """Spread an (undispatched, in-memory) Hugging Face model over devices with accelerate's
    ``dispatch_model``; every module of the map gets accelerate's device hook, also when the map
    names a single device (``force_hooks``), so what runs is what runs on a real split.

    accelerate's semantics: modules mapped to ``"disk"`` (and, when some module sits on a GPU,
    to ``"cpu"``) are *offloaded*: their weights stay on disk / in CPU memory (``meta`` in the
    module) and are moved to the execution device for each forward call."""
    from accelerate import dispatch_model

    dm = resolve_device_map(hf_model, device_map, max_memory=max_memory, dtype=dtype)
    _check_disk(dm, offload_folder)  # also where a strategy resolved to disk
    try:
        dispatch_model(hf_model, device_map=dm, offload_dir=None if offload_folder is None else str(offload_folder),
                       force_hooks=True)
    except (ValueError, KeyError) as e:
        raise ModelLoadError(f"accelerate could not dispatch the model with device_map {dm}: {e}") from e
    return hf_model


