"""The run-time shape check the test suite installs (tests/conftest.py).

jaxtyping's import hook hands every function of ``steerlens`` to :func:`check_shapes`; the
functions whose annotations name a jaxtyping array type (``Float[torch.Tensor, "n d"]`` ...) — the
public tensor boundaries — get beartype, so a wrong shape or dtype fails where it enters. Other
functions are returned unchanged (their plain Python hints are documentation, not contracts).
"""

from __future__ import annotations

import re

from beartype import beartype

_JAXTYPING = re.compile(r"\b(Float|Int|Bool|Shaped|Num|Integer|Real|Inexact|UInt)\[")

#: qualified names of the functions that were wrapped (a test checks the boundaries are covered)
CHECKED: list[str] = []


def _hints(fn) -> str:
    ann = getattr(fn, "__annotations__", None) or {}
    return " ".join(a if isinstance(a, str) else repr(a) for a in ann.values())


def check_shapes(obj):
    if callable(obj) and not isinstance(obj, type) and _JAXTYPING.search(_hints(obj)):
        CHECKED.append(f"{obj.__module__}.{obj.__qualname__}")
        return beartype(obj)
    return obj
