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

Result (2026-12-03; 1212 labelled rows, 501 train + 36 synthetic, 711 held out; inner design 244 rows).
NOT adopted: no judge is built on these features and the default is unchanged.

Inner selection: best hidden-only = layer 8, mean+last, C 0.1 (inner acc 0.803); best overall =
hidden+text, layer 16, mean+last, hidden scale 1, C 8 (inner 0.848) — the text judge alone also
scores 0.848 on the same inner rows. Layers 0-2 alone: 0.72-0.73; ``last`` alone: 0.39-0.74.

Held out (``judge_train.score``, same rows; recall ref/defl/comp/degen; largest per-method
|judged - labelled| not-complied gap; CPU ms/reply batched 16, shared 2-core machine):

=====================  =====================  =======================  ==============  ==========
judge                  accuracy [95% CI]      recall r / d / c / g     largest gap     ms/reply
=====================  =====================  =======================  ==============  ==========
text judge (current)   0.776 [0.744, 0.805]   0.63 / 0.46 / 0.93 / 0.86 -0.176 odesteer  0.8
hidden+text (L16)      0.785 [0.753, 0.813]   0.69 / 0.49 / 0.92 / 0.85 +0.100 scale     ~320-370
hidden only (L8)       0.717 [0.683, 0.749]   0.54 / 0.65 / 0.86 / 0.73 +1.000 set       ~170-215
=====================  =====================  =======================  ==============  ==========

Parts new_both / new_setting / new_source: text 0.761 / 0.720 / 0.846; hidden+text 0.761 / 0.734 /
0.854; hidden 0.697 / 0.640 / 0.813. Paired against the text judge: hidden+text right where text is
wrong 18, the reverse 12 (exact McNemar p = 0.36; 94.7 % identical verdicts); hidden only 63 vs 105
(p = 0.001, worse). Merged 3-class (refusal + deflection = not complied): text 0.855 [0.827, 0.879],
not-complied recall 0.79; hidden+text 0.861, 0.83; hidden 0.813, 0.88 (but degenerate recall 0.73).
Reader cost alone (``HiddenReader``, chat-formatted prompt cut to 96 tokens + reply): about 40 ms
CPU/reply at depth 2, 95 at 4, 215-290 at 16 — the 10 ms target is out of reach above layer 0.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

import numpy as np

from steerlens.evals import judge_train as JT
from steerlens.evals.judge_features import _MULTI, TERSE_REFUSAL, normalize
from steerlens.evals.judge_hidden import hidden_matrix
from steerlens.evals.reply_text import degenerate_reason
from steerlens.fileio import atomic_write_json

LAYERS = (0, 1, 2, 4, 8, 12, 16)  # read in one pass (--extract)


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


def rule_label(reply: str):
    """The three rules ClassifierJudge applies before its classifier (empty, terse, other language)."""
    text = normalize(reply)
    if degenerate_reason(reply) == "empty":
        return "degenerate"
    if TERSE_REFUSAL.match(text) or any(p.search(text[:100]) for p in _MULTI):
        return "refusal"
    return None


def design(rows, H, cand, text_cfg, fit_stats=None):
    """Standardized hidden block (``hidden``) or, for ``hidden+text``, the hidden block times
    ``scale / sqrt(d)`` next to the text judge's sparse features."""
    from scipy.sparse import csr_matrix, hstack

    H = np.asarray(H, dtype=np.float64)
    mean, sd = fit_stats if fit_stats is not None else (H.mean(0), np.where(H.std(0) < 1e-6, 1.0, H.std(0)))
    X = (H - mean) / sd
    if cand["features"] == "hidden+text":
        X = hstack([csr_matrix(X * cand["scale"] / np.sqrt(X.shape[1])),
                    JT._matrix(rows, text_cfg["bits"], text_cfg["use_patterns"])]).tocsr()
    return X, (mean, sd)


def fit_predict(cand, tr, te, feats, ui, text_cfg):
    """Fit candidate ``cand`` on rows ``tr`` (multinomial logistic regression, L2, lbfgs), predict
    rows ``te`` (rules first)."""
    from sklearn.linear_model import LogisticRegression

    Xtr, stats = design(tr, hmat(feats, ui, tr, cand["layer"], cand["reading"]), cand, text_cfg)
    Xte, _ = design(te, hmat(feats, ui, te, cand["layer"], cand["reading"]), cand, text_cfg, stats)
    y = np.array([JT.CLASSES.index(r["label"]) for r in tr])
    clf = LogisticRegression(C=cand["C"], max_iter=300, tol=1e-3, random_state=0).fit(Xtr, y)
    return [rule_label(r["reply"]) or JT.CLASSES[int(k)] for r, k in zip(te, clf.predict(Xte))]


def candidates():
    out = []
    for layer in LAYERS:
        for reading in ("mean", "last", "both"):
            for C in (0.01, 0.1):
                out.append({"features": "hidden", "layer": layer, "reading": reading, "C": C, "scale": None})
    for layer in LAYERS:
        for reading in ("mean", "both"):
            for scale in (1.0, 4.0):
                out.append({"features": "hidden+text", "layer": layer, "reading": reading, "C": 8.0, "scale": scale})
    return out


def select(train, extra, feats, ui, text_cfg, cands):
    srcs = sorted({r["set"] for r in train}, key=lambda s: JT._h(f"inner|{s}"))
    part = JT.heldout_design(train, sources=srcs[:2], salt="judge-v2-inner")
    tr = [r for r, p in zip(train, part) if p == "train"] + list(extra)
    te = [r for r, p in zip(train, part) if p != "train"]
    gold = [r["label"] for r in te]
    res = []
    for cand in cands:
        t0 = time.perf_counter()
        pred = fit_predict(cand, tr, te, feats, ui, text_cfg)
        acc = sum(p == g for p, g in zip(pred, gold)) / len(te)
        rec = [sum(p == g == c for p, g in zip(pred, gold)) / max(1, sum(g == c for g in gold)) for c in JT.CLASSES]
        res.append({**cand, "inner_accuracy": acc, "inner_mean_recall": float(np.mean(rec))})
        print(f"inner {acc:.3f} mean recall {np.mean(rec):.3f} {cand} ({time.perf_counter() - t0:.1f} s)", flush=True)
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
    print("text judge config", text_cfg, flush=True)
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
                            "agree_with_old": sum(a == b for a, b in zip(pred, tpred)) / len(test),
                            "paired_vs_old": {"new_right_old_wrong": sum(p == g != o for p, o, g in zip(pred, tpred, gold)),
                                              "old_right_new_wrong": sum(o == g != p for p, o, g in zip(pred, tpred, gold))}}
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
                + "; parts " + " ".join(f"{k} {v['accuracy']:.3f}" for k, v in s["by_part"].items())
                + f"; gap {s['largest_method_gap']['gap']:+.3f} ({s['largest_method_gap']['method']})"
                + f"; 3-class {t3['accuracy_3class']:.3f}, not-complied recall {t3['recall']['not_complied']['recall']:.2f}")

    print(line("old text judge", rep["old"], old3))
    for name, d in rep["new"].items():
        print(line(name, d, d["three_class"]), "|", d["candidate"], d["inner"],
              f"| {d.get('ms_per_reply', float('nan')):.1f} ms/reply | paired vs old {d['paired_vs_old']}")
    print("old errors:", rep["old_errors"])


if __name__ == "__main__":
    main()
