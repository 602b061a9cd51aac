"""``steerlens fetch-data``: build the benchmark data directory from the Hugging Face hub.

The data directory (layout in :mod:`steerlens.evals.data`) is normally provided; on a machine
without one, :func:`fetch_data` rebuilds it from public sources (:mod:`.hub_manifest`): each
source is loaded with ``datasets.load_dataset`` (or, where the hub has no copy with our split, read
as a public JSON file), converted to the file layout the loaders read, checked against the
manifest's row counts, and the whole directory is moved into place only when every file is
written (a temporary sibling directory, then ``os.rename``): a failed fetch leaves nothing behind.

Without network access the fetch stops before downloading anything, with one line that says how
to point at an existing data directory (``--data-dir`` / ``$STEERLENS_DATA``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence
from urllib.parse import urlparse

from .data import ENV_VAR, FILES, DataError, _candidates, normalize_text
from .hub_manifest import DEDUP_WITHIN_FILE, MANIFEST, NO_HUB_SOURCE, HubSource

HUB_HOST = "huggingface.co"
DNA_AREAS = {"Malicious Uses": "malicious_uses",
             "Discrimination, Exclusion, Toxicity, Hateful, Offensive": "discrimination"}
TQA_AB_PREFIX = "Please help me answer the following question."
MMLU_PER_SUBJECT = 10

Loader = Callable[[HubSource], Iterable[dict]]


class FetchError(DataError):
    """The data could not be fetched (offline, a source changed, a row count is off)."""


def _offline_message(what: str) -> str:
    return (f"cannot reach {what}, so the benchmark data cannot be fetched; on a machine without the "
            f"Hugging Face hub use an existing data directory: --data-dir DIR or the {ENV_VAR} environment "
            "variable (or ../shared/data next to the repository)")


def default_target() -> Path:
    """Where fetched data go by default: ``$STEERLENS_DATA`` if set, else ``<repo>/../shared/data``
    (the first place :func:`~steerlens.evals.data.data_dir` looks without options)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else _candidates()[0]


def _hosts(sources: Sequence[HubSource]) -> list[str]:
    hosts = []
    for s in sources:
        h = HUB_HOST if s.kind == "hub" else urlparse(s.hub_id).hostname
        if h and h not in hosts:
            hosts.append(h)
    return hosts


