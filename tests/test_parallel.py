"""Data-parallel runs (issue 15): 2 CPU processes under gloo split the batches of every runner and
all-gather results identical to one process's; `steerlens run --workers 2` writes the same files."""

import json

import pytest
import torch

import steerlens
from steerlens import parallel
from test_pipeline_spec import SPEC  # noqa: E402  (tests/ is on sys.path, as for contract_roles)
from steerlens.hooks import AddVector, FunctionGate, capture, generate, next_token_logprobs, response_logprobs

# these tests spawn worker processes: a hung rendezvous must end the test, not the CI budget
pytestmark = pytest.mark.timeout(900, method="thread")

PROMPTS = ["Hi", "What is the capital of France? Answer in one word please.", "2+2?",
           "Write a very short poem about the sea and the moon", "How do I pick a lock?", "Name a colour",
           "Tell me a story about a dragon who loved tea", "Why is the sky blue?", "ok"]
PAIRS = [(p, "Sure, here is an answer.") for p in PROMPTS]
SITES = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z[0,3]", "blocks.1.mlp.hook_post"]


def _edits(m):
    g = torch.Generator().manual_seed(0)
    v, u = torch.randn(m.d_model, generator=g) * 3, torch.randn(m.d_model, generator=g)
    tau = float((capture(m, PROMPTS, "blocks.1.hook_resid_post", "last", progress=False)[
        "blocks.1.hook_resid_post"] @ u).median())  # open on about half of the prompts
    return [AddVector("blocks.0.hook_resid_post", v, 1.0,
                      gate=FunctionGate("blocks.1.hook_resid_post", lambda a: a @ u, threshold=tau))]


def job(out_dir=None):
    """Every runner on the tiny model, with the number of forward passes this rank made."""
    m = steerlens.load_model("tiny-random", seed=0)
    calls = []
    h = m.hf_model.model.embed_tokens.register_forward_hook(lambda mod, a, o: calls.append(a[0].shape[0]))
    e = _edits(m)
    gens = generate(m, PROMPTS, e, max_new_tokens=4, batch_size=2, return_details=True, trace=True,
                    progress=False, do_sample=True, seed=3)
    res = {
        "rank": parallel.world(),
        "capture": {str(k): v for k, v in capture(m, PAIRS, SITES, "response_mean", batch_size=2,
                                                   progress=False).items()},
        "capture_all": capture(m, PROMPTS, SITES[:1], "all", batch_size=4, progress=False)[SITES[0]],
        "gen": [(g.token_ids, g.gates) for g in gens],
        "trace": gens.trace.records,
        "next": next_token_logprobs(m, PROMPTS, e, batch_size=2),
        "resp": response_logprobs(m, PAIRS, e, batch_size=3),
    }
    if out_dir is not None:
        res["stream"] = capture(m, PROMPTS, SITES, "last", batch_size=2, out_dir=out_dir, shard_size=3,
                                progress=False)[SITES[1]]
    h.remove()
    res["rows_run"] = sum(calls)
    rank = parallel.world()[0]
    parallel.check_same("same fit", {"w": torch.ones(3)})  # agreeing ranks pass
    try:
        parallel.check_same("rank-dependent fit", {"w": torch.full((3,), float(rank))})
        res["disagreement_caught"] = False
    except parallel.ParallelError:
        res["disagreement_caught"] = True
    return res


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_two_gloo_ranks_equal_one_process(tmp_path):
    with parallel.torch_threads(1):  # as in each worker
        one = job(tmp_path / "one")
    ranks = parallel.spawn(job, 2, tmp_path / "two", threads=1)
    assert [r["rank"] for r in ranks] == [(0, 2), (1, 2)]
    for r in ranks:  # every rank holds the complete results, equal to one process's bit for bit
        for k in ("capture", "capture_all", "gen", "trace", "next", "resp", "stream"):
            assert _same(r[k], one[k]), k
    assert any(s["scale"] == 0.0 for _, g in one["gen"] for s in g.values())  # the gate closes on some rows
    assert any(s["scale"] == 1.0 for _, g in one["gen"] for s in g.values())
    assert not one["disagreement_caught"] and all(r["disagreement_caught"] for r in ranks)
    # and the work was split: each rank ran part of the rows, together all of them
    split = [r["rows_run"] for r in ranks]
    assert all(0 < n < one["rows_run"] for n in split), (split, one["rows_run"])
    assert abs(sum(split) - one["rows_run"]) <= 2 * 4 * len(PROMPTS)  # decode-step counts depend on EOS


def test_outside_a_run_nothing_is_split():
    assert parallel.world() == (0, 1) and parallel.is_main()
    assert list(parallel.my_batches("abc")) == [(0, "a"), (1, "b"), (2, "c")]
    assert list(parallel.rounds("ab")) == [(0, "a"), (1, "b")]
    with pytest.raises(parallel.ParallelError, match="process group"):
        with parallel.data_parallel():
            pass
    with pytest.raises(parallel.ParallelError, match="workers"):
        parallel.run_command(lambda a: 0, None, workers=0)
    # the backend follows where the model goes, not what the machine has
    from argparse import Namespace

    assert parallel.backend_for(Namespace(device="cpu", device_map=None)) == "gloo"
    assert parallel.backend_for(Namespace(device="cpu", device_map={"model.layers.0": "cpu"})) == "gloo"
    assert parallel.backend_for(Namespace(device="cuda:0", device_map=None)) == "nccl"
    assert parallel.backend_for(Namespace(device=None, device_map={"model.layers.0": 0, "lm_head": "cpu"})) == "nccl"


@pytest.mark.slow
def test_cli_run_with_two_workers_writes_what_one_process_writes(tmp_path, root):
    from steerlens.cli import main

    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("limit = 2", "limit = 3\nbatch_size = 2"))  # a steerer and a baseline
    with parallel.torch_threads(1):  # the workers' thread count, without changing it for later tests
        assert main(["run", str(spec), "--out", str(tmp_path / "one"), "--model", "tiny-random", "--quiet"]) == 0
    assert main(["run", str(spec), "--out", str(tmp_path / "two"), "--model", "tiny-random", "--quiet",
                 "--workers", "2", "--threads", "1"]) == 0

    def results(d):
        res = json.loads((d / "eval" / "results.json").read_text())
        return res["meta"]["workers"], [{k: v for k, v in r.items() if k != "wall_time_s"} for r in res["records"]]

    (w1, one), (w2, two) = results(tmp_path / "one"), results(tmp_path / "two")
    assert (w1, w2) == (1, 2)  # the second run really was split over two ranks
    assert one == two
    for f in ("eval/samples.jsonl", "eval/trace.jsonl", "paired.json", "artifacts/a/tensors.safetensors"):
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f
