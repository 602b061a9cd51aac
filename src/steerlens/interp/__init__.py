"""Interpretability on top of the hook layer: behaviour metrics, head effect maps (exact and
attribution patching), and the causal check of head selections (``steerlens patch``)."""

from .metrics import REFUSAL_OPENINGS, BehaviourMetric, mc2_metric, refusal_metric, task_metric
from .patching import (EffectMap, ablate_heads, ablation_edits, attribution_patching, exact_patching, head_means,
                       metric_values)

__all__ = ["BehaviourMetric", "refusal_metric", "mc2_metric", "task_metric", "REFUSAL_OPENINGS", "EffectMap",
           "attribution_patching", "exact_patching", "metric_values", "head_means", "ablate_heads", "ablation_edits"]
