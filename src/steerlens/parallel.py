"""Data-parallel runs on ``torch.distributed``: several processes share the batches of every
capture, generation and scoring call; each gets all results back, in the order one process has.

Inside :func:`data_parallel` (which ``steerlens run|ablate --workers N`` and ``torchrun ... -m
steerlens run`` enter for you), the batched runners of :mod:`steerlens.hooks` (``capture``,
``generate``, ``response_logprobs``, ``next_token_logprobs``) do this:

1. the inputs are cut into the same batches as in one process (grouped by length, the same
   padding), and batch ``i`` runs on rank ``i mod N`` (round robin over batches sorted by length
   keeps the ranks' work even);
2. every rank's results are all-gathered (``torch.distributed.all_gather_object``) and put back
   in input order, so every rank continues with the complete, bit-identical results — the
   fitting steps that follow a capture (VQ-AE, SCS, MoSE, barrier) run on every rank on the same
   data, and only rank 0 writes files (the other ranks write into a throwaway directory).

Because every batch is computed exactly as one process computes it, the results equal those of
one process with the same per-process thread count (``tests/test_parallel.py``). Backends: gloo
on CPU, NCCL on GPU (each rank on ``cuda:LOCAL_RANK``). What is *not* split: fitting itself
(replicated, cheap next to the model's forward passes on this project's jobs), and
:mod:`steerlens.interp` patching, which batches on its own (it runs whole on every rank).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import shutil
import socket
import sys
import tempfile
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

import torch
from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")

_ACTIVE = False


class ParallelError(RuntimeError):
    """A data-parallel run that cannot start, or whose ranks disagree."""


def _dist():
    import torch.distributed as dist

    return dist


def initialised() -> bool:
    """Whether a torch.distributed process group exists in this process."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the data-parallel run this process is in; ``(0, 1)`` outside one."""
    if not _ACTIVE:
        return 0, 1
    dist = _dist()
    return dist.get_rank(), dist.get_world_size()


