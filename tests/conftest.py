"""Shared fixtures: a tiny random model (unit tests) and the default model (integration tests)."""

import pytest
import torch

import steerlens


@pytest.fixture(scope="session")
def tiny():
    """2-layer random Llama with the default model's tokenizer (built offline in < 1 s)."""
    return steerlens.load_model("tiny-random", seed=0)


@pytest.fixture(scope="session")
def smol():
    """SmolLM2-135M-Instruct, the default model (cached float32 weights)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return steerlens.load_model()
