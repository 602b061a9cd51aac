"""Follow-up: the plain logistic probe (left out of stage 2 by mistake when the grid was trimmed)
scored by the same selection rule (LOSO worst on held-out groups' fit splits)."""
import os
import time

import steerlens
from steerlens.interp import gate_eval as G
from steerlens.fileio import atomic_write_json

from gate_generalisation import OUT, WORK, select_loso, lookalike_val, spec_of

m = steerlens.load_model()
sets = G.build_eval_sets(max_template_chars=1000)
reads = G.read_sets(m, sets, layers=list(range(22)), readings=("last", "post", "mean"),
                    cache_dir=os.path.join(WORK, "reads"))
t0 = time.time()
rows = []
for kind, data, layer in (("probe", "plain", 14), ("probe", "balanced", 14), ("probe", "plain", 16)):
    sp = spec_of(kind, data, "last", [layer])
    worst, per = select_loso(sp, sets, reads)
    rows.append({"name": sp["name"], "sel_worst": worst, "sel_per": per, **lookalike_val(sp, sets, reads)})
    print(rows[-1]["name"], round(worst, 3), rows[-1]["xstest_safe_fit_fpr"], rows[-1]["orbench_hard_fit_fpr"],
          round(time.time() - t0), "s", flush=True)
    atomic_write_json(os.path.join(OUT, "probe_variants.json"), rows)
