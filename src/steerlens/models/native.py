"""TransformerLens hook names on a plain Hugging Face model: the native backend.

The TransformerLens bridge makes every forward pass pay for its wrapping: it switches the model
to eager attention, recomputes attention in Python, and calls ~1,200 hook points per pass whether
or not anything listens (issue 16 measured 0.62–0.78× of plain Hugging Face ``generate``). The
native backend keeps the Hugging Face model as it is — its own attention kernel (SDPA by default)
and no wrapping — and gives the hook names steerlens supports (see :mod:`steerlens.hooks.sites`)
as *virtual* hook points. A virtual hook point registers a torch hook on the Hugging Face module
that computes the activation only while someone listens, and removes it with the handle.

============================  ===========================================================
hook name                     where it is read / edited on a Llama-style decoder layer
============================  ===========================================================
``hook_resid_pre``            input of the decoder layer (forward pre-hook)
``hook_resid_mid``            input of ``post_attention_layernorm`` (as on the bridge, an
                              edit reaches the MLP branch only)
``hook_resid_post``           output of the decoder layer
``hook_attn_out``             output of ``self_attn`` (after ``o_proj``)
``hook_mlp_out``              output of ``mlp``
``attn.hook_q`` / ``k`` / ``v``  outputs of ``q_proj`` / ``k_proj`` / ``v_proj`` as
                              ``[b, pos, heads, d_head]`` (before the rotary embedding)
``attn.hook_z``               input of ``o_proj`` as ``[b, pos, n_heads, d_head]``
``attn.hook_pattern``         attention probabilities ``[b, heads, q_pos, k_pos]``: while a
                              pattern hook is attached the model runs a registered eager
                              attention function that calls it; SDPA comes back on removal
``mlp.hook_pre``              output of ``gate_proj`` (before the activation function)
``mlp.hook_post``             input of ``down_proj``
============================  ===========================================================

The values equal the bridge's at every one of these names (``tests/test_native_backend.py``
compares reads and edits on both backends). Architectures with this layout (Llama, Mistral,
Qwen2) load natively; others go through the bridge (``load_model(..., backend="bridge")``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

#: ``config.model_type`` values whose decoder layers have the layout above.
NATIVE_MODEL_TYPES = ("llama", "mistral", "qwen2")
_PATTERN_IMPL = "steerlens_eager_pattern"


class NativeUnsupported(RuntimeError):
    """The model's layout is not one the native backend knows."""


@dataclass
class NativeConfig:
    """The TransformerLens config fields steerlens reads, from the Hugging Face config."""

    n_layers: int
    n_heads: int
    n_key_value_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    model_name: str
    d_vocab: int


class NativeHandle:
    """One attached hook: ``.hook`` is the torch handle (``.hook.remove()`` detaches it)."""

    def __init__(self, hook: Any, user_hook: Callable) -> None:
        self.hook = hook
        self.user_hook = user_hook


class _Detach:
    """A torch-handle-like object that runs a callback once on ``remove()``."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Optional[Callable[[], None]] = fn

    def remove(self) -> None:
        if self._fn is not None:
            fn, self._fn = self._fn, None
            fn()


class NativeHookPoint:
    """A TransformerLens-style hook point backed by a torch hook on a Hugging Face module.

    ``add_hook(fn)`` calls ``fn(activation, hook=self)`` on every forward pass; a tensor it returns
    replaces the activation (``None`` keeps it), as with TransformerLens hook points.
    """

    def __init__(self, name: str, attach: Callable[["NativeHookPoint"], Any]) -> None:
        self.name = name
        self._attach = attach
        self.fwd_hooks: list[NativeHandle] = []
        self._torch_handle: Any = None

    def __repr__(self) -> str:
        return f"NativeHookPoint({self.name!r}, {len(self.fwd_hooks)} fwd)"

    # what the virtual hook point does when its module runs
    def _call(self, act: torch.Tensor) -> torch.Tensor:
        for h in list(self.fwd_hooks):
            out = h.user_hook(act, hook=self)
            if out is not None:
                act = out
        return act

    def add_hook(self, hook: Callable, dir: str = "fwd", prepend: bool = False, **_: Any) -> NativeHandle:
        if dir != "fwd":
            raise NotImplementedError("the native backend attaches forward hooks only; gradients flow through "
                                      "the edited activations (use torch.autograd on the outputs)")
        if not self.fwd_hooks:
            self._torch_handle = self._attach(self)
        handle = NativeHandle(_Detach(lambda: self._drop(handle)), hook)
        if prepend:
            self.fwd_hooks.insert(0, handle)
        else:
            self.fwd_hooks.append(handle)
        return handle

    def _drop(self, handle: NativeHandle) -> None:
        self.fwd_hooks[:] = [h for h in self.fwd_hooks if h is not handle]
        if not self.fwd_hooks and self._torch_handle is not None:
            th, self._torch_handle = self._torch_handle, None
            th.remove()

    def remove_hooks(self, dir: str = "fwd", including_permanent: bool = False, level: Any = None) -> None:
        for h in list(self.fwd_hooks):
            h.hook.remove()

    @property
    def _forward_hooks(self) -> dict:
        return dict(enumerate(self.fwd_hooks))


# ------------------------------------------------------------------------------------------------
# torch-hook adapters
# ------------------------------------------------------------------------------------------------

def _first(output):
    return (output[0], True) if isinstance(output, tuple) else (output, False)


def _on_output(module: torch.nn.Module, heads: Optional[int] = None):
    """Virtual hook point on a module's output (first element of a tuple output); ``heads``
    reshapes ``[b, t, heads·d]`` to ``[b, t, heads, d]`` for the hook."""

    def attach(hp: NativeHookPoint):
        def fn(mod, args, output):
            x, is_tuple = _first(output)
            view = x.view(*x.shape[:-1], heads, -1) if heads else x
            new = hp._call(view)
            if new is view and not heads:
                return None
            # a head view goes back even unchanged: a hook may have kept it (for its gradient)
            new = new.reshape(x.shape) if heads else new
            return (new, *output[1:]) if is_tuple else new
        return module.register_forward_hook(fn)

    return attach


def _on_input(module: torch.nn.Module, arg_name: str, heads: Optional[int] = None):
    """Virtual hook point on a module's first input (positional, or keyword ``arg_name``)."""

    def attach(hp: NativeHookPoint):
        def fn(mod, args, kwargs):
            positional = len(args) > 0
            x = args[0] if positional else kwargs[arg_name]
            view = x.view(*x.shape[:-1], heads, -1) if heads else x
            new = hp._call(view)
            if new is view and not heads:
                return None
            new = new.reshape(x.shape) if heads else new
            if positional:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, arg_name: new}
        return module.register_forward_pre_hook(fn, with_kwargs=True)

    return attach


