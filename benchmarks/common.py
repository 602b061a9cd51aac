"""Shared by the benchmarks: prompts, interleaved timing, medians, the machine, and the outside
reference every speed ratio is taken against (the plain Hugging Face model, default attention)."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch

PROMPTS = [
    "Give me three tips for staying healthy.",
    "What are the three primary colors?",
    "Describe the structure of an atom.",
    "How can we reduce air pollution?",
    "Explain why the sky is blue in simple words.",
    "Write a short story about a robot who learns to paint.",
    "What is the capital of Australia and why was it chosen?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "List five fruits that are rich in vitamin C.",
    "How does a bicycle stay upright when it moves?",
    "Translate 'good morning' into French, Spanish and German.",
    "What is the difference between weather and climate?",
    "Give an example of a renewable energy source and explain it.",
    "Write a haiku about the first snow of winter.",
    "Why do cats purr?",
    "Suggest a name for a bakery that sells only bread.",
]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Run every variant once per repeat, reversing the order on odd repeats (A B, B A, ...), so
    machine load hits all alike; returns the seconds of every call."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for k, fn in (list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]):
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in times.items()}


def machine_info() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "torch": torch.__version__, "loadavg_start": os.getloadavg()}


def plain_hf(model):
    """The same weights as a plain Hugging Face model with its default attention."""
    from transformers import AutoModelForCausalLM

    from steerlens.models import default_model_dir

    hf = AutoModelForCausalLM.from_pretrained(str(default_model_dir()), dtype=torch.float32)
    hf.eval()
    return hf


def plain_hf_generate(hf, model, prompts: list[str], new_tokens: int, batch_size: int | None = None) -> Callable[[], int]:
    """A call that runs ``hf.generate`` greedily on ``prompts`` (in batches of ``batch_size``,
    default all at once; the same left-padded, chat-templated ids steerlens uses) and returns the
    tokens generated up to EOS."""
    from transformers import GenerationConfig

    from steerlens.hooks import iter_batches

    cfg = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, pad_token_id=model.pad_token_id,
                           eos_token_id=model.eos_token_ids, temperature=None, top_p=None, top_k=None)
    eos = set(model.eos_token_ids)
    batches = list(iter_batches(model, prompts, batch_size or len(prompts)))

    @torch.no_grad()
    def run() -> int:
        n = 0
        for b in batches:
            seqs = hf.generate(input_ids=b.input_ids, attention_mask=b.attention_mask, generation_config=cfg)
            n += sum(next((i for i, t in enumerate(row) if t in eos), len(row))
                     for row in seqs[:, b.input_ids.shape[1]:].tolist())
        return n

    return run
