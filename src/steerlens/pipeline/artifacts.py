"""Steerer artifacts: a directory with ``tensors.safetensors`` and ``metadata.json``.

``metadata.json`` records the method and its parameters, every role's configuration, the
selected sites, the library version, the fingerprint of the model it was fitted on
(:meth:`SteerModel.fingerprint`), the fitting data's fingerprint / split / sample-id hash, and the
name, shape, dtype of every tensor plus a sha256 of the tensor file.

Writes are atomic: everything goes to a temporary directory next to the target, which then
replaces the target with ``os.replace``; a crash midway leaves either the old artifact or none,
never a half-written one. Loading checks everything it can and says what is wrong: missing
files, bad JSON, tensor names or shapes that differ from the metadata, a tensor file whose
checksum changed, or a model whose fingerprint differs from the one it was fitted on.

This module is the format (write, checked read, model checks); rebuilding the steerer from it is
:func:`steerlens.pipeline.load_steerer` (in :mod:`steerlens.pipeline.steerer`). Artifacts name
roles by their registered ``kind`` and methods by their registered name, never by module path,
so moving a class between modules keeps old artifacts loadable.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Union

from safetensors.torch import load_file, save_file

from ..hooks.sites import SiteError, parse_site
from ..models import as_model
from .errors import PipelineError

FORMAT = "steerlens-steerer"
FORMAT_VERSION = 1
TENSORS = "tensors.safetensors"
METADATA = "metadata.json"
#: Fingerprint fields that must match for a steerer to load onto a model.
MODEL_KEYS = ("architecture", "n_layers", "n_heads", "d_model", "d_head", "weights_sha256", "tokenizer_sha256")


class ArtifactError(PipelineError):
    """A steerer artifact that is missing, incomplete, corrupted, or for another model."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _version() -> str:
    from .. import __version__

    return __version__


def save_steerer(steerer: Any, path: Union[str, os.PathLike], model=None) -> Path:
    """Write ``steerer`` (a fitted :class:`~steerlens.pipeline.Steerer`) to directory ``path``
    atomically (replacing an existing artifact).

    ``model`` (optional) supplies the fingerprint when the steerer does not carry one.
    """
    if not steerer.fitted:
        raise ArtifactError("cannot save an unfitted steerer: call fit(model, data) first")
    fp = steerer.model_fingerprint or (as_model(model).fingerprint() if model is not None else None)
    if fp is None:
        raise ArtifactError("no model fingerprint: pass model= to save()")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # on CPU whatever device the model ran on (a dispatched model's layers sit on several)
    tensors = {k: v.detach().cpu().contiguous() for k, v in steerer.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; an artifact is an ordinary directory
    old: Optional[Path] = None
    try:
        save_file(tensors, str(tmp / TENSORS))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": _version(),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": fp,
            "config": steerer.config(),
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                        for k, v in sorted(tensors.items())},
            "tensors_sha256": _sha256(tmp / TENSORS),
        }
        text = json.dumps(meta, indent=2, sort_keys=True, default=str)
        with open(tmp / METADATA, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not final.exists():
            os.replace(old, final)  # put the previous artifact back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_metadata(path: Union[str, os.PathLike]) -> dict:
    """The artifact's ``metadata.json``, checked for presence, JSON validity and format."""
    d = Path(path)
    if not d.exists():
        raise ArtifactError(f"no steerer artifact at {d} (the directory does not exist)")
    if not d.is_dir():
        raise ArtifactError(f"{d} is a file; a steerer artifact is a directory with {METADATA} and {TENSORS}")
    mp = d / METADATA
    if not mp.exists():
        raise ArtifactError(f"incomplete artifact {d}: {METADATA} is missing")
    try:
        meta = json.loads(mp.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"corrupted artifact {d}: {METADATA} is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{mp} is not a steerlens steerer artifact (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ArtifactError(f"{d} has format version {meta.get('format_version')}; this steerlens "
                            f"({_version()}) reads up to {FORMAT_VERSION}: upgrade steerlens")
    for key in ("config", "model", "tensors"):
        if key not in meta:
            raise ArtifactError(f"corrupted artifact {d}: {METADATA} has no {key!r} entry")
    return meta


def model_differences(expected: dict, actual: dict) -> list[str]:
    """Human-readable differences between two model fingerprints (only fields that must match)."""
    out = []
    for k in MODEL_KEYS:
        if k in expected and expected.get(k) != actual.get(k):
            out.append(f"{k}: artifact {expected.get(k)!r} vs model {actual.get(k)!r}")
    return out


def read_artifact(path: Union[str, os.PathLike]) -> tuple[dict, dict]:
    """``(metadata, tensors)`` of an artifact, checked: files present, valid JSON and format,
    tensor checksum, tensor names and shapes as recorded."""
    d = Path(path)
    meta = read_metadata(d)
    tp = d / TENSORS
    if not tp.exists():
        raise ArtifactError(f"incomplete artifact {d}: {TENSORS} is missing")
    want_sha = meta.get("tensors_sha256")
    if want_sha and _sha256(tp) != want_sha:
        raise ArtifactError(f"corrupted artifact {d}: {TENSORS} does not match the checksum in {METADATA}")
    try:
        tensors = load_file(str(tp))
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise ArtifactError(f"corrupted artifact {d}: cannot read {TENSORS} ({e})") from e
    recorded = meta["tensors"]
    missing = sorted(set(recorded) - set(tensors))
    extra = sorted(set(tensors) - set(recorded))
    if missing or extra:
        raise ArtifactError(f"artifact {d}: tensors differ from {METADATA}: missing {missing}, unexpected {extra}")
    for k, info in recorded.items():
        if list(tensors[k].shape) != list(info["shape"]):
            raise ArtifactError(f"artifact {d}: tensor {k!r} has shape {list(tensors[k].shape)}, "
                                f"{METADATA} says {info['shape']}")
    return meta, tensors


def check_model_fits(path: Union[str, os.PathLike], meta: dict, model, *, check_weights: bool = True) -> None:
    """Raise :class:`ArtifactError` unless the artifact ``meta`` fits ``model``: the same model
    (fingerprint, when ``check_weights``) and sites that exist on it."""
    m = as_model(model)
    if check_weights:
        diff = model_differences(meta["model"], m.fingerprint())
        if diff:
            raise ArtifactError(
                f"artifact {path} was fitted on model {meta['model'].get('name')!r}, not on this model "
                f"({m.name!r}); differs in: " + "; ".join(diff))
    try:
        for s in meta["config"].get("sites", []):
            parse_site(s).validate(m)
    except (SiteError, PipelineError) as e:
        raise ArtifactError(f"artifact {path} does not fit this model: {e}") from e


def describe(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """A short summary of an artifact (method, alpha, sites, model, data) without loading tensors."""
    meta = read_metadata(path)
    cfg = meta["config"]
    return {"method": cfg.get("method"), "alpha": cfg.get("alpha"), "sites": cfg.get("sites"),
            "model": meta["model"].get("name"), "data": cfg.get("fit_info", {}).get("data"),
            "library_version": meta.get("library_version")}


__all__ = ["save_steerer", "read_artifact", "read_metadata", "check_model_fits", "describe", "ArtifactError",
           "model_differences"]
