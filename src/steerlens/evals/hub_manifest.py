"""Where ``steerlens fetch-data`` reads each benchmark file from, and how many rows it must have.

One :class:`HubSource` per file of the data directory (keys of :data:`steerlens.evals.data.FILES`).
``kind`` is ``"hub"`` (``datasets.load_dataset(hub_id, config, split=..., data_files=...)``) or
``"url"`` (a public JSON file read over HTTPS; used where the hub has no copy with the split or the
processing our files use). The ids and column layouts were taken from the dataset cards (hub) or
the files themselves (refusal_direction); ``expected_rows`` is the row count of the files in the
shared data directory (``../shared/data``), counted when this manifest was written.

Row counts are checked after conversion: ``expected_rows <= rows <= expected_rows + slack``.
``slack`` is 0 where the hub copy gives exactly our file; it is > 0 for the sets whose shared copy
was also de-duplicated against evaluation prompts kept outside the data directory (that list is not
part of the project), so the hub copy may hold up to ``slack`` more rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

_RD = "https://raw.githubusercontent.com/andyrdt/refusal_direction/main/dataset"


@dataclass(frozen=True)
class HubSource:
    key: str                       # key in data.FILES
    kind: str                      # "hub" | "url"
    hub_id: str                    # hub dataset id, or the URL for kind="url"
    columns: tuple[str, ...]       # source columns the converter reads (checked before converting)
    expected_rows: int
    config: Optional[str] = None
    split: str = "train"
    data_files: Optional[str] = None
    slack: int = 0
    license: str = ""
    note: str = ""
    derived_from: Optional[str] = None  # built from another source's rows (no download of its own)
    filters: dict = field(default_factory=dict)


MANIFEST: tuple[HubSource, ...] = (
    HubSource("advbench", "hub", "walledai/AdvBench", ("prompt",), 520, license="MIT",
              note="AdvBench harmful behaviors (Zou et al. 2023); `prompt` -> instruction, category null"),
    HubSource("harmbench_val", "url", f"{_RD}/processed/harmbench_val.json", ("instruction", "category"), 41,
              license="MIT", note="HarmBench standard behaviors, validation split, as processed by "
              "andyrdt/refusal_direction (the hub copies, e.g. walledai/HarmBench, have no val/test split)"),
    HubSource("harmbench_test", "url", f"{_RD}/processed/harmbench_test.json", ("instruction", "category"), 159,
              license="MIT", note="HarmBench standard behaviors, test split (refusal_direction processing)"),
    HubSource("jailbreakbench", "hub", "JailbreakBench/JBB-Behaviors", ("Goal", "Category"), 100,
              config="behaviors", split="harmful", license="MIT",
              note="JBB-Behaviors harmful; `Goal` -> instruction, `Category` -> category"),
    HubSource("alpaca_train", "url", f"{_RD}/splits/harmless_train.json", ("instruction", "category"), 18793,
              license="CC BY-NC 4.0", note="tatsu-lab/alpaca instructions without input, refusal_direction's "
              "train/val/test split files (the split is theirs, so it is read from them)"),
    HubSource("alpaca_val", "url", f"{_RD}/splits/harmless_val.json", ("instruction", "category"), 6264,
              license="CC BY-NC 4.0"),
    HubSource("alpaca_test", "url", f"{_RD}/splits/harmless_test.json", ("instruction", "category"), 6266,
              license="CC BY-NC 4.0"),
    HubSource("xstest", "hub", "walledai/XSTest", ("prompt", "type", "label"), 450,
              license="CC BY 4.0", note="XSTest v2 prompts; written as xstest_prompts.csv "
              "(id = row number from 1 when the hub copy has no id column; `focus`, `note` copied when present)"),
    HubSource("truthfulqa", "hub", "truthfulqa/truthful_qa",
              ("type", "category", "question", "best_answer", "correct_answers", "incorrect_answers", "source"),
              817, config="generation", split="validation", license="Apache-2.0",
              note="written in the original CSV layout; answer lists joined with '; '"),
    HubSource("truthfulqa_ab", "hub", "truthfulqa/truthful_qa", ("question", "best_answer", "incorrect_answers",
              "category"), 817, config="generation", split="validation", derived_from="truthfulqa",
              license="Apache-2.0", note="two-choice A/B items built here from TruthfulQA (best answer vs the "
              "first incorrect answer, A/B order seeded by the question); same layout as the CAA file, "
              "not the same A/B draws"),
    HubSource("mmlu_ab", "hub", "cais/mmlu", ("question", "subject", "choices", "answer"), 570, config="all",
              split="test", license="MIT", note="two-choice A/B items built here: the first 10 test questions of "
              "each of the 57 subjects, the answer vs one other choice (seeded); same layout as the CAA file, "
              "not the same draws"),
    HubSource("simplesafetytests", "hub", "Bertievidgen/SimpleSafetyTests",
              ("id", "harm_area", "category", "prompts_final"), 100, license="CC BY 4.0",
              note="`prompts_final` -> instruction, `harm_area` -> category, `category` -> subcategory"),
    HubSource("harmfulqa", "hub", "declare-lab/HarmfulQA", ("id", "topic", "subtopic", "question"), 1937,
              slack=23, license="Apache-2.0",
              note="`question` -> instruction, `topic` -> category (an academic topic), `subtopic` -> subcategory"),
    HubSource("catqa_en", "hub", "declare-lab/CategoricalHarmfulQA", ("Category", "Subcategory", "Question"), 543,
              data_files="data/catqa_english.json", slack=7, license="Apache-2.0",
              note="CatQA English (550 on the hub)"),
    HubSource("harmfulq", "url", "https://raw.githubusercontent.com/SALT-NLP/chain-of-thought-bias/main/data/"
              "dangerous-q/toxic_outs.json", (), 188, slack=12, license="MIT",
              note="HarmfulQ has no hub copy; read from the authors' repository (a JSON list of questions, "
              "checked when read)"),
    HubSource("donotanswer_harmful", "hub", "LibrAI/do-not-answer", ("id", "risk_area", "question"), 418, slack=30,
              license="Apache-2.0", filters={"risk_area": ("Malicious Uses",
                                                          "Discrimination, Exclusion, Toxicity, Hateful, Offensive")},
              note="only the risk areas 'Malicious Uses' and 'Discrimination, Exclusion, Toxicity, Hateful, "
              "Offensive'; `risk_area` -> category"),
    HubSource("orbench_toxic", "hub", "bench-llm/or-bench", ("prompt", "category"), 655, config="or-bench-toxic",
              license="CC BY 4.0", note="OR-Bench-Toxic"),
    HubSource("orbench_hard_1k", "hub", "bench-llm/or-bench", ("prompt", "category"), 1319,
              config="or-bench-hard-1k", license="CC BY 4.0", note="OR-Bench-Hard-1K (benign; label 'safe')"),
)

#: files of the data directory that fetch-data cannot rebuild, with the reason (said in its output).
NO_HUB_SOURCE: dict[str, str] = {
    "jailbreak_templates": "no hub source: the wrappers were assembled by hand from microsoft/PyRIT templates and "
                           "in-the-wild prompts (verazuo/jailbreak_llms via NVIDIA/garak); copy "
                           "safety/jailbreak_templates.json from a full data directory (needed by gate-eval only)",
}

#: the safety sets whose rows are de-duplicated within the file (first occurrence kept) on conversion
DEDUP_WITHIN_FILE = ("simplesafetytests", "harmfulqa", "catqa_en", "harmfulq", "donotanswer_harmful",
                     "orbench_toxic", "orbench_hard_1k")


def by_key() -> dict[str, HubSource]:
    return {s.key: s for s in MANIFEST}


__all__ = ["HubSource", "MANIFEST", "NO_HUB_SOURCE", "DEDUP_WITHIN_FILE", "by_key"]
