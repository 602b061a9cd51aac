"""Best ROC-AUC any read layer (0..21) and reading reaches on the look-alike splits (XSTest unsafe
vs safe, OR-Bench toxic vs hard; test splits), with a gate fitted on every source + hard
negatives: how far this model's representations separate them at all."""
import json
import os

import steerlens
from steerlens.interp import gate_eval as G
from steerlens.fileio import atomic_write_json

WORK = os.environ.get("GATES_WORK", "/work/gates_work")
m = steerlens.load_model()
sets = G.build_eval_sets(max_template_chars=1000)
reads = G.read_sets(m, sets, layers=list(range(22)), readings=("last", "post", "mean"),
                    cache_dir=os.path.join(WORK, "reads"))
out = {"harm_dir_s0.5": G.best_auc_any_layer(sets, reads, kind="harm_dir", params={"shrinkage": 0.5}),
       "harm_dir_s0.1": G.best_auc_any_layer(sets, reads, kind="harm_dir", params={"shrinkage": 0.1})}
atomic_write_json(os.path.join(WORK, "research", "best_auc.json"), out)
print(json.dumps(out, indent=1))