class _PatternSwitch:
    """Runs the model with the pattern-calling eager attention while any pattern hook is attached."""

    def __init__(self, hf_model: torch.nn.Module) -> None:
        self.hf = hf_model
        self.users = 0
        self.saved: Optional[str] = None

    def attach(self, attn_module: torch.nn.Module):
        def attach(hp: NativeHookPoint):
            _register_pattern_attention()
            attn_module._steerlens_pattern = hp
            if self.users == 0:
                self.saved = self.hf.config._attn_implementation
                _set_attn(self.hf, _PATTERN_IMPL)
            self.users += 1

            def detach():
                attn_module._steerlens_pattern = None
                self.users -= 1
                if self.users == 0 and self.saved is not None:
                    _set_attn(self.hf, self.saved)
            return _Detach(detach)
        return attach


def _set_attn(hf_model: torch.nn.Module, impl: str) -> None:
    for mod in hf_model.modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = impl


_registered = False


def _register_pattern_attention() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(_PATTERN_IMPL, _pattern_attention)
    AttentionMaskInterface.register(_PATTERN_IMPL, eager_mask)
    _registered = True


def _pattern_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention (as transformers computes it) that calls the layer's pattern hook point
    on the probabilities ``[b, heads, q_pos, k_pos]``."""
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    w = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        w = w + attention_mask[:, :, :, : key.shape[-2]]
    w = torch.nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(query.dtype)
    hp = getattr(module, "_steerlens_pattern", None)
    if hp is not None:
        w = hp._call(w)
    w = torch.nn.functional.dropout(w, p=dropout, training=module.training)
    out = torch.matmul(w, value).transpose(1, 2).contiguous()
    return out, w


# ------------------------------------------------------------------------------------------------
# the backend
# ------------------------------------------------------------------------------------------------

class NativeHooks:
    """The virtual hook points of one Hugging Face causal LM (``hook_dict`` by TransformerLens name)."""

    def __init__(self, hf_model: torch.nn.Module, name: str = "") -> None:
        cfg = hf_model.config
        mtype = getattr(cfg, "model_type", None)
        if mtype not in NATIVE_MODEL_TYPES:
            raise NativeUnsupported(f"model_type {mtype!r} is not one of {NATIVE_MODEL_TYPES}")
        decoder = hf_model.get_decoder() if hasattr(hf_model, "get_decoder") else getattr(hf_model, "model", None)
        layers = getattr(decoder, "layers", None)
        if layers is None:
            raise NativeUnsupported("no decoder layers found (expected model.model.layers)")
        n_heads = int(cfg.num_attention_heads)
        n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
        d_head = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
        self.hf_model = hf_model
        self.cfg = NativeConfig(n_layers=len(layers), n_heads=n_heads, n_key_value_heads=n_kv,
                                d_model=int(cfg.hidden_size), d_head=d_head, d_mlp=int(cfg.intermediate_size),
                                model_name=name or str(getattr(cfg, "_name_or_path", mtype)),
                                d_vocab=int(cfg.vocab_size))
        self._patterns = _PatternSwitch(hf_model)
        self.hook_dict: dict[str, NativeHookPoint] = {}
        for i, layer in enumerate(layers):
            try:
                attn, mlp = layer.self_attn, layer.mlp
                table = {
                    "hook_resid_pre": _on_input(layer, "hidden_states"),
                    "hook_resid_mid": _on_input(layer.post_attention_layernorm, "hidden_states"),
                    "hook_resid_post": _on_output(layer),
                    "hook_attn_out": _on_output(attn),
                    "hook_mlp_out": _on_output(mlp),
                    "attn.hook_q": _on_output(attn.q_proj, n_heads),
                    "attn.hook_k": _on_output(attn.k_proj, n_kv),
                    "attn.hook_v": _on_output(attn.v_proj, n_kv),
                    "attn.hook_z": _on_input(attn.o_proj, "input", n_heads),
                    "attn.hook_pattern": self._patterns.attach(attn),
                    "mlp.hook_pre": _on_output(mlp.gate_proj),
                    "mlp.hook_post": _on_input(mlp.down_proj, "input"),
                }
            except AttributeError as e:
                raise NativeUnsupported(f"layer {i} lacks a Llama-style submodule: {e}") from e
            for suffix, attach in table.items():
                name_ = f"blocks.{i}.{suffix}"
                self.hook_dict[name_] = NativeHookPoint(name_, attach)


__all__ = ["NativeHooks", "NativeHookPoint", "NativeConfig", "NativeUnsupported", "NATIVE_MODEL_TYPES"]
