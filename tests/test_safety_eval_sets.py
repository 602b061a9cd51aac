"""The safety task's extra sets: ``heldout`` (harmful prompts of the sources no steerer is fitted
on) and ``wrapped`` (the shared harmful prompts in held-out jailbreak families)."""

import pytest

from steerlens.evals import data as D
from steerlens.evals import safety_sources as S
from steerlens.evals.tasks import EXTRA_SAFETY_SETS, _safety_sets, safety_task


def test_heldout_is_every_other_source_balanced(root):
    fit_pool = {e.prompt for e in D.load_harmful("fit", root=root)}
    ex = S.load_heldout_harmful("test", 24, 0, root=root)
    assert len(ex) == 24 and len({e.id for e in ex}) == 24
    groups = {e.meta["group"] for e in ex}
    assert groups <= set(S.heldout_groups()) and not groups & set(S.SHARED_GROUPS)
    assert len(groups) == len(S.heldout_groups())  # balanced: 4 of each of 6 groups
    assert all(e.split == "test" for e in ex) and not {e.prompt for e in ex} & fit_pool
    assert [e.id for e in ex] == [e.id for e in S.load_heldout_harmful("test", 24, 0, root=root)]


def test_wrapped_uses_held_out_families_only(root):
    templates = S.load_jailbreak_templates(root)
    fit_fams, held_fams = S.split_families(templates, 0.5, 0)
    base = D.load_harmful("test", 10, 3, root=root)
    ex = S.load_wrapped_harmful("test", 10, 3, root=root)
    assert [e.meta["unwrapped"] for e in ex] == [e.prompt for e in base]
    for e, b in zip(ex, base):
        assert e.id == f"wrapped:{b.id}" and b.prompt in e.prompt and e.prompt != b.prompt
        assert e.meta["family"] in held_fams and e.meta["family"] not in fit_fams
    with pytest.raises(D.DataError):
        S.load_wrapped_harmful("test", 2, root=root, max_template_chars=1)


def test_safety_task_builds_extra_sets_only_when_named(root, monkeypatch):
    plain = _safety_sets("test", 3, 0, root)
    assert not set(plain) & set(EXTRA_SAFETY_SETS)
    both = _safety_sets("test", 3, 0, root, EXTRA_SAFETY_SETS)
    assert len(both["heldout"]) == 3 and len(both["wrapped"]) == 3
    with pytest.raises(ValueError, match="heldout"):
        safety_task(None, sets=["nope"], limit=2, root=root, progress=False)
