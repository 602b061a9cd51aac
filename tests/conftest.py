"""Shared fixtures: a tiny random model (unit tests) and the default model (integration tests)."""

import importlib
import pkgutil
import sys
from pathlib import Path

import pytest
import torch
from jaxtyping import install_import_hook

# Shapes and types at steerlens's annotated boundaries are checked at run time in every test
# (jaxtyping + beartype), so a wrong shape fails where it enters, not three calls later.
with install_import_hook("steerlens", "shapecheck.check_shapes"):
    import steerlens

    for _m in pkgutil.walk_packages(steerlens.__path__, "steerlens."):  # every module, checked
        if not _m.name.endswith("__main__"):
            importlib.import_module(_m.name)
from steerlens.evals import data as D

# research experiments are scripts in <repo>/experiments that use steerlens as a user would
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


@pytest.fixture(scope="session")
def tiny():
    """2-layer random Llama with the default model's tokenizer (built offline in < 1 s)."""
    return steerlens.load_model("tiny-random", seed=0)


@pytest.fixture(scope="session")
def smol():
    """SmolLM2-135M-Instruct, the default model (cached float32 weights)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return steerlens.load_model()


@pytest.fixture(scope="session")
def root():
    """The benchmark data directory (../shared/data, $STEERLENS_DATA); tests that need it skip without it."""
    try:
        return D.data_dir()
    except D.DataError as e:
        pytest.skip(f"benchmark data not available: {e}")
