"""Command-line options shared by several ``steerlens`` commands: where the model lives
(``--dtype``, ``--device-map``, ``--offload-folder``) and data-parallel runs (``--workers``,
``--threads``), with the one way each is turned into a model or a run."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .fileio import parse_value  # noqa: F401  (re-exported: the one value parser)


def device_map_arg(value: str):
    """``--device-map auto|balanced|sequential``, a JSON object, or ``@map.json``."""
    if value.startswith("@"):
        with open(value[1:]) as f:
            return json.load(f)
    if value.lstrip().startswith("{"):
        return json.loads(value)
    from .models import MAP_STRATEGIES

    if value not in MAP_STRATEGIES:
        raise argparse.ArgumentTypeError(f"{value!r} is not a device map: use one of {', '.join(MAP_STRATEGIES)}, "
                                         "a JSON object {module: device} or @map.json")
    return value


MODEL_HELP = "model name or directory (default: SmolLM2-135M-Instruct)"
DATA_HELP = "benchmark data directory (default: $STEERLENS_DATA or ../shared/data)"


def add_data_arg(p: argparse.ArgumentParser) -> None:
    """``--data-dir``: where the benchmark data are read from."""
    p.add_argument("--data-dir", default=None, help=DATA_HELP)


def add_common_args(p: argparse.ArgumentParser, *, model_help: str = MODEL_HELP, data: bool = True) -> None:
    """The options of every subcommand that loads a model: ``--model``, ``--device``, ``--data-dir``
    (unless ``data=False``) and the placement options of :func:`add_model_args`; the model they name
    is :func:`model_from_args`."""
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    if data:
        add_data_arg(p)
    add_model_args(p)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--device-map", default=None, type=device_map_arg,
                   help="spread the model over devices (accelerate): auto | balanced | sequential | a JSON "
                        "object {module: device} | @map.json (instead of --device)")
    p.add_argument("--offload-folder", default=None, help="where 'disk' modules of --device-map keep their weights")


def add_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1,
                   help="data-parallel processes (torch.distributed: gloo on CPU, NCCL on GPU); batches are split "
                        "over them and rank 0 writes results identical to one process. Under torchrun leave it at 1")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default $OMP_NUM_THREADS, else cores / workers)")


def model_from_args(args: argparse.Namespace, name=None):
    """The model the command's options name (``name`` overrides ``--model``)."""
    from .models import load_model

    return load_model(name if name is not None else args.model, device=args.device, dtype=args.dtype,
                      device_map=args.device_map, offload_folder=args.offload_folder)


def distributed(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``body(args)`` over ``--workers`` processes, or over the ranks torchrun started
    (:func:`steerlens.parallel.run_command`; ``body`` is pickled for spawned workers, so it must be
    a module-level function); a run that cannot start is a clear error, exit 2."""
    from .parallel import ParallelError, run_command

    try:
        return run_command(body, args, workers=args.workers, threads=args.threads)
    except ParallelError as e:
        print(f"steerlens {args.command}: {e}", file=sys.stderr)
        return 2
