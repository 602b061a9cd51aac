"""A selection with a margin: candidates are listed in order of preference and a later one wins only
by more than the margin, so noise smaller than the margin cannot flip the choice."""

import pytest
import torch

from steerlens.pipeline import PipelineError, resid_module
from steerlens.pipeline.selectors import margin_order, top_h_selection


def test_margin_order_prefers_the_first_listed_within_the_margin():
    s = torch.tensor([0.70, 0.72, 0.69, 0.80])
    assert margin_order(s, 1, 0.05) == [3]          # 0.80 beats the first listed by more than 0.05
    assert margin_order(s[:3], 1, 0.05) == [0]      # 0.72 does not
    assert margin_order(s[:3], 1, 0.01) == [1]
    assert margin_order(s, 3, 0.05) == [3, 0, 1]    # one pick at a time among those left


def test_margin_choice_does_not_flip_on_noise_where_argmax_does():
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([0.70, 0.71, 0.69, 0.705])  # four candidates no better than each other
    argmax, margin = set(), set()
    for _ in range(50):
        s = base + 0.01 * torch.randn(4, generator=g)
        argmax.add(int(s.argmax()))
        margin.add(margin_order(s, 1, 0.05)[0])
    assert len(argmax) > 1 and margin == {0}


def test_top_h_selection_with_margin_and_bad_margin():
    mods = [resid_module(layer) for layer in (12, 8, 10)]
    sel = top_h_selection(mods, torch.tensor([0.98, 1.0, 1.0]), 1, "auc", weights="relative", margin=0.05)
    assert [str(m) for m in sel.sites()] == ["blocks.12.hook_resid_post"]
    plain = top_h_selection(mods, torch.tensor([0.98, 1.0, 1.0]), 1, "auc", weights="relative")
    assert [str(m) for m in plain.sites()] == ["blocks.8.hook_resid_post"]
    with pytest.raises(PipelineError):
        top_h_selection(mods, torch.tensor([0.98, 1.0, 1.0]), 1, "auc", margin=-0.1)


def test_real_selector_margin_is_checked_and_recorded(tiny):
    from steerlens.pipeline.methods.real.selector import REALSelector

    with pytest.raises(PipelineError, match="margin"):
        REALSelector(target="resid", margin=1.5)
    assert REALSelector(target="resid", layers=[1, 0], margin=0.05).params["margin"] == 0.05
    assert [str(m) for m in REALSelector(target="resid", layers=[1, 0]).candidates(tiny)] == \
        ["blocks.1.hook_resid_post", "blocks.0.hook_resid_post"]  # the listed order is kept
