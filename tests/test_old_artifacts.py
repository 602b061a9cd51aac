"""Artifacts saved before the pipeline core was split (commit ed2d688, ``pipeline/base.py``) still
load and steer the same.

``tests/data/artifacts-ed2d688`` holds one artifact per method registered at that commit (the
contract-suite builds on the tiny random model, made by ``make.py`` there with that commit's
code), plus each one's next-token log-probabilities under its edits (every 97th vocabulary entry
and the argmax). Artifacts name roles by kind and methods by name, never by module path, so
moving classes between modules must not change what loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import contract_roles  # noqa: F401  (the test-only roles some of the old artifacts use)
import steerlens
from steerlens.pipeline import ArtifactError, available_methods, load_steerer

OLD = Path(__file__).parent / "data" / "artifacts-ed2d688"
REF = json.loads((OLD / "reference.json").read_text())
NAMES = sorted(p.name for p in OLD.iterdir() if (p / "metadata.json").exists())


def test_every_old_method_still_exists():
    assert NAMES, "no old artifacts found"
    assert set(NAMES) <= set(available_methods())


@pytest.mark.parametrize("name", NAMES)
def test_old_artifact_loads_and_steers_the_same(tiny, name):
    st = load_steerer(OLD / name, model=tiny)
    assert st.method == name
    ref = load_file(str(OLD / "reference_logprobs.safetensors"))
    alpha = available_methods()[name].contract["gen_alpha"] / REF["alpha_div"]
    lp = steerlens.next_token_logprobs(tiny, REF["prompts"], st.edits(tiny, REF["prompts"], alpha=alpha), progress=False)
    lp = torch.as_tensor(lp).float()
    torch.testing.assert_close(lp[:, ::REF["vocab_stride"]], ref[name], atol=1e-4, rtol=1e-4)
    assert torch.equal(lp.argmax(-1), ref[name + ".argmax"])


def test_an_artifact_naming_an_unknown_role_says_to_refit(tmp_path):
    import shutil

    d = tmp_path / "art"
    shutil.copytree(OLD / "caa", d)
    meta = json.loads((d / "metadata.json").read_text())
    meta["config"]["editor"]["kind"] = "mean_diff_renamed_away"
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="refit"):
        load_steerer(d)


def test_old_module_paths_import_the_same_modules(monkeypatch):
    import importlib
    import sys

    for old_name in [m for m in sys.modules if m.startswith(("steerlens.pipeline.finesteer", "steerlens.pipeline.real",
                                                            "steerlens.pipeline.base"))]:
        monkeypatch.delitem(sys.modules, old_name)  # imported by an earlier test: import afresh, warned
    import steerlens.pipeline.methods.finesteer.scs as scs
    import steerlens.pipeline.methods.real as real
    from steerlens.pipeline import roles, selection

    with pytest.warns(DeprecationWarning, match="moved"):
        old = importlib.import_module("steerlens.pipeline.finesteer.scs")
    assert old is scs
    with pytest.warns(DeprecationWarning):
        from steerlens.pipeline.real import REALSelector
    assert REALSelector is real.REALSelector
    with pytest.warns(DeprecationWarning):
        from steerlens.pipeline.base import Role, Selection
    assert Role is roles.Role and Selection is selection.Selection