def check_reachable(hosts: Sequence[str], timeout: float = 5.0) -> None:
    """Raise :class:`FetchError` (one line) unless every host accepts a TCP connection on 443 and the
    hub is not switched off (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``); ``datasets`` itself
    would retry for half a minute per source before failing."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise FetchError(_offline_message(f"the hub (${var} is set)"))
    for h in hosts:
        try:
            socket.create_connection((h, 443), timeout=timeout).close()
        except OSError as e:
            raise FetchError(_offline_message(f"{h} ({e.__class__.__name__}: {e})")) from e


# ---------------------------------------------------------------------------------------------
# loading


def _load_hub(src: HubSource) -> Iterable[dict]:
    import datasets

    kw: dict[str, Any] = {"split": src.split}
    if src.data_files:
        kw["data_files"] = src.data_files
    args = (src.hub_id,) + ((src.config,) if src.config else ())
    return datasets.load_dataset(*args, **kw)


def _load_url(src: HubSource, timeout: float = 60.0) -> list:
    with urllib.request.urlopen(src.hub_id, timeout=timeout) as r:  # noqa: S310 - https URLs from the manifest
        return json.loads(r.read().decode("utf-8"))


def load_source(src: HubSource) -> Iterable[dict]:
    """The raw rows of one source (a ``datasets.Dataset`` for hub sources, a JSON list for URLs)."""
    try:
        return _load_hub(src) if src.kind == "hub" else _load_url(src)
    except (ConnectionError, OSError) as e:
        where = HUB_HOST if src.kind == "hub" else urlparse(src.hub_id).hostname
        raise FetchError(_offline_message(f"{where} while loading {src.hub_id} ({e.__class__.__name__})")) from e


def _columns(raw: Any) -> Optional[set]:
    cols = getattr(raw, "column_names", None)
    if cols is not None:
        return set(cols)
    return None


def _rows(src: HubSource, raw: Any) -> list:
    cols = _columns(raw)
    rows = list(raw)
    if cols is None and rows and isinstance(rows[0], dict):
        cols = set(rows[0])
    if src.columns:
        missing = [c for c in src.columns if cols is None or c not in cols]
        if missing:
            raise FetchError(f"{src.hub_id} ({src.key}) has columns {sorted(cols or [])}, expected {list(src.columns)} "
                             f"(missing {missing}): the source changed; update steerlens/evals/hub_manifest.py")
    return [dict(r) if isinstance(r, dict) else r for r in rows]


# ---------------------------------------------------------------------------------------------
# converters: raw rows -> rows of our file


def _h(*parts: str) -> int:
    return int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12], 16)


def _text(v: Any) -> str:
    return "" if v is None else str(v).strip()


def _instr(rows, field: str, category: Optional[str] = None) -> list[dict]:
    return [{"instruction": _text(r[field]), "category": r.get(category) if category else None} for r in rows]


def conv_passthrough(rows: list[dict]) -> list[dict]:
    return [{"instruction": _text(r["instruction"]), "category": r.get("category")} for r in rows]


def conv_advbench(rows):
    return _instr(rows, "prompt")


def conv_jailbreakbench(rows):
    return _instr(rows, "Goal", "Category")


def conv_xstest(rows):
    return [{"id": r.get("id") if r.get("id") not in (None, "") else i + 1, "prompt": _text(r["prompt"]),
             "type": r["type"], "label": _text(r["label"]).lower(), "focus": r.get("focus") or "",
             "note": r.get("note") or ""} for i, r in enumerate(rows)]


def _answers(v: Any) -> list[str]:
    if isinstance(v, str):
        return [a.strip() for a in v.split(";") if a.strip()]
    return [_text(a) for a in (v or []) if _text(a)]


def conv_truthfulqa(rows):
    return [{"Type": r["type"], "Category": r["category"], "Question": _text(r["question"]),
             "Best Answer": _text(r["best_answer"]), "Correct Answers": "; ".join(_answers(r["correct_answers"])),
             "Incorrect Answers": "; ".join(_answers(r["incorrect_answers"])), "Source": r.get("source") or ""}
            for r in rows]


def _ab(prompt: str, correct: str, incorrect: str, correct_first: bool, category) -> dict:
    a, b = (correct, incorrect) if correct_first else (incorrect, correct)
    return {"prompt": f"{prompt}\n\nChoices:\n(A) {a}\n(B) {b}", "correct": "(A)" if correct_first else "(B)",
            "incorrect": "(B)" if correct_first else "(A)", "correct_full_text": correct,
            "incorrect_full_text": incorrect, "category": category}


def conv_truthfulqa_ab(rows):
    """Row i = TruthfulQA question i: its best answer vs its first incorrect answer, order seeded."""
    out = []
    for r in rows:
        q, best, wrong = _text(r["question"]), _text(r["best_answer"]), _answers(r["incorrect_answers"])
        if not q or not best or not wrong or "\n" in q:
            raise FetchError(f"TruthfulQA question {q[:60]!r} has no best answer, no incorrect answer or a line break")
        out.append(_ab(f"{TQA_AB_PREFIX}\n{q}", best, wrong[0], _h("tqa-ab", q) % 2 == 0, r.get("category")))
    return out


def conv_mmlu_ab(rows):
    """The first :data:`MMLU_PER_SUBJECT` test questions of each subject (subjects sorted): the answer
    vs one other choice, both drawn by a hash of the question."""
    by_subject: dict[str, list[dict]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
    out = []
    for subject in sorted(by_subject):
        for r in by_subject[subject][:MMLU_PER_SUBJECT]:
            choices, ans = [_text(c) for c in r["choices"]], int(r["answer"])
            others = [j for j in range(len(choices)) if j != ans and choices[j] != choices[ans]]
            if not others:
                raise FetchError(f"MMLU question {r['question'][:60]!r} has no wrong choice")
            h = _h("mmlu-ab", subject, r["question"])
            out.append(_ab(r["question"], choices[ans], choices[others[h % len(others)]], (h >> 8) % 2 == 0, subject))
    return out


def conv_simplesafetytests(rows):
    return [{"instruction": _text(r["prompts_final"]), "category": r["harm_area"], "subcategory": r["category"],
             "source_id": str(r["id"])} for r in rows]


def conv_harmfulqa(rows):
    return [{"instruction": _text(r["question"]), "category": r["topic"], "subcategory": r["subtopic"],
             "source_id": f"harmfulqa_{i:04d}"} for i, r in enumerate(rows)]


def conv_catqa_en(rows):
    return [{"instruction": _text(r["Question"]), "category": r["Category"], "subcategory": r["Subcategory"],
             "source_id": f"catqa_en_{i:03d}"} for i, r in enumerate(rows)]


def conv_harmfulq(rows):
    out = []
    for i, r in enumerate(rows):
        if isinstance(r, dict):
            keys = [k for k in ("question", "prompt", "instruction", "text") if k in r]
            if not keys:
                raise FetchError(f"HarmfulQ row {i} has fields {sorted(r)}; expected a question string")
            r = r[keys[0]]
        if not isinstance(r, str):
            raise FetchError(f"HarmfulQ row {i} is a {type(r).__name__}; expected a question string")
        out.append({"instruction": r.strip(), "category": None, "source_id": f"harmfulq_{i:03d}"})
    return out


def conv_donotanswer_harmful(rows):
    out, n = [], {}
    for r in rows:
        area = r["risk_area"]
        if area not in DNA_AREAS:
            continue
        k = n[area] = n.get(area, -1) + 1
        out.append({"instruction": _text(r["question"]), "category": area, "source_id": f"dna_{DNA_AREAS[area]}_{k:03d}"})
    return out


def conv_orbench_toxic(rows):
    return [{"instruction": _text(r["prompt"]), "category": r["category"], "source_id": f"orbench_toxic_{i:04d}"}
            for i, r in enumerate(rows)]


def conv_orbench_hard_1k(rows):
    return [{"instruction": _text(r["prompt"]), "category": r["category"], "label": "safe",
             "source_id": f"orbench_hard_{i:04d}"} for i, r in enumerate(rows)]


CONVERTERS: dict[str, Callable[[list], list[dict]]] = {
    "advbench": conv_advbench, "harmbench_val": conv_passthrough, "harmbench_test": conv_passthrough,
    "jailbreakbench": conv_jailbreakbench, "alpaca_train": conv_passthrough, "alpaca_val": conv_passthrough,
    "alpaca_test": conv_passthrough, "xstest": conv_xstest, "truthfulqa": conv_truthfulqa,
    "truthfulqa_ab": conv_truthfulqa_ab, "mmlu_ab": conv_mmlu_ab, "simplesafetytests": conv_simplesafetytests,
    "harmfulqa": conv_harmfulqa, "catqa_en": conv_catqa_en, "harmfulq": conv_harmfulq,
    "donotanswer_harmful": conv_donotanswer_harmful, "orbench_toxic": conv_orbench_toxic,
    "orbench_hard_1k": conv_orbench_hard_1k,
}


def dedup_within(rows: list[dict]) -> list[dict]:
    """Rows with an empty instruction or one repeating an earlier row's (after
    :func:`~steerlens.evals.data.normalize_text`) dropped."""
    seen, out = set(), []
    for r in rows:
        k = normalize_text(r["instruction"])
        if k and k not in seen:
            seen.add(k)
            out.append(r)
    return out


def convert(src: HubSource, raw: Any) -> list[dict]:
    """Raw source rows -> the rows of ``src.key``'s file (checked columns, converted, de-duplicated
    within the file for the extra safety sets)."""
    rows = CONVERTERS[src.key](_rows(src, raw))
    if src.key in DEDUP_WITHIN_FILE:
        rows = dedup_within(rows)
    return rows


def check_rows(src: HubSource, n: int) -> None:
    lo, hi = src.expected_rows, src.expected_rows + src.slack
    if not lo <= n <= hi:
        want = f"{lo}" if lo == hi else f"{lo}..{hi}"
        raise FetchError(f"{FILES[src.key]} from {src.hub_id} has {n} rows after conversion, expected {want}: "
                         "the source changed; update steerlens/evals/hub_manifest.py")


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# the whole directory


def fetch_data(to: Optional[str | os.PathLike] = None, *, force: bool = False, loader: Optional[Loader] = None,
               manifest: Sequence[HubSource] = MANIFEST, probe: bool = True, progress: bool = True,
               log: Callable[[str], None] = print) -> dict[str, int]:
    """Build the data directory at ``to`` (default :func:`default_target`) from ``manifest``;
    returns ``{file: rows}``. An existing non-empty ``to`` is replaced only with ``force`` (atomically:
    the old directory is kept until the new one is in place). ``loader`` (default :func:`load_source`)
    gives a source's raw rows; ``probe`` checks the hosts are reachable first."""
    dest = Path(to).expanduser() if to is not None else default_target()
    dest = dest.absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise FetchError(f"{dest} already exists; pass --force to replace it, or use it as it is with --data-dir {dest}")
    loader = loader or load_source
    if probe:
        check_reachable(_hosts([s for s in manifest if s.derived_from is None]))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    counts: dict[str, int] = {}
    try:
        from tqdm.auto import tqdm

        raw_of: dict[str, Any] = {}
        for src in tqdm(manifest, desc="fetch-data", unit="file", disable=not progress, leave=False):
            base = src.derived_from or src.key
            if base not in raw_of:
                raw_of[base] = loader(src)
            rows = convert(src, raw_of[base])
            check_rows(src, len(rows))
            write_rows(tmp / FILES[src.key], rows)
            counts[FILES[src.key]] = len(rows)
        sources = [{"file": FILES[s.key], "rows": counts[FILES[s.key]], "kind": s.kind, "source": s.hub_id,
                    "config": s.config, "split": s.split, "data_files": s.data_files, "license": s.license,
                    "note": s.note} for s in manifest]
        (tmp / "fetch_manifest.json").write_text(json.dumps({"sources": sources, "not_fetched": NO_HUB_SOURCE},
                                                            indent=1), encoding="utf-8")
        (tmp / "README.md").write_text(_readme(sources), encoding="utf-8")
        os.chmod(tmp, 0o755)
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.rename(dest, old)
        os.rename(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for key, why in NO_HUB_SOURCE.items():
        log(f"fetch-data: not fetched {FILES[key]}: {why}")
    return counts


def _readme(sources: list[dict]) -> str:
    lines = ["# Benchmark data fetched by `steerlens fetch-data`", "",
             "| file | rows | source | license |", "|---|---|---|---|"]
    lines += [f"| {s['file']} | {s['rows']} | {s['source']}{' (' + s['config'] + ')' if s['config'] else ''} | "
              f"{s['license']} |" for s in sources]
    lines += ["", "Not fetched:"] + [f"- {FILES[k]}: {why}" for k, why in NO_HUB_SOURCE.items()]
    lines += ["", "The A/B files are built from TruthfulQA and MMLU here (same layout as the CAA files, "
              "not the same draws); see steerlens/evals/hub_manifest.py for every id and column used.", ""]
    return "\n".join(lines)


__all__ = ["FetchError", "fetch_data", "default_target", "check_reachable", "load_source", "convert",
           "check_rows", "dedup_within", "CONVERTERS"]
