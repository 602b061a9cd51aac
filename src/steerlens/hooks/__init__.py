"""Where activations are read and edited: sites, batched capture, edits, cleanup, steered generation."""

from .batching import Batch, InputError, iter_batches
from .activations import ShardedActivations, capture
from .edits import AddVector, Edit, EditError, FunctionEdit
from .generation import Generation, generate, next_token_logprobs, response_logprobs
from .sites import Site, SiteError, all_head_sites, parse_site, parse_sites
from .context import HookLeakError, count_hooks, steer

__all__ = [
    "Site", "SiteError", "parse_site", "parse_sites", "all_head_sites",
    "Edit", "AddVector", "FunctionEdit", "EditError",
    "capture", "ShardedActivations", "steer", "count_hooks", "HookLeakError",
    "generate", "Generation", "response_logprobs", "next_token_logprobs",
    "Batch", "InputError", "iter_batches",
]
