"""Read every prompt of the gate-generalisation protocol once on the default model (all layers,
readings last / post / mean), cached under /work/gates_work/reads (or $GATES_WORK/reads)."""
import os, sys, time
import torch
import steerlens
from steerlens.interp.gate_eval import build_eval_sets, read_sets

work = os.environ.get("GATES_WORK", "/work/gates_work")
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
m = steerlens.load_model()
LAYERS = list(range(int(os.environ.get("MAX_LAYER", "21")) + 1))
sets = build_eval_sets(max_template_chars=1000)
t = time.time()
r = read_sets(m, sets, layers=LAYERS, readings=("last", "post", "mean"), cache_dir=os.path.join(work, "reads"), progress=True)
print("read", len(r.index), "prompts in", round(time.time() - t), "s", flush=True)
torch.save({"acts": {k: v.half() for k, v in r.acts.items()}, "index": r.index, "layers": r.layers},
           os.path.join(work, "reads_all.pt.tmp"))
os.replace(os.path.join(work, "reads_all.pt.tmp"), os.path.join(work, "reads_all.pt"))
