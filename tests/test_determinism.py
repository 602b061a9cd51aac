"""Same command, same numbers: the main job's fit stage gives equal artifacts and the same REAL
layer choices whatever the thread count (default model, the main spec at its smoke sizes)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from steerlens.demo import main_spec, quick_spec
from steerlens.pipeline.specrun import fit_spec

pytestmark = pytest.mark.slow


def _fit(smol, root, out, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fit_spec(quick_spec(main_spec()), smol, out, data_root=root, progress=False)
    finally:
        torch.set_num_threads(old)
    arts = {}
    for d in sorted((out / "artifacts").iterdir()):
        meta = json.loads((d / "metadata.json").read_text())["config"]
        arts[d.name] = (meta.get("selection"), load_file(d / "tensors.safetensors"))
    return arts


def test_fit_stage_is_equal_on_one_and_two_threads(smol, root, tmp_path):
    one = _fit(smol, root, tmp_path / "t1", 1)
    two = _fit(smol, root, tmp_path / "t2", 2)
    assert sorted(one) == sorted(two) == ["caa", "finesteer", "odesteer"]
    for name in one:
        sel1, t1 = one[name]
        sel2, t2 = two[name]
        assert sel1 == sel2, f"{name}: REAL chose differently on 1 and 2 threads"
        assert sorted(t1) == sorted(t2)
        unequal = [k for k in t1 if not torch.equal(t1[k], t2[k])]
        assert not unequal, f"{name}: tensors differ between 1 and 2 threads: {unequal}"
