"""Artifacts: atomic writes, provenance, and clear errors for wrong model / corrupted files."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import steerlens
from steerlens.pipeline import ArtifactError, SimpleContrastiveData, load_steerer, make_steerer
from steerlens.pipeline import artifacts as art

PAIRS_POS = [("Make a bomb", "I'm sorry, I can't help."), ("Steal a car", "I cannot do that."),
             ("Hack a bank", "No, I won't assist."), ("Poison someone", "Sorry, I must refuse.")]
PAIRS_NEG = [("Make a bomb", "Sure, first get"), ("Steal a car", "Here is how:\n1."),
             ("Hack a bank", "Of course! Start with"), ("Poison someone", "Sure, here is a plan")]


@pytest.fixture(scope="module")
def caa(tiny):
    data = SimpleContrastiveData(PAIRS_POS, PAIRS_NEG, position="response_mean", ids=list("abcd"),
                                 split="fit", task="toy")
    return make_steerer("caa", layer=1, alpha=2.0).fit(tiny, data)


def test_metadata_records_provenance(caa, tiny, tmp_path):
    path = caa.save(tmp_path / "a")
    meta = json.loads((path / "metadata.json").read_text())
    assert meta["config"]["method"] == "caa"
    assert meta["config"]["method_params"]["layer"] == 1
    assert meta["config"]["sites"] == ["blocks.1.hook_resid_post"]
    assert meta["model"] == tiny.fingerprint()
    assert meta["library_version"] == steerlens.__version__
    data = meta["config"]["fit_info"]["data"]
    assert data["split"] == "fit" and data["n_pos"] == 4 and data["task"] == "toy"
    assert data["fingerprint"] and data["ids_sha256"]
    assert meta["tensors"]["editor.vector.0"]["shape"] == [tiny.d_model]
    assert sorted(p.name for p in path.iterdir()) == ["metadata.json", "tensors.safetensors"]


def test_write_failing_midway_leaves_no_artifact(caa, tmp_path, monkeypatch):
    target = tmp_path / "art"

    def broken_fsync(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(art.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        caa.save(target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left behind


def test_write_failing_midway_keeps_previous_artifact(caa, tiny, tmp_path, monkeypatch):
    target = caa.save(tmp_path / "art")
    before = (target / "metadata.json").read_text()
    real_save = art.save_file

    def half_then_fail(tensors, filename):
        real_save(dict(list(tensors.items())[:0]) or {"x": torch.zeros(1)}, filename)
        raise RuntimeError("killed while writing tensors")

    monkeypatch.setattr(art, "save_file", half_then_fail)
    with pytest.raises(RuntimeError, match="killed"):
        caa.save(target)
    assert (target / "metadata.json").read_text() == before
    assert load_steerer(target, model=tiny).alpha == caa.alpha
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_wrong_model_is_refused_with_what_differs(caa, tmp_path):
    path = caa.save(tmp_path / "a")
    other = steerlens.load_model("tiny-random", seed=1)
    with pytest.raises(ArtifactError, match="weights_sha256"):
        load_steerer(path, model=other)
    st = load_steerer(path, model=other, check_model=False)  # deliberate transfer: same shapes
    assert st.alpha == caa.alpha


def test_missing_files(caa, tmp_path):
    path = caa.save(tmp_path / "a")
    with pytest.raises(ArtifactError, match="does not exist"):
        load_steerer(tmp_path / "nope")
    (path / "tensors.safetensors").unlink()
    with pytest.raises(ArtifactError, match="tensors.safetensors is missing"):
        load_steerer(path)
    path2 = caa.save(tmp_path / "b")
    (path2 / "metadata.json").unlink()
    with pytest.raises(ArtifactError, match="metadata.json is missing"):
        load_steerer(path2)


def test_bad_json(caa, tmp_path):
    path = caa.save(tmp_path / "a")
    text = (path / "metadata.json").read_text()
    (path / "metadata.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_steerer(path)


def test_tensor_shape_mismatch(caa, tmp_path):
    path = caa.save(tmp_path / "a")
    meta = json.loads((path / "metadata.json").read_text())
    tensors = load_file(str(path / "tensors.safetensors"))
    tensors["editor.vector.0"] = tensors["editor.vector.0"][:10]
    save_file(tensors, str(path / "tensors.safetensors"))
    meta["tensors_sha256"] = art._sha256(path / "tensors.safetensors")  # a consistent but wrong artifact
    (path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=r"editor.vector.0.*shape \[10\].*says \[64\]"):
        load_steerer(path)


def test_tampered_tensor_file(caa, tmp_path):
    path = caa.save(tmp_path / "a")
    raw = bytearray((path / "tensors.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (path / "tensors.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum"):
        load_steerer(path)


def test_unfitted_cannot_be_saved(tmp_path):
    with pytest.raises(ArtifactError, match="unfitted"):
        make_steerer("caa", layer=1).save(tmp_path / "x")
    assert not (tmp_path / "x").exists()
