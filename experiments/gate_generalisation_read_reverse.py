"""Second reader for experiments/gate_generalisation_read.py: fills the same chunk cache from the
other end (the chunks are the same, so both processes share the work; a chunk already on disk is
read back instead of recomputed)."""
import os
import torch
import steerlens
from steerlens.interp.gate_eval import build_eval_sets
from steerlens.evals.prompt_reader import read_prompts

work = os.environ.get("GATES_WORK", "/work/gates_work")
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
m = steerlens.load_model()
sets = build_eval_sets(max_template_chars=1000)
LAYERS = list(range(int(os.environ.get("MAX_LAYER", "21")) + 1))
allp = sets.all_prompts()
wrapped = set(sets.wrapped_benign) | set(sets.aug_benign)
for d in (sets.wrapped_test, sets.aug_harm):
    for v in d.values():
        wrapped.update(v)
for group in ([p for p in allp if p in wrapped], [p for p in allp if p not in wrapped]):
    ids = [len(m.prompt_ids(p)) for p in group]
    order = sorted(range(len(group)), key=lambda i: ids[i])
    chunks = [order[s:s + 128] for s in range(0, len(order), 128)]
    for c in reversed(chunks):
        read_prompts(m, [group[i] for i in c], layers=LAYERS, readings=("last", "post", "mean"),
                     cache_dir=os.path.join(work, "reads"))
        print("chunk done", len(c), flush=True)
