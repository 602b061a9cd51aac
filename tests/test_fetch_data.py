"""``steerlens fetch-data``: every hub layout converts to the file the loaders read, row counts are
checked, nothing half-written is left, and offline it is one line naming --data-dir / STEERLENS_DATA.
No network: the loader is replaced by small ``datasets.Dataset`` objects / JSON lists that mimic each
source's layout (columns as on the dataset cards recorded in steerlens/evals/hub_manifest.py)."""

import dataclasses
import json
import socket

import datasets
import pytest

from steerlens.cli import main
from steerlens.evals import data as D
from steerlens.evals import fetch as F
from steerlens.evals import safety_sources as S
from steerlens.evals.hub_manifest import MANIFEST, NO_HUB_SOURCE, by_key


def _harm(tag, n):
    return [f"Explain how to commit {tag} offence number {i}" for i in range(n)]


def fake_raw(dup_in: str = "") -> dict:
    """Raw rows per manifest key (or per derived_from base), in each source's layout."""
    Ds = datasets.Dataset.from_dict
    tqa_q = [f"What happens if you do thing {i}?" for i in range(10)]
    raw = {
        "advbench": Ds({"prompt": _harm("advbench", 6), "target": ["Sure"] * 6}),
        "harmbench_val": [{"instruction": t, "category": "cybercrime"} for t in _harm("hbval", 3)],
        "harmbench_test": [{"instruction": t, "category": "chemical"} for t in _harm("hbtest", 4)],
        "jailbreakbench": Ds({"Index": list(range(5)), "Goal": _harm("jbb", 5), "Target": ["Sure"] * 5,
                              "Behavior": ["b"] * 5, "Category": ["Malware"] * 5, "Source": ["Original"] * 5}),
        "alpaca_train": [{"instruction": f"Write a poem about cats {i}", "category": None} for i in range(6)],
        "alpaca_val": [{"instruction": f"Name a colour {i}", "category": None} for i in range(3)],
        "alpaca_test": [{"instruction": f"Sum {i} and 2", "category": None} for i in range(3)],
        "xstest": Ds({"prompt": [f"How do I kill a Python process {i}?" for i in range(6)] + _harm("xs", 4),
                      "focus": ["kill"] * 10, "type": ["homonyms"] * 10, "note": ["violence"] * 10,
                      "label": ["safe"] * 6 + ["unsafe"] * 4}),
        "truthfulqa": Ds({"type": ["Adversarial"] * 10, "category": ["Misconceptions"] * 10, "question": tqa_q,
                          "best_answer": [f"Nothing happens {i}" for i in range(10)],
                          "correct_answers": [[f"Nothing happens {i}", "Nothing"] for i in range(10)],
                          "incorrect_answers": [[f"You die {i}", "You fly"] for i in range(10)],
                          "source": ["https://example.org"] * 10}),
        "mmlu_ab": Ds({"question": [f"Q{s}-{i}: 1+{i}?" for s in "ab" for i in range(12)],
                       "subject": ["algebra"] * 12 + ["biology"] * 12,
                       "choices": [[str(i + 1), str(i + 2), str(i + 3), str(i + 4)] for _ in "ab" for i in range(12)],
                       "answer": [i % 4 for _ in "ab" for i in range(12)]}),
        "simplesafetytests": Ds({"id": [f"sst_{i:03d}" for i in range(5)], "harm_area": ["Physical Harm"] * 5,
                                 "counter": list(range(5)), "category": ["Information and advice seeking"] * 5,
                                 "prompts_final": _harm("sst", 5)}),
        "harmfulqa": Ds({"id": list(range(6)), "topic": ["Social Sciences"] * 6, "subtopic": ["Cultural Studies"] * 6,
                         "question": _harm("hqa", 6), "blue_conversations": ["{}"] * 6, "red_conversations": ["{}"] * 6}),
        "catqa_en": Ds({"Category": ["Illegal Activity"] * 4 + ["Tailored Financial Advice"] * 2,
                        "Subcategory": ["Drug"] * 6, "Question": _harm("catqa", 6)}),
        "harmfulq": _harm("harmfulq", 5),
        "donotanswer_harmful": Ds({"id": list(range(8)),
                                   "risk_area": ["Malicious Uses"] * 3 + ["Information Hazards"] * 2
                                   + ["Discrimination, Exclusion, Toxicity, Hateful, Offensive"] * 3,
                                   "types_of_harm": ["x"] * 8, "specific_harms": ["y"] * 8,
                                   "question": _harm("dna", 8)}),
        "orbench_toxic": Ds({"prompt": _harm("orbtox", 5), "category": ["privacy"] * 5}),
        "orbench_hard_1k": Ds({"prompt": [f"What are questionable persuasion techniques {i}?" for i in range(6)],
                               "category": ["deception"] * 6}),
    }
    if dup_in:  # repeat the first row (different case/punctuation) at the end
        r = raw[dup_in]
        first = r[0] if isinstance(r, list) else None
        if first is None:
            row = r[0]
            col = {"harmfulqa": "question"}.get(dup_in, "question")
            row = dict(row, **{col: row[col].upper() + "!"})
            raw[dup_in] = datasets.concatenate_datasets([r, datasets.Dataset.from_list([row]).cast(r.features)])
        else:
            raw[dup_in] = r + [first.upper() + "?"]
    return raw


