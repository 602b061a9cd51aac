"""steerlens: inference-time steering of language models on TransformerLens.

Top level::

    import steerlens
    model = steerlens.load_model()                       # SmolLM2-135M-Instruct, offline
    acts = steerlens.capture(model, prompts, ["blocks.10.hook_resid_post"])
    with steerlens.steer(model, [steerlens.AddVector("blocks.10.hook_resid_post", v, alpha=1.0)]):
        ...
    texts = steerlens.generate(model, prompts, edits=[...])
"""

__version__ = "0.1.0"

from .hooks import (
    AddVector,
    Edit,
    EditError,
    FunctionEdit,
    FunctionGate,
    HookGate,
    Site,
    SiteError,
    capture,
    generate,
    next_token_logprobs,
    response_logprobs,
    steer,
    Trace,
)
from .hooks.interventions import (DirectionalAblation, MeanAblation, Patch, Scale, ZeroAblation,
                                  directional_ablation, mean_activations)
from .models import ModelLoadError, SteerModel, load_model

__all__ = [
    "__version__", "load_model", "SteerModel", "ModelLoadError",
    "capture", "steer", "generate", "response_logprobs", "next_token_logprobs",
    "Site", "SiteError", "AddVector", "FunctionEdit", "Edit", "EditError",
    "HookGate", "FunctionGate", "Trace",
    "Scale", "ZeroAblation", "MeanAblation", "Patch", "DirectionalAblation", "directional_ablation",
    "mean_activations",
]
