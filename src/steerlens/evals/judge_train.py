"""Training and out-of-sample scoring of the 4-class refusal judge (:class:`~.judges.ClassifierJudge`).

The labelled set (``tests/fixtures/judge_labels_v2.jsonl``) holds replies of the default model
under many steering *settings* (method × strength) to prompts from many *sources* (prompt sets).
Accuracy is measured out of sample **by design** (:func:`heldout_design`): a fixed list of prompt
sources (:data:`HELDOUT_SOURCES`) and about a third of each method's settings (chosen by a hash
of the setting's name, so the choice does not look at labels) are held out; the judge is fitted
only on rows whose setting *and* source are both in the training part, and scored on every other
row (an unseen setting, an unseen source, or both; each part is reported too).

Model selection (the regularisation ``C``, class weights, hashed-feature size) uses the same
design one level down, inside the training part only (:func:`select_config`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .stats import wilson_ci

CLASSES = ("refusal", "deflection", "compliance", "degenerate")
NOT_COMPLIED = ("refusal", "deflection")

#: prompt sources held out of training for the report (never fitted on): three harmful sources,
#: the jailbreak-wrapped prompts and XSTest's safe (over-refusal) prompts.
HELDOUT_SOURCES = ("simplesafetytests", "harmfulq", "donotanswer_harmful", "jailbreak", "xstest_safe")

#: the grid searched by :func:`select_config` (inner held-out design, training part only)
GRID = [{"C": c, "class_weight": cw, "bits": 14, "use_patterns": up} for up in (True, False)
        for cw in (None, "balanced") for c in (1.0, 8.0)]


def default_labels_path() -> Path:
    """``tests/fixtures/judge_labels_v2.jsonl`` of the source tree this package sits in."""
    return Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "judge_labels_v2.jsonl"


def default_synthetic_path() -> Path:
    """``tests/fixtures/judge_synthetic.jsonl``: hand-written edge cases (terse and non-English
    refusals, deflections, "sorry to hear" compliance ...) added to every *training* set, never scored."""
    return Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "judge_synthetic.jsonl"


def load_synthetic(path=None) -> list[dict]:
    p = Path(path) if path is not None else default_synthetic_path()
    return load_labelled(p) if p.exists() else []


def load_labelled(path=None) -> list[dict]:
    p = Path(path) if path is not None else default_labels_path()
    if not p.exists():
        raise FileNotFoundError(f"labelled set not found: {p} (give --labels)")
    rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("label")]
    bad = sorted({r["label"] for r in rows} - set(CLASSES))
    if bad:
        raise ValueError(f"unknown labels {bad}; expected {CLASSES}")
    return rows


def _h(s: str) -> float:
    return int(hashlib.sha1(s.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def heldout_settings(rows: Sequence[dict], salt: str = "judge-v2", frac: float = 1 / 3) -> set[str]:
    """About ``frac`` of each method's settings, chosen by a hash of the setting name (at least one
    per method with two or more settings; never all of them); single-setting methods are held out
    when their hash falls below ``frac``."""
    by_method: dict[str, set[str]] = {}
    for r in rows:
        by_method.setdefault(r["method"], set()).add(r["setting"])
    out = set()
    for m, sts in by_method.items():
        order = sorted(sts, key=lambda s: _h(f"{salt}|{s}"))
        if len(order) == 1:
            if _h(f"{salt}|{order[0]}") < frac:
                out.add(order[0])
            continue
        k = min(len(order) - 1, max(1, round(len(order) * frac)))
        out.update(order[:k])
    return out


def heldout_design(rows: Sequence[dict], sources: Sequence[str] = HELDOUT_SOURCES, salt: str = "judge-v2") -> list[str]:
    """Per row: ``"train"``, ``"new_setting"``, ``"new_source"`` or ``"new_both"``."""
    hs = heldout_settings(rows, salt)
    src = set(sources)
    out = []
    for r in rows:
        a, b = r["setting"] in hs, r["set"] in src
        out.append("new_both" if a and b else "new_setting" if a else "new_source" if b else "train")
    return out


# ---------------------------------------------------------------------------------------------
# fitting

def _matrix(rows: Sequence[dict], bits: int, use_patterns: bool = True):
    from scipy.sparse import csr_matrix

    from .judge_features import featurize, n_features

    data, ind, ptr = [], [], [0]
    for r in rows:
        f = featurize(r.get("prompt", ""), r["reply"], bits=bits, use_patterns=use_patterns)
        ind.extend(f.keys())
        data.extend(f.values())
        ptr.append(len(ind))
    return csr_matrix((np.asarray(data, dtype=np.float64), np.asarray(ind, dtype=np.int64), np.asarray(ptr)),
                      shape=(len(rows), n_features(bits)))


def fit(rows: Sequence[dict], C: float = 2.0, class_weight=None, bits: int = 14, use_patterns: bool = True,
        seed: int = 0, X=None):
    """A :class:`~.judges.ClassifierJudge` fitted on ``rows`` (multinomial logistic regression,
    L2, lbfgs; deterministic)."""
    from sklearn.linear_model import LogisticRegression

    from .judge_features import FEATURE_VERSION
    from .judges import ClassifierJudge

    X = _matrix(rows, bits, use_patterns) if X is None else X
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    present = sorted(set(y.tolist()))
    clf = LogisticRegression(C=C, class_weight=class_weight, max_iter=300, tol=1e-3, random_state=seed)
    clf.fit(X, y)
    W = np.zeros((len(CLASSES), X.shape[1]), dtype=np.float32)
    b = np.full(len(CLASSES), -1e4, dtype=np.float32)  # a class absent from training is never predicted
    if len(present) == 2:  # sklearn keeps one row for binary problems
        W[present[1]], b[present[1]] = clf.coef_[0], clf.intercept_[0]
        b[present[0]] = 0.0
    else:
        for k, c in enumerate(clf.classes_):
            W[c], b[c] = clf.coef_[k], clf.intercept_[k]
    meta = {"classes": list(CLASSES), "bits": bits, "use_patterns": use_patterns, "feature_version": FEATURE_VERSION, "C": C,
            "class_weight": class_weight, "n_train": len(rows), "train_labels": dict(Counter(r["label"] for r in rows))}
    return ClassifierJudge(weights=(W, b), meta=meta)


def predict(judge, rows: Sequence[dict]) -> list[str]:
    return [v.label for v in judge.judge([r.get("prompt", "") for r in rows], [r["reply"] for r in rows])]


def select_config(train_rows: Sequence[dict], grid: Sequence[dict] = GRID,
                  extra: Sequence[dict] = ()) -> tuple[dict, list[dict]]:
    """Choose the configuration by accuracy on an inner held-out design inside ``train_rows``
    (two of the training sources and a third of the training settings held out, by hash).
    Ties go to the higher mean recall over classes, then the smaller ``C``."""
    srcs = sorted({r["set"] for r in train_rows}, key=lambda s: _h(f"inner|{s}"))
    inner_src = srcs[:2]
    part = heldout_design(train_rows, sources=inner_src, salt="judge-v2-inner")
    tr = [r for r, p in zip(train_rows, part) if p == "train"]
    te = [r for r, p in zip(train_rows, part) if p != "train"]
    results = []
    mats = {}
    for cfg in grid:
        key = (cfg.get("bits", 14), cfg.get("use_patterns", True))
        if key not in mats:
            mats[key] = _matrix(list(tr) + list(extra), *key)
        j = fit(list(tr) + list(extra), **cfg, X=mats[key])
        pred = predict(j, te)
        gold = [r["label"] for r in te]
        acc = sum(p == g for p, g in zip(pred, gold)) / len(te)
        rec = [sum(p == g == c for p, g in zip(pred, gold)) / max(1, sum(g == c for g in gold)) for c in CLASSES]
        results.append({**cfg, "inner_accuracy": acc, "inner_mean_recall": float(np.mean(rec)),
                        "n_inner_train": len(tr), "n_inner_test": len(te)})
    best = max(results, key=lambda d: (round(d["inner_accuracy"], 6), round(d["inner_mean_recall"], 6), -d["C"]))
    return {k: best[k] for k in ("C", "class_weight", "bits", "use_patterns")}, results


# ---------------------------------------------------------------------------------------------
# scoring


def _ci(k: int, n: int) -> Optional[list[float]]:
    return list(wilson_ci(k, n)[1:]) if n else None


def score(pred: Sequence[str], gold: Sequence[str], rows: Sequence[dict]) -> dict:
    """Accuracy (Wilson 95% interval), per-class precision / recall with intervals and n, the
    confusion matrix (gold -> predicted), accuracy per method / prompt set / held-out part, and
    the method-level bias check: judged vs labelled not-complied (refusal + deflection) rate and
    strict refusal rate per method, with the largest absolute gap."""
    n = len(gold)
    ok = sum(p == g for p, g in zip(pred, gold))
    labels = list(CLASSES) + sorted(set(pred) - set(CLASSES))
    confusion = {g: {p: sum(pp == p and gg == g for pp, gg in zip(pred, gold)) for p in labels} for g in CLASSES}
    per_class = {}
    for c in CLASSES:
        tp = sum(p == c and g == c for p, g in zip(pred, gold))
        npred, ngold = sum(p == c for p in pred), sum(g == c for g in gold)
        per_class[c] = {"precision": tp / npred if npred else None, "precision_ci": _ci(tp, npred), "n_pred": npred,
                        "recall": tp / ngold if ngold else None, "recall_ci": _ci(tp, ngold), "n_gold": ngold}

    def by(key):
        out = {}
        for k in sorted({str(r.get(key)) for r in rows}):
            idx = [i for i, r in enumerate(rows) if str(r.get(key)) == k]
            kk = sum(pred[i] == gold[i] for i in idx)
            out[k] = {"accuracy": kk / len(idx), "ci": _ci(kk, len(idx)), "n": len(idx)}
        return out

    bias = {}
    for m in sorted({r["method"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["method"] == m]
        d = {"n": len(idx)}
        for name, labs in (("not_complied", NOT_COMPLIED), ("refusal", ("refusal",)), ("deflection", ("deflection",)),
                           ("degenerate", ("degenerate",))):
            jr = sum(pred[i] in labs for i in idx) / len(idx)
            lr = sum(gold[i] in labs for i in idx) / len(idx)
            d[name] = {"judged": jr, "labelled": lr, "gap": jr - lr}
        bias[m] = d
    worst = max(bias, key=lambda m: abs(bias[m]["not_complied"]["gap"])) if bias else None
    worst_strict = max(bias, key=lambda m: abs(bias[m]["refusal"]["gap"])) if bias else None
    return {"n": n, "accuracy": ok / n if n else None, "accuracy_ci": _ci(ok, n), "labels": dict(Counter(gold)),
            "predicted": dict(Counter(pred)), "per_class": per_class, "confusion_gold_to_pred": confusion,
            "by_method": by("method"), "by_set": by("set"), "by_part": by("part"),
            "method_bias": bias,
            "largest_method_gap": {"method": worst, "gap": bias[worst]["not_complied"]["gap"] if worst else None,
                                   "rate": "not_complied (refusal + deflection)"},
            "largest_method_gap_strict_refusal": {"method": worst_strict,
                                                  "gap": bias[worst_strict]["refusal"]["gap"] if worst_strict else None}}


def to_three_class(labels: Sequence[str]) -> list[str]:
    """For judges without a deflection class: deflection counts as refusal (both are 'not complied')."""
    return ["refusal" if x == "deflection" else x for x in labels]


def score_binary(pred: Sequence[str], gold: Sequence[str]) -> dict:
    """Complied vs not complied (refusal or deflection) vs degenerate accuracy: the figure a judge
    without a deflection class can be compared on."""
    p3, g3 = to_three_class(pred), to_three_class(gold)
    ok = sum(a == b for a, b in zip(p3, g3))
    rec = {}
    for c in ("refusal", "compliance", "degenerate"):
        tp = sum(a == b == c for a, b in zip(p3, g3))
        ng = sum(b == c for b in g3)
        rec["not_complied" if c == "refusal" else c] = {"recall": tp / ng if ng else None, "recall_ci": _ci(tp, ng),
                                                        "n_gold": ng}
    return {"accuracy_3class": ok / len(g3), "accuracy_3class_ci": _ci(ok, len(g3)), "recall": rec}


def time_per_reply(judge, rows: Sequence[dict], reps: int = 1) -> float:
    """CPU milliseconds per reply (process time, so a busy shared machine does not inflate it;
    median over ``reps`` passes)."""
    ts = []
    for _ in range(reps):
        t0 = time.process_time()
        judge.judge([r.get("prompt", "") for r in rows], [r["reply"] for r in rows])
        ts.append((time.process_time() - t0) / max(1, len(rows)) * 1000)
    return float(np.median(ts))


def default_second_labels_path() -> Path:
    """The second, independent blind labels of a sample of held-out replies (``uid``, ``label``)."""
    return default_labels_path().with_name("judge_labels_v2_second.jsonl")


def load_second_labels(path=None) -> dict[str, str]:
    """``{uid: label}`` of the second labeller (empty when the file does not exist)."""
    p = Path(path) if path is not None else default_second_labels_path()
    if not p.exists():
        return {}
    out = {}
    with open(p) as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                if d["label"] not in CLASSES:
                    raise ValueError(f"{p}: unknown label {d['label']!r} for uid {d['uid']}")
                out[d["uid"]] = d["label"]
    return out


def labeller_agreement(test: Sequence[dict], preds: dict[str, Sequence[str]], second: dict[str, str]) -> Optional[dict]:
    """On the held-out rows a second reader labelled blind: how often the two readers agree (the
    ceiling a judge's accuracy against one reader can be read against), Cohen's kappa, the readers'
    confusion, and each judge's accuracy against either reader and on the rows both agree on."""
    from sklearn.metrics import cohen_kappa_score

    idx = [i for i, r in enumerate(test) if r.get("uid") in second]
    if not idx:
        return None
    g1 = [test[i]["label"] for i in idx]
    g2 = [second[test[i]["uid"]] for i in idx]
    n = len(idx)

    def acc(a, b):
        k = sum(x == y for x, y in zip(a, b))
        return {"accuracy": k / len(a), "ci": _ci(k, len(a)), "n": len(a)}

    merged = to_three_class  # refusal and deflection as one "not complied" class
    agreed = [j for j in range(n) if g1[j] == g2[j]]
    out = {"n": n, "readers": acc(g1, g2), "kappa": float(cohen_kappa_score(g1, g2)),
           "readers_not_complied_merged": acc(merged(g1), merged(g2)),
           "kappa_not_complied_merged": float(cohen_kappa_score(merged(g1), merged(g2))),
           "confusion_first_to_second": {a: {b: sum(x == a and y == b for x, y in zip(g1, g2)) for b in CLASSES}
                                         for a in CLASSES},
           "n_agreed": len(agreed), "judges": {}}
    for name, pred in preds.items():
        p = [pred[i] for i in idx]
        out["judges"][name] = {"vs_first": acc(p, g1), "vs_second": acc(p, g2),
                               "on_agreed_rows": acc([p[j] for j in agreed], [g1[j] for j in agreed]),
                               "not_complied_merged_vs_first": acc(merged(p), merged(g1))}
    return out


def judge_report(labels_path=None, *, model_judge=None, model_judge_cache=None, synthetic_path=None,
                 grid: Sequence[dict] = GRID, second_labels_path=None) -> dict:
    """The out-of-sample report: fit on the training part (settings and sources of
    :func:`heldout_design`) with the configuration chosen inside it, score on the held-out part,
    and score the pattern judge (and optionally a model judge) on the same held-out replies."""
    from .judges import PatternJudge

    rows = load_labelled(labels_path)
    parts = heldout_design(rows)
    for r, p in zip(rows, parts):
        r["part"] = p
    train = [r for r in rows if r["part"] == "train"]
    test = [r for r in rows if r["part"] != "train"]
    extra = load_synthetic(synthetic_path)
    cfg, grid = select_config(train, grid, extra)
    judge = fit(train + extra, **cfg)
    gold = [r["label"] for r in test]
    pred = predict(judge, test)
    rep = {"labels_file": str(labels_path or default_labels_path()), "n_labelled": len(rows),
           "design": {"heldout_sources": list(HELDOUT_SOURCES),
                      "heldout_settings": sorted(heldout_settings(rows)),
                      "n_train": len(train), "n_heldout": len(test), "parts": dict(Counter(parts)),
                      "n_synthetic_train_only": len(extra),
                      "rule": "fit on rows whose setting and prompt source are both in training; score on every "
                              "other row"},
            "selection": {"chosen": cfg, "grid": grid},
            "judge": {"name": "clf", "config": cfg, **score(pred, gold, test), **{"three_class": score_binary(pred, gold)}},
            "errors": [{"uid": r.get("uid"), "method": r["method"], "setting": r["setting"], "set": r["set"],
                        "gold": g, "pred": p, "reply": r["reply"][:200]}
                       for r, p, g in zip(test, pred, gold) if p != g]}
    rep["judge"]["ms_per_reply"] = time_per_reply(judge, test)
    pj = PatternJudge()
    ppred = predict(pj, test)
    rep["pattern_judge"] = {"name": "pattern", **score(ppred, gold, test), "three_class": score_binary(ppred, gold),
                            "ms_per_reply": time_per_reply(pj, test)}
    if model_judge is not None or model_judge_cache is not None:
        mj = score_model_judge(test, model_judge, model_judge_cache)
        scored = set(mj.pop("uids"))
        idx = [i for i, r in enumerate(test) if r.get("uid") in scored]
        for key, pp in (("clf_on_same_rows", pred), ("pattern_on_same_rows", ppred)):
            k = sum(pp[i] == gold[i] for i in idx)
            mj[key] = {"accuracy": k / len(idx) if idx else None, "accuracy_ci": _ci(k, len(idx)), "n": len(idx)}
        rep["model_judge"] = mj
    agreement = labeller_agreement(test, {"clf": pred, "pattern": ppred}, load_second_labels(second_labels_path))
    if agreement is not None:
        rep["labeller_agreement"] = agreement
    return rep


def score_model_judge(test: Sequence[dict], model_judge=None, cache=None) -> dict:
    """Score a yes/no :class:`~.judges.ModelJudge` (``--judge model``) on the held-out rows. Its
    verdicts are read from ``cache`` (JSONL of ``uid``, ``label``) when given; rows missing from
    the cache are computed when ``model_judge`` is given, else left out (``n`` and
    ``n_heldout_not_scored`` say so). Unparseable answers count as errors."""
    from .judges import get_judge

    verdicts = {}
    if cache is not None and Path(cache).exists():
        for line in Path(cache).read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                verdicts[d["uid"]] = d["label"]
    todo = [r for r in test if r.get("uid") not in verdicts]
    n_all = len(test)
    if todo and model_judge is None and verdicts:
        test = [r for r in test if r.get("uid") in verdicts]
        todo = []
    if todo:
        mj = get_judge(model_judge or "model")
        t0 = time.perf_counter()
        vs = mj.judge([r["prompt"] for r in todo], [r["reply"] for r in todo])
        ms = (time.perf_counter() - t0) / len(todo) * 1000
        for r, v in zip(todo, vs):
            verdicts[r.get("uid")] = v.label
    else:
        ms = None
    pred = [verdicts[r.get("uid")] for r in test]
    gold = [r["label"] for r in test]
    out = {"name": str(model_judge or "model"), **score(pred, gold, test), "three_class": score_binary(pred, gold),
           "n_unparseable": sum(p == "unparseable" for p in pred), "n_heldout_not_scored": n_all - len(test),
           "uids": [r.get("uid") for r in test]}
    if ms is not None:
        out["ms_per_reply"] = ms
    return out


def save_judge(judge, out_dir, provenance: dict) -> None:
    """Write ``weights.safetensors`` (W, b as float32) and ``meta.json`` (classes, feature
    settings, training configuration, provenance)."""
    from safetensors.numpy import save_file

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    save_file({"W": np.ascontiguousarray(judge.W.astype(np.float32)), "b": judge.b.astype(np.float32)},
              str(d / "weights.safetensors"))
    meta = {**judge.meta, "provenance": provenance}
    (d / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def fmt_report(rep: dict) -> str:
    """Markdown summary of :func:`judge_report`'s result."""
    def f(x):
        return "—" if x is None else f"{x:.3f}"

    def ci(c):
        return "" if not c else f" [{c[0]:.3f}, {c[1]:.3f}]"

    j, pj = rep["judge"], rep["pattern_judge"]
    lines = [f"labelled replies: {rep['n_labelled']}; trained on {rep['design']['n_train']}, "
             f"held out {rep['design']['n_heldout']} (unseen setting and/or source: {rep['design']['parts']})",
             f"chosen by inner held-out accuracy: {j['config']}",
             f"new judge (clf): accuracy {f(j['accuracy'])}{ci(j['accuracy_ci'])} on n={j['n']}, "
             f"{j['ms_per_reply']:.2f} ms CPU/reply",
             f"pattern judge, same replies: accuracy {f(pj['accuracy'])}{ci(pj['accuracy_ci'])} "
             f"(3-class, deflection = refusal: {f(pj['three_class']['accuracy_3class'])}; "
             f"clf 3-class {f(j['three_class']['accuracy_3class'])})",
             "", "| class | precision [95% CI] (n predicted) | recall [95% CI] (n labelled) | pattern recall |",
             "|---|---|---|---|"]
    for c, d in j["per_class"].items():
        pr = pj["per_class"][c]
        lines.append(f"| {c} | {f(d['precision'])}{ci(d['precision_ci'])} ({d['n_pred']}) | "
                     f"{f(d['recall'])}{ci(d['recall_ci'])} ({d['n_gold']}) | {f(pr['recall'])} |")
    lines += ["", "| method | n | labelled not-complied | clf judged (gap) | pattern judged (gap) |", "|---|---|---|---|---|"]
    for m, d in j["method_bias"].items():
        p = pj["method_bias"][m]["not_complied"]
        lines.append(f"| {m} | {d['n']} | {d['not_complied']['labelled']:.3f} | {d['not_complied']['judged']:.3f} "
                     f"({d['not_complied']['gap']:+.3f}) | {p['judged']:.3f} ({p['gap']:+.3f}) |")
    g, pg = j["largest_method_gap"], pj["largest_method_gap"]
    lines.append(f"\nlargest |judged - labelled| not-complied rate over methods: clf {g['gap']:+.3f} ({g['method']}); "
                 f"pattern {pg['gap']:+.3f} ({pg['method']})")
    lines.append("confusion (gold -> predicted): " + json.dumps(j["confusion_gold_to_pred"]))
    lines.append("accuracy by prompt set: " + ", ".join(f"{k} {v['accuracy']:.2f} (n={v['n']})" for k, v in j["by_set"].items()))
    if "model_judge" in rep:
        mj = rep["model_judge"]
        lines.append(f"model judge ({mj['name']}): 4-class accuracy {f(mj['accuracy'])}{ci(mj['accuracy_ci'])}, "
                     f"3-class {f(mj['three_class']['accuracy_3class'])}, unparseable {mj['n_unparseable']}, n={mj['n']} "
                     f"(clf on the same rows {f(mj['clf_on_same_rows']['accuracy'])}, "
                     f"pattern {f(mj['pattern_on_same_rows']['accuracy'])})")
    if "labeller_agreement" in rep:
        la = rep["labeller_agreement"]
        r, jj = la["readers"], la["judges"]
        lines.append(f"two blind readers on {la['n']} held-out replies: agree {f(r['accuracy'])}{ci(r['ci'])} "
                     f"(kappa {la['kappa']:.3f}; refusal + deflection merged {f(la['readers_not_complied_merged']['accuracy'])}); "
                     + "; ".join(f"{k} vs first {f(v['vs_first']['accuracy'])}, vs second {f(v['vs_second']['accuracy'])}, "
                                 f"on the {la['n_agreed']} agreed rows {f(v['on_agreed_rows']['accuracy'])}"
                                 for k, v in jj.items()))
    return "\n".join(lines)


__all__ = ["CLASSES", "HELDOUT_SOURCES", "GRID", "load_labelled", "heldout_design", "heldout_settings", "fit", "load_second_labels", "labeller_agreement",
           "predict", "select_config", "score", "score_binary", "judge_report", "save_judge", "fmt_report",
           "default_labels_path", "score_model_judge", "time_per_reply"]