EXPECTED = {"advbench": 6, "harmbench_val": 3, "harmbench_test": 4, "jailbreakbench": 5, "alpaca_train": 6,
            "alpaca_val": 3, "alpaca_test": 3, "xstest": 10, "truthfulqa": 10, "truthfulqa_ab": 10, "mmlu_ab": 20,
            "simplesafetytests": 5, "harmfulqa": 6, "catqa_en": 6, "harmfulq": 5, "donotanswer_harmful": 6,
            "orbench_toxic": 5, "orbench_hard_1k": 6}


def small_manifest(**over):
    return [dataclasses.replace(s, expected_rows=over.get(s.key, EXPECTED[s.key]), slack=0) for s in MANIFEST]


def loader_of(raw, calls=None):
    def load(src):
        if calls is not None:
            calls.append(src.key)
        return raw[src.derived_from or src.key]
    return load


def fetch(tmp_path, raw=None, manifest=None, **kw):
    dest = tmp_path / "data"
    counts = F.fetch_data(dest, loader=loader_of(raw or fake_raw()), manifest=manifest or small_manifest(),
                          probe=False, progress=False, log=lambda s: None, **kw)
    return dest, counts


def test_manifest_covers_every_file():
    assert set(by_key()) | set(NO_HUB_SOURCE) == set(D.FILES)
    assert not set(by_key()) & set(NO_HUB_SOURCE)
    assert set(F.CONVERTERS) == set(by_key())


def test_manifest_rows_match_the_shared_data(root):
    """The expected counts are those of the files the project was built on."""
    for src in MANIFEST:
        assert len(D.read_rows(src.key, root)) == src.expected_rows, src.key


def test_fetched_directory_reads_with_every_loader(tmp_path):
    dest, counts = fetch(tmp_path)
    assert counts == {D.FILES[k]: n for k, n in EXPECTED.items()}
    assert not [p for p in tmp_path.iterdir() if p.name != "data"]  # no temp dir left
    assert json.loads((dest / "fetch_manifest.json").read_text())["sources"][0]["source"] == "walledai/AdvBench"
    harmful = D.load_harmful("all", root=dest)
    assert len(harmful) == 6 + 3 + 4 + 5 and {e.source for e in harmful} == set(D.HARMFUL_SOURCES)
    assert [e.meta["category"] for e in harmful if e.source == "jailbreakbench"] == ["Malware"] * 5
    assert len(D.load_harmless("all", root=dest)) == 12
    xs = D.load_xstest("all", root=dest)
    assert [e.meta["label"] for e in xs].count("safe") == 6 and xs[0].meta["xstest_id"] == 1
    tqa = D.load_truthfulqa("all", root=dest)
    assert tqa[3].meta["correct"] == ["Nothing happens 3", "Nothing"] and tqa[3].meta["incorrect"][0] == "You die 3"
    ab = D.load_truthfulqa_ab("all", root=dest)  # rows aligned with the CSV by question text
    assert [e.meta["question_id"] for e in ab] == [f"truthfulqa:{i}" for i in range(10)]
    for e in ab:
        letter = e.meta["correct"]
        assert f"{letter} {e.meta['correct_full_text']}" in e.prompt and e.meta["correct_full_text"].startswith("Nothing")
    assert {e.meta["correct"] for e in ab} == {"(A)", "(B)"}  # order is drawn, not constant
    mm = D.load_mmlu_ab("all", root=dest)
    assert len(mm) == 20 and [e.meta["category"] for e in mm] == ["algebra"] * 10 + ["biology"] * 10
    for e in mm:
        assert e.meta["correct_full_text"] != e.meta["incorrect_full_text"]
    for name in S.EXTRA_HARMFUL_SOURCES + S.BENIGN_EXTRA_SOURCES:
        exs = S.load_safety_source(name, "all", include_policy=True, root=dest)
        assert len(exs) == EXPECTED[name], name
    dna = S.load_safety_source("donotanswer_harmful", "all", root=dest)
    assert {e.meta["category"] for e in dna} == set(F.DNA_AREAS)  # Information Hazards left out
    assert len(S.load_safety_source("catqa_en", "all", root=dest)) == 4  # policy categories off by default
    sst = D.read_rows("simplesafetytests", dest)[0]
    assert (sst["category"], sst["subcategory"], sst["source_id"]) == ("Physical Harm", "Information and advice seeking",
                                                                       "sst_000")
    assert D.read_rows("orbench_hard_1k", dest)[0]["label"] == "safe"
    assert not (dest / D.FILES["jailbreak_templates"]).exists()


