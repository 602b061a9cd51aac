"""Test-only methods for the contract suite (they do not ship in the library):

- a gate that reads activations and an editor whose delta depends on the activation at every token;
- intervention presets that put every site kind and token offsets through the suite.

They are registered as hidden methods, so the suite (which runs over every registered method)
covers them like any other."""

from __future__ import annotations

import torch

from steerlens.hooks import FunctionEdit, FunctionGate, Site
from steerlens.hooks.runtime import attach
from steerlens.pipeline import Editor, Gate, PipelineError, Steerer, register_method, register_role
from steerlens.pipeline.editors import MeanDiffEditor
from steerlens.pipeline.methods.interventions import make_ablate, make_dir_ablate, make_scale
from steerlens.pipeline.selectors import FixedSelector


@register_role
class ProjectionGate(Gate):
    """Score = ``(h − mid) · w`` at ``blocks.{layer}.hook_resid_post`` with ``w`` the mean target
    minus mean benign prompt state and ``mid`` their midpoint; threshold = the median fitting
    score, so about half the prompts open. ``mode="token"`` re-reads it on every token."""

    kind = "test_projection_gate"

    def __init__(self, layer: int = 0, mode: str = "prompt") -> None:
        super().__init__(layer=int(layer), mode=mode)
        self.w = self.mid = None
        self.threshold = 0.0

    @property
    def site(self) -> Site:
        return Site.resid(self.params["layer"])

    @property
    def fitted(self) -> bool:
        return self.w is not None

    def required_sites(self, model):
        return [self.site]

    def fit(self, model, acts) -> None:
        pos, neg = acts.module(self.site)
        self.w, self.mid = pos.mean(0) - neg.mean(0), (pos.mean(0) + neg.mean(0)) / 2
        self.threshold = float(((torch.cat([pos, neg]) - self.mid) @ self.w).median())

    def hook_gate(self, model):
        w, mid = self.w, self.mid
        return FunctionGate(self.site, lambda a: (a.float() - mid.to(a.device)) @ w.to(a.device),
                            mode=self.params["mode"], threshold=self.threshold, name="test-gate")

    def extra_state(self) -> dict:
        return {"threshold": self.threshold}

    def state_dict(self):
        return {"w": self.w, "mid": self.mid}

    def load_state(self, extra, tensors) -> None:
        self.threshold = float(extra["threshold"])
        self.w, self.mid = tensors["w"], tensors["mid"]


@register_role
class PushEditor(Editor):
    """``delta(h) = v · sigmoid((h·u − c) / s)`` per token: ``v`` the mean difference, ``u = v/|v|``,
    ``c`` and ``s`` the mean and spread of the fitting projections — a push whose size depends on
    each token's activation."""

    kind = "test_push_editor"

    def __init__(self, positions: str = "all") -> None:
        super().__init__(positions=positions)
        self.v = None
        self.c, self.s = 0.0, 1.0
        self.module = None

    @property
    def fitted(self) -> bool:
        return self.v is not None

    def fit(self, model, acts, selection) -> None:
        if len(selection.modules) != 1 or selection.modules[0].is_head:
            raise PipelineError("the push test editor takes one residual module")
        self.module = selection.modules[0]
        pos, neg = acts.module(self.module)
        self.v = pos.mean(0) - neg.mean(0)
        u = self.v / self.v.norm()
        proj = torch.cat([pos, neg]) @ u
        self.c, self.s = float(proj.mean()), float(proj.std())

    def edits(self, model, selection, alpha, gate=None):
        v, c, s = self.v, self.c, self.s
        u = v / v.norm()

        def delta(act, info):
            proj = torch.sigmoid((act.float() @ u.to(act.device) - c) / s)
            info.report("push", proj, per_token=True)
            return (proj[..., None] * v.to(act.device)).to(act.dtype)

        return [FunctionEdit(self.module, delta, alpha, gate=gate, positions=self.params["positions"])]

    def extra_state(self) -> dict:
        return {"c": self.c, "s": self.s, "module": str(self.module) if self.module is not None else None}

    def state_dict(self):
        return {"v": self.v}

    def load_state(self, extra, tensors) -> None:
        from steerlens.hooks.sites import parse_site

        self.c, self.s = float(extra["c"]), float(extra["s"])
        self.module, self.v = parse_site(extra["module"]), tensors["v"]


def _steerer(name, selector, editor, gate, alpha, params):
    return Steerer(selector, editor, gate, alpha=alpha, method=name, method_params=params)


