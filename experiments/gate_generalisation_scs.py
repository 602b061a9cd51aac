"""Follow-up of experiments/gate_generalisation.py: the SCS gate (the best family of stage 1) with
the generalisation recipes (hard negatives, fit-family wrappers, source balance) and other ranks,
at its best stage-1 layers. Same selection rule: LOSO worst TPR on held-out sources' fit splits."""
import os
import time

import torch

import steerlens
from steerlens.interp import gate_eval as G
from steerlens.fileio import atomic_write_json

from gate_generalisation import DATA, OUT, WORK, select_loso, lookalike_val

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
m = steerlens.load_model()
sets = G.build_eval_sets(max_template_chars=1000)
reads = G.read_sets(m, sets, layers=list(range(22)), readings=("last", "post", "mean"),
                    cache_dir=os.path.join(WORK, "reads"))
t0 = time.time()
rows = []
GRID = [(14, d, 16, 4) for d in ("hardneg", "balanced", "broad")] + [(16, d, 16, 4) for d in ("plain", "balanced", "broad")]
for layer, data, rb, rt in GRID:
    if True:
        if True:
            sp = G.normalise_spec(f"scs{rb}x{rt}/{data}/last/L{layer}",
                                  {"kind": "scs", "params": {"layer": layer, "rank_benign": rb, "rank_target": rt},
                                   "layers": [layer], **DATA[data]})
            worst, per = select_loso(sp, sets, reads)
            row = {"name": sp["name"], "spec": sp, "sel_worst": worst, "sel_per": per}
            rows.append(row)
            print(sp["name"], round(worst, 3), round(time.time() - t0), "s", flush=True)
            atomic_write_json(os.path.join(OUT, "scs_variants.json"), rows)
for r in sorted(rows, key=lambda r: -r["sel_worst"])[:6]:
    r.update(lookalike_val(r["spec"], sets, reads))
    print(r["name"], r["sel_worst"], r["xstest_safe_fit_fpr"], r["orbench_hard_fit_fpr"], flush=True)
atomic_write_json(os.path.join(OUT, "scs_variants.json"), rows)
