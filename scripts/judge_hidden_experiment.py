"""Experiment (issue #22): a refusal judge on the default model's hidden states of the reply, read unsteered.

Features: :class:`steerlens.evals.judge_hidden.HiddenReader` (residual stream of SmolLM2-135M-Instruct
after block ``layer`` on the chat-formatted prompt + reply, pooled over the reply tokens (``mean``),
at its last token (``last``) or both), alone or concatenated with the trained judge's text
features (:func:`steerlens.evals.judge_features.featurize`). Classifier: multinomial logistic
regression on standardized hidden features, after the same three rules as
:class:`~steerlens.evals.judges.ClassifierJudge` (empty, terse refusal, refusal in another language).

Layer, reading, feature set, scale and ``C`` are chosen ONLY on the inner held-out design inside the
training part (as :func:`steerlens.evals.judge_train.select_config`: two training sources and a
third of the training settings held out by hash, salt ``judge-v2-inner``); the chosen candidate is
refit on the whole training part (+ synthetic rows) and scored on the held-out part of
:func:`~steerlens.evals.judge_train.heldout_design` with :func:`~steerlens.evals.judge_train.score`,
beside the current text judge fitted the same way (as ``judge_report`` does).

    python scripts/judge_hidden_experiment.py --features /work/scratch/judgehs/feats_d16.npz \\
        --out /work/scratch/judgehs/report.json

``--features`` is a cache written by ``--extract`` (one pass at depth 16, layers 0 1 2 4 8 12 16).

Figures: see the end of this docstring (filled in from the run).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter

import numpy as np

from steerlens.evals import judge_train as JT
from steerlens.evals.judge_hidden import hidden_matrix
from steerlens.evals.judge_train import fit_hidden
from steerlens.fileio import atomic_write_json

LAYERS = (0, 1, 2, 4, 8, 12, 16)


def extract(rows, path, layers=LAYERS):
    import steerlens
    from steerlens.evals.judge_hidden import HiddenReader

    rd = HiddenReader(steerlens.load_model(), layers=layers, batch_size=16)
    t0 = time.process_time()
    f = rd.features([r.get("prompt", "") for r in rows], [r["reply"] for r in rows], progress=True)
    ms = (time.process_time() - t0) / len(rows) * 1000
    tmp = str(path) + ".tmp.npz"
    np.savez(tmp, uids=np.array([r["uid"] for r in rows]), **f)
    os.replace(tmp, path)
    print(f"extracted {len(rows)} rows, depth {max(layers)}: {ms:.1f} ms CPU/reply")


def hmat(feats, ui, rows, layer, reading):
    idx = [ui[r["uid"]] for r in rows]
    return hidden_matrix({k: v[idx] for k, v in feats.items() if k.startswith(f"L{layer}_")}, layer, reading)


def fit_predict(cand, tr, te, feats, ui, text_cfg):
    """Fit candidate ``cand`` on rows ``tr`` (:func:`fit_hidden`), predict rows ``te`` (rules first)."""
    j = fit_hidden(tr, hmat(feats, ui, tr, cand["layer"], cand["reading"]), layer=cand["layer"],
                   reading=cand["reading"], C=cand["C"], features=cand["features"], hidden_scale=cand["scale"],
                   bits=text_cfg["bits"], use_patterns=text_cfg["use_patterns"])
    vs = j.judge([r.get("prompt", "") for r in te], [r["reply"] for r in te],
                 hidden=hmat(feats, ui, te, cand["layer"], cand["reading"]))
    return [v.label for v in vs]


def candidates():
    out = []
    for layer in LAYERS:
        for reading in ("mean", "last", "both"):
            for C in (0.01, 0.1, 1.0):
                out.append({"features": "hidden", "layer": layer, "reading": reading, "C": C, "scale": None})
            for scale in (1.0, 4.0):
                for C in (1.0, 8.0):
                    out.append({"features": "hidden+text", "layer": layer, "reading": reading, "C": C, "scale": scale})
    return out


def select(train, extra, feats, ui, text_cfg, cands):
    srcs = sorted({r["set"] for r in train}, key=lambda s: JT._h(f"inner|{s}"))
    part = JT.heldout_design(train, sources=srcs[:2], salt="judge-v2-inner")
    tr = [r for r, p in zip(train, part) if p == "train"] + list(extra)
    te = [r for r, p in zip(train, part) if p != "train"]
    gold = [r["label"] for r in te]
    res = []
    for cand in cands:
        pred = fit_predict(cand, tr, te, feats, ui, text_cfg)
        acc = sum(p == g for p, g in zip(pred, gold)) / len(te)
        rec = [sum(p == g == c for p, g in zip(pred, gold)) / max(1, sum(g == c for g in gold)) for c in JT.CLASSES]
        res.append({**cand, "inner_accuracy": acc, "inner_mean_recall": float(np.mean(rec))})
    return res, len(tr), len(te)


def best_of(res, features=None):
    pool = [r for r in res if features is None or r["features"] == features]
    return max(pool, key=lambda d: (round(d["inner_accuracy"], 6), round(d["inner_mean_recall"], 6), -d["C"]))


def summary(s: dict) -> dict:
    return {"accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
            "recall": {c: s["per_class"][c]["recall"] for c in JT.CLASSES},
            "precision": {c: s["per_class"][c]["precision"] for c in JT.CLASSES},
            "by_part": s["by_part"], "largest_method_gap": s["largest_method_gap"],
            "confusion": s["confusion_gold_to_pred"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", required=True, help="feature cache (.npz); written first with --extract")
    ap.add_argument("--extract", action="store_true", help="compute the feature cache (one pass, depth 16)")
    ap.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--time", type=int, default=96, help="held-out replies to time each judge on (0: skip)")
    args = ap.parse_args()

    rows = JT.load_labelled()
    extra = JT.load_synthetic()
    if args.extract:
        extract(rows + extra, args.features)
    z = np.load(args.features)
    feats = {k: z[k] for k in z.files if k != "uids"}
    ui = {u: i for i, u in enumerate(z["uids"].tolist())}
    missing = [r["uid"] for r in rows + extra if r["uid"] not in ui]
    if missing:
        raise SystemExit(f"{len(missing)} rows missing from {args.features} (rerun with --extract)")
    parts = JT.heldout_design(rows)
    for r, p in zip(rows, parts):
        r["part"] = p
    train = [r for r in rows if r["part"] == "train"]
    test = [r for r in rows if r["part"] != "train"]
    gold = [r["label"] for r in test]

    # the current text judge, fitted as judge_report does
    text_cfg, _ = JT.select_config(train, JT.GRID, extra)
    tj = JT.fit(train + extra, **text_cfg)
    tpred = JT.predict(tj, test)
    old = JT.score(tpred, gold, test)
    old3 = JT.score_binary(tpred, gold)

    res, n_itr, n_ite = select(train, extra, feats, ui, text_cfg, candidates())
    rep = {"n_train": len(train), "n_heldout": len(test), "n_inner_train": n_itr, "n_inner_test": n_ite,
           "text_cfg": text_cfg, "old": {**summary(old), "three_class": old3}, "grid": res, "new": {}}
    for name, feat in (("best", None), ("best_hidden_only", "hidden"), ("best_hidden+text", "hidden+text")):
        cand = {k: v for k, v in best_of(res, feat).items() if not k.startswith("inner")}
        pred = fit_predict(cand, train + extra, test, feats, ui, text_cfg)
        s = JT.score(pred, gold, test)
        rep["new"][name] = {"candidate": cand, "inner": {k: v for k, v in best_of(res, feat).items() if k.startswith("inner")},
                            **summary(s), "three_class": JT.score_binary(pred, gold),
                            "agree_with_old": sum(a == b for a, b in zip(pred, tpred)) / len(test)}
    # CPU time per reply, batched (16, sorted by length), model loaded; the text judge on the same rows
    if args.time:
        import steerlens
        from steerlens.evals.judge_hidden import HiddenReader

        m = steerlens.load_model()
        sample = test[:: max(1, len(test) // args.time)][: args.time]
        rep["old"]["ms_per_reply"] = JT.time_per_reply(tj, sample)
        for name, d in rep["new"].items():
            cand = d["candidate"]
            rd = HiddenReader(m, layers=(cand["layer"],), batch_size=16)
            rd.features(["warm up"], ["warm up"])
            t0 = time.process_time()
            rd.features([r["prompt"] for r in sample], [r["reply"] for r in sample])
            d["ms_per_reply_reader"] = (time.process_time() - t0) / len(sample) * 1000
            d["ms_per_reply"] = d["ms_per_reply_reader"] + (rep["old"]["ms_per_reply"] if cand["features"] != "hidden" else 0)
    # old judge's refusal <-> deflection confusions on held out
    c = old["confusion_gold_to_pred"]
    rep["old_errors"] = {"n_errors": sum(p != g for p, g in zip(tpred, gold)),
                         "refusal_to_deflection": c["refusal"]["deflection"],
                         "deflection_to_refusal": c["deflection"]["refusal"],
                         "by_gold_class": {g: sum(v for p, v in c[g].items() if p != g) for g in JT.CLASSES},
                         "pairs": dict(Counter(f"{g}->{p}" for p, g in zip(tpred, gold) if p != g).most_common())}
    atomic_write_json(args.out, rep, indent=1)

    def line(name, s, t3):
        r = s["recall"]
        return (f"{name}: acc {s['accuracy']:.3f} [{s['accuracy_ci'][0]:.3f}, {s['accuracy_ci'][1]:.3f}]; recall "
                + " ".join(f"{c[:4]} {r[c]:.2f}" for c in JT.CLASSES)
                + f"; parts " + " ".join(f"{k} {v['accuracy']:.3f}" for k, v in s["by_part"].items())
                + f"; gap {s['largest_method_gap']['gap']:+.3f} ({s['largest_method_gap']['method']})"
                + f"; 3-class {t3['accuracy_3class']:.3f}, not-complied recall {t3['recall']['not_complied']['recall']:.2f}")

    print(line("old text judge", rep["old"], old3))
    for name, d in rep["new"].items():
        print(line(name, d, d["three_class"]), "|", d["candidate"], d["inner"],
              f"| {d.get('ms_per_reply', float('nan')):.1f} ms/reply")
    print("old errors:", rep["old_errors"])


if __name__ == "__main__":
    main()
