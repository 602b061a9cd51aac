"""Where activations are read and edited: sites, batched capture, edits (addition and the
interpretability interventions), gates, cleanup, steered generation and traces."""

from .batching import Batch, InputError, iter_batches
from .activations import READ_POSITIONS, ShardedActivations, SiteDict, capture, capture_cache
from .edits import EDIT_POSITIONS, POSITIONS, AddVector, Edit, EditError, FunctionEdit, TokenInfo
from .gates import FunctionGate, GateError, GateProbe, HookGate
from .generation import Generation, Replies, generate, next_token_logprobs, response_logprobs
from .runtime import HookLeakError, Run, attach, count_hooks, site_order
from .sites import Site, SiteError, all_head_sites, parse_site, parse_sites
from .context import steer
from .interventions import (DirectionalAblation, MeanAblation, Patch, Scale, SetActivation, ZeroAblation,
                            directional_ablation, mean_activations)
from .trace import Trace

__all__ = [
    "Site", "SiteError", "parse_site", "parse_sites", "all_head_sites", "site_order",
    "Edit", "AddVector", "FunctionEdit", "EditError", "TokenInfo", "POSITIONS", "EDIT_POSITIONS", "READ_POSITIONS",
    "HookGate", "FunctionGate", "GateError", "GateProbe",
    "capture", "capture_cache", "ShardedActivations", "SiteDict", "steer", "attach", "count_hooks", "HookLeakError", "Run",
    "generate", "Generation", "Replies", "response_logprobs", "next_token_logprobs", "Trace",
    "Batch", "InputError", "iter_batches",
    "Scale", "ZeroAblation", "MeanAblation", "Patch", "SetActivation", "DirectionalAblation",
    "directional_ablation", "mean_activations",
]
