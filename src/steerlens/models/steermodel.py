"""The :class:`SteerModel` record: a causal LM, its tokenizer, prompt formatting and the hook
backend (native or bridge); where its inputs go on a dispatched model."""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any, Optional

import torch

from .common import ModelLoadError


class SteerModel:
    """A causal LM plus what steerlens needs to feed it prompts and hook it.

    Two backends give the same TransformerLens hook names (``blocks.{l}.hook_resid_post``, ...):

    - ``native`` (default for Llama-style models): the plain Hugging Face model with its own
      attention kernel; the hook names are virtual hook points that cost nothing until a hook is
      attached (:mod:`steerlens.models.native`).
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
        template) the prompt becomes one user turn followed by the assistant header, after a system
        turn when ``system`` is given. Otherwise it is plain text (``system``, a blank line, then
        the prompt). Either way the ids start with exactly one BOS when the tokenizer has one.
        """
        use_chat = (self.chat if chat is None else chat) and self.has_chat_template
        tok = self.tokenizer
        if use_chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{system}\n\n{prompt}" if system else prompt
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

    def turn_end_ids(self) -> list[int]:
        """Token ids the chat template writes after an assistant reply (for ChatML templates
        ``"<|im_end|>\n"``): what a reply read *as a finished turn* ends with. Empty without a chat
        template, or when the template's text of a finished turn does not extend its prompt text."""
        if not self.has_chat_template:
            return []
        tok, marker = self.tokenizer, "\x00steerlens-reply\x00"
        msgs = [{"role": "user", "content": "x"}]
        head = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": marker}], tokenize=False)
        if not full.startswith(head) or marker not in full:
            return []
        tail = full[full.index(marker) + len(marker):]
        return list(tok(tail, add_special_tokens=False)["input_ids"]) if tail else []

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



def as_model(model: Any) -> SteerModel:
    """Accept a SteerModel or a bare TransformerBridge (with its tokenizer)."""
    if isinstance(model, SteerModel):
        return model
    if hasattr(model, "original_model") and hasattr(model, "tokenizer"):
        return SteerModel(bridge=model, tokenizer=model.tokenizer, name=getattr(model.cfg, "model_name", "bridge"))
    raise TypeError(f"expected a steerlens.SteerModel or a TransformerBridge, got {type(model).__name__}")


