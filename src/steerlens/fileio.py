"""Atomic file writes: nothing half-written on disk.

Every writer goes to a temporary file in the target's directory and is moved into place with
``os.replace``; if writing fails the temporary file is removed and the old file (if any) stays.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` then move ``tmp_path`` onto ``path`` (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: PathLike, obj: Any, indent: int = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=str, ensure_ascii=False))


def atomic_write_report(path: PathLike, obj: Any, markdown: str) -> Path:
    """A result as ``path`` (JSON) and the same name with ``.md`` (its tables), both atomically;
    parent folders are made. Returns the JSON's path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, obj)
    atomic_write_text(p.with_suffix(".md"), markdown)
    return p


def replace_marked_block(doc: PathLike, begin: str, end: str, body: str) -> Path:
    """Replace what lies between the marker lines ``begin`` and ``end`` of ``doc`` by ``body``
    (a blank line after ``begin``), atomically. A document without both markers is an error
    (``SystemExit`` naming them), so a generated block is never appended to the wrong file."""
    text = Path(doc).read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise SystemExit(f"error: {doc} has no {begin!r} … {end!r} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return atomic_write_text(doc, f"{head}{begin}\n\n{body}\n{end}{tail}")


def atomic_savefig(fig, path: PathLike, **savefig_kw: Any) -> Path:
    """``fig.savefig`` to ``path`` atomically (format from ``path``'s suffix unless given)."""
    savefig_kw.setdefault("format", Path(path).suffix.lstrip(".") or "png")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig_kw))


def parse_value(value: str) -> Any:
    """A command-line / spec value (``--param KEY=VALUE``, ``--vary KEY=V1,V2``): JSON where it parses
    (``3`` → int, ``0.5`` / ``1e-3`` → float, ``true`` / ``false`` → bool, ``null`` → None,
    ``[1, 2]`` → list, ``{"a": 1}`` → dict, ``"x"`` → str), else the text itself (``scs`` → ``"scs"``)."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