@register_method("contract-gate", help="test: activation-reading prompt gate + CAA", hidden=True,
                 contract={"params": {}, "gen_alpha": 20.0})
def make_contract_gate(*, alpha: float = 4.0) -> Steerer:
    return _steerer("contract-gate", FixedSelector(["blocks.1.hook_resid_post"]), MeanDiffEditor(),
                    ProjectionGate(layer=0), alpha, {"alpha": alpha})


@register_method("contract-gate-downstream", help="test: prompt gate after the edited layer (pre-pass)",
                 hidden=True, contract={"params": {}, "gen_alpha": 20.0})
def make_contract_gate_downstream(*, alpha: float = 4.0) -> Steerer:
    return _steerer("contract-gate-downstream", FixedSelector(["blocks.0.hook_resid_post"]), MeanDiffEditor(),
                    ProjectionGate(layer=1), alpha, {"alpha": alpha})


@register_method("contract-token", help="test: token gate + activation-dependent per-token editor", hidden=True,
                 contract={"params": {}, "gen_alpha": 600.0})
def make_contract_token(*, alpha: float = 4.0, positions: str = "all") -> Steerer:
    return _steerer("contract-token", FixedSelector(["blocks.1.hook_resid_post"]), PushEditor(positions=positions),
                    ProjectionGate(layer=0, mode="token"), alpha, {"alpha": alpha, "positions": positions})


@register_method("contract-push-last", help="test: per-token editor on the current last position only",
                 hidden=True, contract={"params": {}, "gen_alpha": 60.0})
def make_contract_push_last(*, alpha: float = 4.0) -> Steerer:
    from steerlens.pipeline import AlwaysOpen

    return _steerer("contract-push-last", FixedSelector(["blocks.1.hook_resid_post"]),
                    PushEditor(positions="current_last"), AlwaysOpen(), alpha, {"alpha": alpha})


# -- intervention presets: every site kind and the token offsets run through the contract suite ---

def _renamed(name: str, st: Steerer) -> Steerer:
    st.method = name
    return st


@register_method("contract-ablate-pattern", help="test: zero-ablation of attention patterns", hidden=True,
                 contract={"params": {}, "gen_alpha": 10.0})
def make_contract_ablate_pattern(*, alpha: float = 1.0) -> Steerer:
    return _renamed("contract-ablate-pattern", make_ablate(
        sites=["blocks.1.attn.hook_pattern[1,3]", "blocks.0.attn.hook_pattern[0]"], mode="zero", alpha=alpha))


@register_method("contract-ablate-kv", help="test: mean-ablation of KV heads (k, v)", hidden=True,
                 contract={"params": {}, "gen_alpha": 10.0})
def make_contract_ablate_kv(*, alpha: float = 1.0, batch_size: int = 16) -> Steerer:
    return _renamed("contract-ablate-kv", make_ablate(
        sites=["blocks.0.attn.hook_k[1]", "blocks.1.attn.hook_v[0]"], mode="mean", alpha=alpha, batch_size=batch_size))


@register_method("contract-scale-q-neurons", help="test: scale query heads and gate neurons at token offsets",
                 hidden=True, contract={"params": {}, "gen_alpha": 3.0})
def make_contract_scale_q(*, alpha: float = 1.0) -> Steerer:
    return _renamed("contract-scale-q-neurons", make_scale(
        sites=["blocks.1.attn.hook_q[0,2]", "blocks.0.mlp.hook_pre", "blocks.1.hook_mlp_out"], factor=-4.0,
        at=[-2, 0, 1, 2], alpha=alpha))


@register_method("contract-dir-ablate-layers", help="test: directional ablation at chosen layers' input",
                 hidden=True, contract={"params": {}, "gen_alpha": 3.0})
def make_contract_dir_layers(*, alpha: float = 1.0, batch_size: int = 16) -> Steerer:
    return _renamed("contract-dir-ablate-layers", make_dir_ablate(
        layer=0, layers=[1], alpha=alpha, positions="from_prompt_last", batch_size=batch_size))


def same_kernel(model, edits):
    """Unsteered runs on the attention kernel the edits run on: on the native backend an edit of an
    attention pattern runs the model's eager attention (SDPA otherwise), whose floats differ in the
    last bits; an identity hook at the same pattern sites puts the reference on that kernel too."""
    names = sorted({e.site.hook_name for e in edits if e.site.is_pattern})
    return attach(model, [(n, lambda a, hook=None: a) for n in names])
