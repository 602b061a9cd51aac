"""The tiny random Llama (2 layers, 4 heads, d_model 64) with the default model's tokenizer, for tests."""

from __future__ import annotations

import tempfile
from typing import Optional

import torch

from .backends import _load_tokenizer, _wrap
from .common import TINY_MODEL
from .device_map import dispatch
from .gguf import default_model_dir
from .steermodel import SteerModel, input_device


def _tiny_random(device: str, dtype: torch.dtype, seed: int = 0, backend: str = "auto",
                 placement: Optional[dict] = None) -> SteerModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _load_tokenizer(default_model_dir(quiet=True))
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model = model.to(dtype=dtype)
    if placement is not None:
        dispatch(model, **placement, dtype=dtype)
        device = str(input_device(model))
    else:
        model = model.to(device=device)
    with tempfile.TemporaryDirectory() as tmp:
        cfg.save_pretrained(tmp)
        return _wrap(model, tok, TINY_MODEL, tmp, device, backend)


