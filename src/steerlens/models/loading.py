"""``load_model``: the offline default model, local checkpoints, hub ids and the tiny model, on a
device or spread over devices."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

import torch

from .backends import _load_tokenizer, _wrap
from .common import _ALIASES, DEFAULT_MODEL, KNOWN_MODELS, TINY_MODEL, ModelLoadError
from .device_map import _check_disk, check_device_map, parse_dtype
from .gguf import default_model_dir
from .steermodel import SteerModel, input_device
from .tiny import _tiny_random


def _resolve_device(device: str | torch.device | None) -> str:
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def load_model(
    name: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | str = torch.float32,
    chat: bool = True,
    seed: int = 0,
    backend: str = "auto",
    device_map: str | dict | None = None,
    max_memory: Optional[dict] = None,
    offload_folder: str | os.PathLike | None = None,
) -> SteerModel:
    """Load a causal LM with TransformerLens hook names.

    Args:
        name: ``None`` or ``"smollm2-135m-instruct"`` for the offline default model;
            ``"tiny-random"`` for a 2-layer random Llama with a real tokenizer (unit tests);
            a local directory with a Hugging Face checkpoint; or a hub id (needs network).
        device: ``"cpu"`` (default), ``"cuda"``, or ``"auto"``.
        dtype: ``torch.float32`` (default), ``torch.bfloat16``, or their names.
        chat: wrap prompts in the chat template (when the tokenizer has one).
        seed: initialisation seed of the tiny random model.
        backend: ``"auto"`` (default: ``"native"`` for Llama-style models, else ``"bridge"``),
            ``"native"`` (the Hugging Face model with its own attention kernel and virtual hook
            points, :mod:`steerlens.models.native`) or ``"bridge"`` (TransformerLens's
            ``TransformerBridge``). Both give the same hook names and the same values. With
            ``"auto"``, ``$STEERLENS_BACKEND`` decides when set (so every CLI command takes it).
        device_map: spread the model over devices with accelerate (instead of ``device``): a dict
            ``{module name: device}`` (``{"model.embed_tokens": 0, "model.layers.0": 0, ...,
            "model.layers.40": "cpu", "lm_head": "cpu"}``; devices are GPU indices, ``"cuda:N"``,
            ``"cpu"`` or ``"disk"``) or ``"auto"`` / ``"balanced"`` / ``"balanced_low_0"`` /
            ``"sequential"``. Decoder layers are never split. In a map with a GPU, ``"cpu"``
            and ``"disk"`` modules are offloaded (weights moved to the GPU per forward call).
            Hooks run on the device of the layer they sit on; edits, gates and captures follow
            the activation's device and dtype.
        max_memory: per-device budget for the named strategies, e.g. ``{0: "70GiB", "cpu": "200GiB"}``.
        offload_folder: where ``"disk"`` modules keep their weights.
    """
    dtype = parse_dtype(dtype)
    if device_map is not None:
        if device not in (None, "cpu", "auto") and str(device) != "cpu":
            raise ModelLoadError(f"give either device ({device!r}) or device_map, not both")
        device_map = check_device_map(device_map)  # before any weights are read
        if isinstance(device_map, dict):
            _check_disk(device_map, offload_folder)
        placement: Optional[dict] = {"device_map": device_map, "max_memory": max_memory,
                                     "offload_folder": offload_folder}
    else:
        if max_memory is not None or offload_folder is not None:
            raise ModelLoadError("max_memory and offload_folder only apply with a device_map")
        placement = None
    dev = _resolve_device(device)
    if backend == "auto":  # the CLI and scripts choose with the environment
        backend = os.environ.get("STEERLENS_BACKEND", "auto") or "auto"
    key = DEFAULT_MODEL if name is None else _ALIASES.get(str(name).lower(), str(name))
    if key == TINY_MODEL:
        m = _tiny_random(dev, dtype, seed, backend, placement)
        m.chat = chat
        return m
    from transformers import AutoModelForCausalLM

    if key == DEFAULT_MODEL:
        path: Path | str = default_model_dir()
    else:
        path = Path(key).expanduser()
        if not path.exists():
            looks_like_hub_id = key.count("/") == 1 and not key.startswith((".", "/", "~"))
            if not looks_like_hub_id:
                raise ModelLoadError(
                    f"Unknown model {key!r}: not a known name and no such directory. "
                    f"Known names: {', '.join(KNOWN_MODELS)}; or pass a local Hugging Face model "
                    "directory, or a hub id such as 'HuggingFaceTB/SmolLM2-360M-Instruct' when online."
                )
            path = key
    if isinstance(path, Path) and not (path / "config.json").exists():
        raise ModelLoadError(f"{path} has no config.json: it is not a Hugging Face model directory.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kw: dict = {}
            if placement is not None:
                kw = {"device_map": placement["device_map"], "max_memory": max_memory,
                      "offload_folder": None if offload_folder is None else str(offload_folder)}
            hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kw)
            tok = _load_tokenizer(path)
    except OSError as e:
        if isinstance(path, str):
            raise ModelLoadError(
                f"Could not load {key!r} from the Hugging Face hub ({e.__class__.__name__}). "
                "This machine may be offline: download the model elsewhere and pass its local "
                f"directory, or use one of: {', '.join(KNOWN_MODELS)}."
            ) from e
        raise ModelLoadError(f"Could not load the model in {path}: {e}") from e
    except ValueError as e:
        raise ModelLoadError(
            f"{key!r} is not a causal language model transformers can load: {e}"
        ) from e
    if placement is None:
        hf = hf.to(dev)
    else:
        dev = str(input_device(hf))
    m = _wrap(hf, tok, DEFAULT_MODEL if key == DEFAULT_MODEL else key, str(path), dev, backend)
    m.chat = chat
    return m


def known_models() -> dict[str, str]:
    return dict(KNOWN_MODELS)


