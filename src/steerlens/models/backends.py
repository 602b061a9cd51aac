"""Wrap a Hugging Face model in a hook backend: native virtual hook points (:mod:`.native`) where
the layout allows, TransformerLens's ``TransformerBridge`` otherwise."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from .common import ModelLoadError
from .device_map import _summarise_map
from .steermodel import SteerModel

log = logging.getLogger("steerlens.models")


def _load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


BACKENDS = ("auto", "native", "bridge")


def _wrap(hf_model: torch.nn.Module, tokenizer: Any, name: str, source: str, device: str,
          backend: str = "auto") -> SteerModel:
    if backend not in BACKENDS:
        raise ModelLoadError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if getattr(hf_model.config, "quantization_config", None) is not None:
        hf_model.config.quantization_config = None
    hf_model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if backend in ("auto", "native"):
        from .native import NativeHooks, NativeUnsupported

        try:
            return SteerModel(native=NativeHooks(hf_model, name), tokenizer=tokenizer, name=name)
        except NativeUnsupported as e:
            if backend == "native":
                raise ModelLoadError(f"the native backend cannot hook {name!r}: {e}; use backend='bridge'") from e
            log.info("native backend unavailable for %s (%s): using the TransformerLens bridge", name, e)
    from transformer_lens.model_bridge import TransformerBridge

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bridge = TransformerBridge.boot_transformers(
                source, hf_model=hf_model, tokenizer=tokenizer, device=device
            )
    except Exception as e:  # noqa: BLE001 - re-raised with advice
        arch = getattr(hf_model.config, "architectures", None) or type(hf_model).__name__
        if getattr(hf_model, "hf_device_map", None):
            raise ModelLoadError(
                f"TransformerBridge (TransformerLens 4.3) refused {name!r} dispatched with device_map "
                f"{_summarise_map(hf_model.hf_device_map)}: {e}. The native backend (the default for Llama, "
                "Mistral and Qwen2 layouts) takes any accelerate device_map."
            ) from e
        raise ModelLoadError(
            f"TransformerBridge cannot wrap {name!r} (architecture {arch}): {e}. "
            "See transformer_lens.supported_models for the architectures TransformerLens 4 supports."
        ) from e
    return SteerModel(bridge=bridge, tokenizer=tokenizer, name=name)