def is_main() -> bool:
    """True on rank 0 (and outside a data-parallel run): the process that prints and writes."""
    return world()[0] == 0


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block on ``n`` intra-op CPU threads (``None``: leave the setting alone), restoring
    the previous count after it."""
    if n is None or int(n) == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def data_parallel() -> Iterator[tuple[int, int]]:
    """Within the block, steerlens's batched runners split their batches over the ranks of the
    initialised process group and all-gather the results. Yields ``(rank, world size)``."""
    global _ACTIVE
    if not initialised():
        raise ParallelError("data_parallel() needs an initialised torch.distributed process group "
                            "(steerlens.parallel.init(), or run under torchrun)")
    outer, _ACTIVE = _ACTIVE, True
    try:
        yield world()
    finally:
        _ACTIVE = outer


def my_batches(batches: Iterable[T]) -> Iterator[tuple[int, T]]:
    """``(i, batch)`` for the batches this rank runs: ``i mod N == rank`` (all of them outside a run)."""
    rank, n = world()
    for i, b in enumerate(batches):
        if i % n == rank:
            yield i, b


def gather(local: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """All ranks' ``(batch index, result)`` lists (each in ascending batch order), merged and sorted
    by batch index (on every rank)."""
    rank, n = world()
    if n == 1:
        return local
    parts: list[Any] = [None] * n
    _dist().all_gather_object(parts, local)
    merged = [x for part in parts for x in part]
    idx = [i for i, _ in merged]
    if len(set(idx)) != len(idx):
        raise ParallelError(f"ranks returned overlapping batches {sorted(idx)}")
    return sorted(merged, key=lambda x: x[0])


def map_batches(fn: Callable[[int, T], R], batches: Iterable[T], *, total: int, desc: str, unit: str,
                progress: bool) -> list[R]:
    """``fn(i, batch)`` over this rank's batches (:func:`my_batches`: all of them outside a run),
    with a progress bar on rank 0; returns every batch's result, in batch order, on every rank.
    What the batched runners (generation, scoring, in-memory capture) share."""
    rank, n = world()
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not (progress and rank == 0), leave=False)
    mine = []
    try:
        for i, b in my_batches(batches):
            mine.append((i, fn(i, b)))
            bar.update(min(getattr(b, "size", 1) * n, bar.total - bar.n))  # the ranks' shares are even
    finally:
        bar.close()
    return [r for _, r in gather(mine)]


def rounds(batches: Iterable[T]) -> Iterator[tuple[int, Optional[T]]]:
    """For streaming: the batches in rounds of N, yielding this rank's ``(i, batch)`` of each round
    (``(i, None)`` when the last round has no batch for it). Every rank yields once per round, so a
    :func:`gather` after each keeps memory to N batches."""
    rank, n = world()
    it = iter(batches)
    r = 0
    while True:
        chunk = []
        for _ in range(n):
            try:
                chunk.append(next(it))
            except StopIteration:
                break
        if not chunk:
            return
        yield r * n + rank, (chunk[rank] if rank < len(chunk) else None)
        r += 1


def barrier() -> None:
    if world()[1] > 1:
        _dist().barrier()


def check_same(label: str, tensors: dict[str, torch.Tensor]) -> None:
    """Raise unless every rank holds the same tensors (a digest is compared): the fits that run on
    every rank must agree, or the ranks would evaluate different steerers."""
    rank, n = world()
    if n == 1:
        return
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].detach().float().cpu().contiguous().numpy().tobytes())
    parts: list[Any] = [None] * n
    _dist().all_gather_object(parts, h.hexdigest())
    if len(set(parts)) != 1:
        raise ParallelError(f"{label}: the ranks fitted different values ({parts}); fits must be deterministic "
                            "(fixed seeds, the same thread count on every rank)")


# ------------------------------------------------------------------------------------------------
# starting processes
# ------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init(backend: Optional[str] = None, timeout_s: float = 3600.0) -> tuple[int, int]:
    """Initialise the process group from the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``: what torchrun sets). Backend: NCCL when CUDA
    is available (each rank on ``cuda:LOCAL_RANK``), else gloo. Returns ``(rank, world size)``."""
    dist = _dist()
    if not dist.is_available():
        raise ParallelError("this torch build has no torch.distributed")
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if k not in os.environ:
            raise ParallelError(f"${k} is not set: start with torchrun, or use --workers N")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def _threads_for(workers: int, threads: Optional[int]) -> int:
    if threads is not None:
        return max(1, int(threads))
    if os.environ.get("OMP_NUM_THREADS"):
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // workers)


def backend_for(args: Any) -> str:
    """The process-group backend a command's options call for: NCCL when the model goes to CUDA
    (``--device cuda...``, a device map naming a GPU, or a named strategy on a CUDA machine),
    gloo otherwise: a CPU run on a GPU machine stays on gloo."""
    dev = str(getattr(args, "device", None) or "")
    dm = getattr(args, "device_map", None)
    if isinstance(dm, dict):
        gpu_map = any(isinstance(v, int) or str(v).startswith("cuda") for v in dm.values())
    else:
        gpu_map = dm is not None and torch.cuda.is_available()
    return "nccl" if dev.startswith("cuda") or gpu_map else "gloo"


def _rank_env(rank: int, workers: int, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(workers), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _spawned(rank: int, workers: int, port: int, threads: int, body: Callable, args: Any) -> None:
    _rank_env(rank, workers, port)
    rc = _as_rank(body, args, threads)
    if rc:
        sys.exit(rc)


def _as_rank(body: Callable, args: Any, threads: Optional[int]) -> int:
    if threads is not None:
        torch.set_num_threads(threads)
    rank, n = init(backend_for(args))
    tmp = None
    try:
        if rank != 0:  # only rank 0 prints and writes
            tmp = tempfile.mkdtemp(prefix=f"steerlens-rank{rank}-")
            if hasattr(args, "out"):
                args.out = os.path.join(tmp, "out")
            if hasattr(args, "quiet"):
                args.quiet = True
            if hasattr(args, "no_progress"):
                args.no_progress = True
            sys.stdout = open(os.devnull, "w")
        with data_parallel():
            rc = int(body(args) or 0)
        barrier()
        return rc
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _dist().destroy_process_group()


def _spawned_fn(rank: int, workers: int, port: int, threads: Optional[int], fn: Callable, args: tuple,
                out_dir: str) -> None:
    _rank_env(rank, workers, port)
    if threads is not None:
        torch.set_num_threads(threads)
    init()
    try:
        with data_parallel():
            res = fn(*args)
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        _dist().destroy_process_group()


def spawn(fn: Callable[..., T], workers: int, *args: Any, threads: Optional[int] = None) -> list[T]:
    """Run ``fn(*args)`` inside :func:`data_parallel` in ``workers`` spawned processes (gloo on
    CPU, NCCL on GPU) and return each rank's return value (``fn`` must be importable by name and
    its value picklable). For scripts and tests; the CLI uses :func:`run_command`."""
    if workers < 1:
        raise ParallelError(f"workers must be >= 1, got {workers}")
    import torch.multiprocessing as mp

    tmp = tempfile.mkdtemp(prefix="steerlens-spawn-")
    try:
        mp.spawn(_spawned_fn, args=(workers, _free_port(), _threads_for(workers, threads), fn, args, tmp),
                 nprocs=workers, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(workers)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_command(body: Callable[[Any], int], args: Any, workers: int = 1, threads: Optional[int] = None) -> int:
    """Run a CLI command body ``body(args)`` data-parallel: in this process when started by torchrun
    (one rank per process), in ``workers`` processes spawned with ``torch.multiprocessing`` (gloo
    on CPU, NCCL on GPU) when ``workers > 1``, else as it is. Rank 0 prints and writes ``args.out``.
    ``threads``: torch threads per worker (default ``$OMP_NUM_THREADS``, else cores / workers)."""
    if workers < 1:
        raise ParallelError(f"--workers must be >= 1, got {workers}")
    if under_torchrun():
        if workers > 1:
            raise ParallelError("--workers and torchrun both start processes: use one of them")
        return _as_rank(body, args, threads)
    if workers == 1:
        return int(body(args) or 0)
    if backend_for(args) == "nccl" and torch.cuda.device_count() < workers:
        raise ParallelError(f"--workers {workers} on GPU needs {workers} CUDA devices, "
                            f"this machine has {torch.cuda.device_count()}")
    import torch.multiprocessing as mp

    port = _free_port()
    nthreads = _threads_for(workers, threads)
    try:
        mp.spawn(_spawned, args=(workers, port, nthreads, body, args), nprocs=workers, join=True)
    except mp.ProcessRaisedException as e:
        print(f"steerlens: a worker failed:\n{e}", file=sys.stderr)
        return 1
    except mp.ProcessExitedException as e:
        print(f"steerlens: a worker exited with code {e.exit_code}", file=sys.stderr)
        return int(e.exit_code or 1)
    return 0


__all__ = ["data_parallel", "world", "is_main", "my_batches", "gather", "rounds", "barrier", "check_same", "init",
           "run_command", "spawn", "under_torchrun", "initialised", "ParallelError"]
