"""Pool the judge_v2 candidates (new replies + the 312 earlier labelled replies, to be re-labelled
in the 4-class scheme) and write blinded, shuffled labelling chunks (only uid, prompt, reply).

    python scripts/judge_v2_prepare.py --gen /work/judge_work/gen_a.jsonl --gen /work/judge_work/gen_b.jsonl \\
        --work /work/judge_work --chunk-size 300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def _old_rows() -> list[dict]:
    out = []
    for fname in ("judge_labels.jsonl", "judge_heldout.jsonl"):
        for r in (json.loads(line) for line in open(os.path.join(FIXTURES, fname), encoding="utf-8") if line.strip()):
            st = r["steering"]
            m = re.fullmatch(r"meandiff_l10_a(\d+(?:\.\d+)?)", st)
            if m:
                method, strength = "caa", float(m.group(1))
                params = {"layer": 10}
            elif st == "none":
                method, strength, params = "none", None, {}
            else:
                method, _, a = st.partition("@")
                strength = float(a) if a else None
                params = {}
            batch = "v1_labels" if fname == "judge_labels.jsonl" else "v1_heldout"
            out.append({"id": r["id"], "set": {"harmless": "alpaca", "harmful": "harmful_test"}.get(r["kind"], r["kind"]),
                        "method": method, "strength": strength, "setting": f"{batch}:{st}", "params": params,
                        "prompt": r["prompt"], "reply": r["reply"], "batch": batch,
                        "max_new_tokens": 48 if batch == "v1_labels" else 32, "decoding": "greedy",
                        "v1_label": r["label"], "v1_note": r.get("note", ""), "origin": f"tests/fixtures/{fname}"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gen", action="append", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--chunk-size", type=int, default=300)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    rows, owner = [], {}
    for g in args.gen:
        for line in open(g, encoding="utf-8"):
            if line.strip():
                r = json.loads(line)
                if owner.setdefault(r["setting"], g) != g:  # a setting run by two processes: keep the first
                    continue
                r["batch"] = "v2"
                r["origin"] = os.path.basename(g)
                rows.append(r)
    rows += _old_rows()
    for i, r in enumerate(rows):
        h = hashlib.sha1(f"{args.seed}|{r['batch']}|{r['setting']}|{r['id']}|{i}".encode()).hexdigest()
        r["uid"] = "u" + h[:12]
    assert len({r["uid"] for r in rows}) == len(rows)
    with open(os.path.join(args.work, "candidates.jsonl"), "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    order = list(range(len(rows)))
    random.Random(args.seed).shuffle(order)
    os.makedirs(os.path.join(args.work, "chunks"), exist_ok=True)
    os.makedirs(os.path.join(args.work, "labels"), exist_ok=True)
    n_chunks = max(1, round(len(rows) / args.chunk_size))
    for c in range(n_chunks):
        idx = order[c::n_chunks]
        with open(os.path.join(args.work, "chunks", f"chunk_{c + 1:02d}.jsonl"), "w", encoding="utf-8") as f:
            for i in idx:
                f.write(json.dumps({"uid": rows[i]["uid"], "prompt": rows[i]["prompt"], "reply": rows[i]["reply"]},
                                   ensure_ascii=False) + "\n")
    print(f"{len(rows)} candidates ({sum(r['batch'] == 'v2' for r in rows)} new), {n_chunks} chunks")


if __name__ == "__main__":
    main()
