"""The run-time shape check the suite installs (tests/shapecheck.py via conftest): it covers the
annotated tensor boundaries, and a wrong shape or dtype fails at the boundary."""

import pytest
import torch
from jaxtyping import TypeCheckError

import shapecheck
from steerlens import AddVector
from steerlens.pipeline import GateDecision


def test_the_annotated_boundaries_are_checked():
    checked = set(shapecheck.CHECKED)
    for name in ("steerlens.hooks.edits.AddVector.__init__", "steerlens.evals.stats.bootstrap_ci"):
        assert name in checked, sorted(checked)
    assert len(checked) >= 20


def test_a_wrong_dtype_or_shape_fails_where_it_enters():
    with pytest.raises(TypeCheckError, match="vector"):
        AddVector("blocks.0.hook_resid_post", torch.zeros(4, dtype=torch.long))  # Float expected
    with pytest.raises(TypeCheckError, match="scale"):
        GateDecision(torch.zeros(3), torch.ones(3, 2))
