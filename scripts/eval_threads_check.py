"""Does the main job's evaluation give the same table on 1 and 2 threads?  Loads a demo run's artifacts
(default runs/demo60), evaluates every configuration at 10 examples per set with THREADS torch threads
and writes (config, metric, value) records and the samples to runs/eval_threads/t<THREADS>/ (and .json).

    python scripts/eval_threads_check.py 1; python scripts/eval_threads_check.py 2   # then compare the JSON

Measured 2026-12-03 (limit 10, runs/demo60 artifacts): all 65 metric records and all replies identical;
2 of 150 sample rows differ in the 8th digit of the inverted ODESteer gate's recorded score (same decision).
"""
import sys, json, torch
import steerlens
from steerlens.pipeline.steerer import load_steerer
from steerlens.pipeline.specrun import _eval_settings, _task_kwargs, configurations
from steerlens.demo import main_spec
from steerlens.evals.report import run_eval
threads = int(sys.argv[1]); torch.set_num_threads(threads)
model = steerlens.load_model()
spec = main_spec()
fitted = {st["name"]: load_steerer(f"runs/demo60/artifacts/{st['name']}", model) for st in spec["steerer"] + spec["baseline"]}
configs = configurations(spec, fitted)
ev = _eval_settings(spec)  # the main job's own eval settings and per-task options
recs = run_eval(model, ev["tasks"], configs, 10, f"runs/eval_threads/t{threads}", seed=ev["seed"], split=ev["split"],
                batch_size=ev["batch_size"], judge=ev["judge"], task_kwargs=_task_kwargs(ev, trace=False),
                progress=False)
json.dump([(r.steering, r.metric, r.value) for r in recs], open(f"runs/eval_threads/t{threads}.json", "w"))