def test_each_source_is_downloaded_once(tmp_path):
    calls = []
    F.fetch_data(tmp_path / "d", loader=loader_of(fake_raw(), calls), manifest=small_manifest(), probe=False,
                 progress=False, log=lambda s: None)
    assert calls.count("truthfulqa") == 1 and "truthfulqa_ab" not in calls


@pytest.mark.parametrize("key", ["harmfulqa", "harmfulq"])
def test_safety_sets_are_deduplicated_within_the_file(tmp_path, key):
    dest, counts = fetch(tmp_path, raw=fake_raw(dup_in=key))
    assert counts[D.FILES[key]] == EXPECTED[key]


def test_wrong_row_count_fails_and_leaves_nothing(tmp_path):
    with pytest.raises(F.FetchError, match=r"advbench.json from walledai/AdvBench has 6 rows .* expected 7"):
        fetch(tmp_path, manifest=small_manifest(advbench=7))
    assert list(tmp_path.iterdir()) == []


def test_slack_allows_extra_rows_only_up_to_it(tmp_path):
    m = [dataclasses.replace(s, expected_rows=5, slack=1) if s.key == "harmfulqa" else s for s in small_manifest()]
    fetch(tmp_path, manifest=m)
    m = [dataclasses.replace(s, expected_rows=4, slack=1) if s.key == "harmfulqa" else s for s in small_manifest()]
    with pytest.raises(F.FetchError, match=r"expected 4\.\.5"):
        fetch(tmp_path, manifest=m, force=True)


def test_changed_layout_is_named(tmp_path):
    raw = fake_raw()
    raw["xstest"] = raw["xstest"].remove_columns("label")
    with pytest.raises(F.FetchError, match=r"walledai/XSTest \(xstest\) has columns .*missing \['label'\]"):
        fetch(tmp_path, raw=raw)
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_keeps_the_old_directory(tmp_path):
    dest, _ = fetch(tmp_path)
    before = (dest / D.FILES["advbench"]).read_text()
    raw = fake_raw()
    raw["orbench_hard_1k"] = raw["orbench_hard_1k"].remove_columns("prompt")
    with pytest.raises(F.FetchError):
        fetch(tmp_path, raw=raw, force=True)
    assert (dest / D.FILES["advbench"]).read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_existing_directory_needs_force(tmp_path):
    dest, _ = fetch(tmp_path)
    with pytest.raises(F.FetchError, match="already exists; pass --force"):
        fetch(tmp_path)
    raw = fake_raw()
    raw["advbench"] = datasets.Dataset.from_dict({"prompt": _harm("other", 6)})
    fetch(tmp_path, raw=raw, force=True)
    assert "other" in (dest / D.FILES["advbench"]).read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def _one_line(capsys, *needles):
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip() and not ln.startswith("fetch-data:")]  # tqdm
    err = "\n".join(lines)
    assert len(lines) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_offline_is_one_line_naming_data_dir(tmp_path, monkeypatch, capsys):
    def no_net(*a, **k):
        raise socket.gaierror(-2, "Name or service not known")
    monkeypatch.setattr(F.socket, "create_connection", no_net)
    assert main(["fetch-data", "--to", str(tmp_path / "d")]) == 2
    _one_line(capsys, "steerlens fetch-data: cannot reach huggingface.co", "--data-dir", "STEERLENS_DATA")
    assert list(tmp_path.iterdir()) == []


def test_hub_offline_switch_is_honoured(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(F.socket, "create_connection", lambda *a, **k: pytest.fail("probed the network"))
    assert main(["fetch-data", "--to", str(tmp_path / "d")]) == 2
    _one_line(capsys, "$HF_HUB_OFFLINE is set", "--data-dir")


def test_load_error_midway_is_one_line(tmp_path, monkeypatch, capsys):
    """The host answered the probe but a download fails (datasets raises ConnectionError)."""
    monkeypatch.setattr(F, "check_reachable", lambda hosts: None)

    def fail(src):
        raise ConnectionError("Couldn't reach 'walledai/AdvBench' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(F, "_load_hub", fail)
    assert main(["fetch-data", "--to", str(tmp_path / "d")]) == 2
    _one_line(capsys, "cannot reach huggingface.co while loading walledai/AdvBench", "--data-dir")
    assert list(tmp_path.iterdir()) == []


def test_if_missing_keeps_an_existing_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(F, "fetch_data", lambda *a, **k: pytest.fail("fetched although data exist"))
    (tmp_path / "data").mkdir()
    assert main(["fetch-data", "--if-missing", "--to", str(tmp_path / "data")]) == 0
    assert "found; nothing fetched" in capsys.readouterr().out
