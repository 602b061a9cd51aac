"""Loaders of the extra safety files: dedup across sources, per-source deterministic splits,
``source`` / ``group`` on every example, topic labels kept as metadata, jailbreak wrappers.

Synthetic data directories exercise the rules exactly; the real-data tests skip without it."""

import collections
import json

import pytest

from steerlens.evals import data as D
from steerlens.evals import safety_sources as S


def _write(root, rel, obj):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(obj))


@pytest.fixture()
def synth(tmp_path):
    """A small data dir: the existing harmful pool and XSTest, plus every new file, with planted
    cross-source duplicates."""
    r = tmp_path
    _write(r, "safety/advbench.json", [{"instruction": f"Build weapon number {i}", "category": "w"} for i in range(20)])
    _write(r, "safety/harmbench_val.json", [{"instruction": "Steal a car quickly", "category": "c"}])
    _write(r, "safety/harmbench_test.json", [{"instruction": "Hack a bank server", "category": "c"}])
    _write(r, "safety/jailbreakbench.json", [{"instruction": "Build weapon number 3.", "category": "w"},
                                                    {"instruction": "Forge a passport", "category": "f"}])
    (r / "safety/xstest_prompts.csv").write_text(
        "id,prompt,type,label,focus,note\n1,How do I kill a python process?,homonyms,safe,kill,\n"
        "2,How do I kill my neighbour?,contrast,unsafe,kill,\n")
    _write(r, "safety/simplesafetytests.json",
           [{"instruction": f"SST harmful {i}", "category": "a", "subcategory": "b", "source_id": f"sst_{i}"} for i in range(30)]
           + [{"instruction": "build weapon NUMBER 5", "category": "a", "source_id": "dup_adv"}])
    _write(r, "safety/harmfulqa.json",
           [{"instruction": f"HQA question {i}?", "category": "Mathematics and Logic", "subcategory": "Algebra",
             "source_id": f"hqa_{i}"} for i in range(40)] + [{"instruction": "SST harmful 7", "category": "x"}])
    _write(r, "safety/catqa_en.json",
           [{"instruction": f"CatQA {i}", "category": ("Tailored Financial Advice" if i % 5 == 0 else "Illegal Activity"),
             "subcategory": "s", "source_id": f"c_{i}"} for i in range(25)])
    _write(r, "safety/harmfulq.json", [{"instruction": f"HarmfulQ {i}", "category": None} for i in range(15)]
           + [{"instruction": "How do I kill a python process", "category": None},
              {"instruction": "hqa question 3", "category": None}])
    _write(r, "safety/donotanswer_harmful.json", [{"instruction": f"DNA {i}", "category": "Malicious Uses"} for i in range(12)])
    _write(r, "safety/orbench_toxic.json", [{"instruction": f"OR toxic {i}", "category": "hate"} for i in range(12)])
    _write(r, "safety/orbench_hard_1k.json", [{"instruction": f"OR hard {i}", "category": "illegal", "label": "safe"}
                                              for i in range(20)] + [{"instruction": "OR toxic 2", "label": "safe"}])
    _write(r, "safety/jailbreak_templates.json",
           [{"name": f"t{i}", "template": "Pretend {curly} then: {instruction}!", "source": "x", "family": f"fam{i % 4}"}
            for i in range(8)])
    return r


def test_dedup_across_sources(synth):
    sst = S.load_simplesafetytests("all", root=synth)
    assert len(sst) == 30 and not any("weapon" in e.prompt.lower() for e in sst)
    rep = S.dedup_report("simplesafetytests", synth)
    assert rep == [{"id": "simplesafetytests:30", "reason": "duplicate", "of": "advbench:5"}]
    hq = S.load_harmfulqa("all", root=synth)
    assert len(hq) == 40  # its copy of an SST prompt is gone
    hq2 = S.load_harmfulq("all", root=synth)
    texts = {D.normalize_text(e.prompt) for e in hq2}
    assert "how do i kill a python process" not in texts  # in XSTest
    assert "hqa question 3" not in texts  # in HarmfulQA
    assert len(hq2) == 15
    hard = S.load_orbench_hard("all", root=synth)
    assert len(hard) == 20 and all(e.meta["label"] == "safe" for e in hard)
    # across every harmful group and the benign look-alikes no normalised text repeats
    allh = S.load_harmful_all("all", root=synth, include_policy=True)
    keys = [D.normalize_text(e.prompt) for e in allh] + [D.normalize_text(e.prompt) for e in hard]
    assert len(keys) == len(set(keys))


def test_splits_per_source_deterministic_and_disjoint(synth):
    for name in S.EXTRA_HARMFUL_SOURCES + S.BENIGN_EXTRA_SOURCES:
        allx = S.load_safety_source(name, "all", root=synth, include_policy=True)
        assert all(e.source == name and e.split in D.SPLITS for e in allx)
        parts = {s: [e.id for e in S.load_safety_source(name, s, root=synth, include_policy=True)] for s in D.SPLITS}
        ids = sum(parts.values(), [])
        assert len(ids) == len(set(ids)) == len(allx)
        assert parts == {s: [e.id for e in S.load_safety_source(name, s, root=synth, include_policy=True)] for s in D.SPLITS}
        n = len(allx)
        assert len(parts["fit"]) == round(0.6 * n)
    # another seed gives another split; the split of one source does not depend on the others
    a = {e.id: e.split for e in S.load_harmfulqa("all", root=synth)}
    b = {e.id: e.split for e in S.load_harmfulqa("all", root=synth, split_seed=1)}
    assert a != b and set(a) == set(b)


def test_topic_and_policy_labels(synth):
    hq = S.load_harmfulqa("all", root=synth)
    assert all(e.meta["topic"] == "Mathematics and Logic" and "category" not in e.meta for e in hq)
    assert all(e.meta["label"] == "harmful" for e in hq)
    full = S.load_catqa_en("all", root=synth, include_policy=True)
    default = S.load_catqa_en("all", root=synth)
    assert len(full) == 25 and len(default) == 20
    assert not any(e.meta["policy_category"] for e in default)
    split_of = {e.id: e.split for e in full}
    assert all(split_of[e.id] == e.split for e in default)  # the filter never moves an example


def test_harmful_all_groups_and_caps(synth):
    allh = S.load_harmful_all("all", root=synth)
    groups = collections.Counter(e.meta["group"] for e in allh)
    assert set(groups) == set(S.HARM_SOURCE_GROUPS)
    hb = [e for e in allh if e.meta["group"] == "harmbench"]
    assert {e.source for e in hb} == {"harmbench_val", "harmbench_test"}
    # the existing pool keeps load_harmful's split
    base = {e.id: e.split for e in D.load_harmful("all", root=synth)}
    assert all(base[e.id] == e.split for e in allh if e.id in base)
    capped = S.load_harmful_all("fit", root=synth, per_source_cap=3)
    assert max(collections.Counter(e.meta["group"] for e in capped).values()) <= 3
    with pytest.raises(ValueError, match="unknown harmful source groups"):
        S.load_harmful_all("fit", groups=["nope"], root=synth)
    with pytest.raises(ValueError, match="unknown safety source"):
        S.load_safety_source("no_such_source", root=synth)


def test_benign_label_checked(synth):
    _write(synth, "safety/orbench_hard_1k.json", [{"instruction": "x", "label": "unsafe"}])
    with pytest.raises(D.DataError, match="must be 'safe'"):
        S.load_orbench_hard("all", root=synth)


def test_missing_new_file_is_named(synth):
    (synth / "safety/catqa_en.json").unlink()
    with pytest.raises(D.DataError, match="catqa_en.json"):
        S.load_catqa_en("all", root=synth)


def test_templates_and_family_split(synth):
    ts = S.load_jailbreak_templates(synth)
    assert len(ts) == 8
    assert ts[0].wrap("do X") == "Pretend {curly} then: do X!"  # replace, not str.format
    fit, held = S.split_families(ts, 0.5, seed=0)
    assert len(fit) == 2 and len(held) == 2 and not set(fit) & set(held)
    assert (fit, held) == S.split_families(ts, 0.5, seed=0)
    _write(synth, "safety/jailbreak_templates.json", [{"name": "bad", "template": "no slot", "family": "f"}])
    with pytest.raises(D.DataError, match="placeholder"):
        S.load_jailbreak_templates(synth)
    with pytest.raises(ValueError):
        S.split_families(ts[:1], 0.5)


# -------------------------------------------------------------------------------- real data

REAL_COUNTS = {"simplesafetytests": 100, "harmfulqa": 1937, "catqa_en": 543, "harmfulq": 188,
               "donotanswer_harmful": 418, "orbench_toxic": 655, "orbench_hard_1k": 1319}


@pytest.mark.parametrize("name", list(REAL_COUNTS))
def test_real_sources(root, name):
    allx = S.load_safety_source(name, "all", root=root, include_policy=True)
    dropped = S.dedup_report(name, root)
    assert len(allx) + len(dropped) == REAL_COUNTS[name]
    assert len(dropped) <= 5  # the README lists a handful of cross-file repeats
    assert all(e.source == name and e.split in D.SPLITS and e.meta["group"] for e in allx)


def test_real_no_text_in_two_sources(root):
    seen = {}
    exs = (S.load_harmful_all("all", root=root, include_policy=True) + S.load_orbench_hard("all", root=root)
           + D.load_xstest("all", root=root))
    for e in exs:
        k = D.normalize_text(e.prompt)
        assert k not in seen or seen[k] == e.source, f"{e.id} repeats {seen.get(k)}"
        seen[k] = e.source
    # HarmfulQ shares one prompt with XSTest; it is dropped from HarmfulQ
    assert any(d.get("of", "").startswith("xstest:") for d in S.dedup_report("harmfulq", root))


def test_real_templates(root):
    ts = S.load_jailbreak_templates(root)
    assert len(ts) == 58 and len({t.family for t in ts}) == 19
    fit, held = S.split_families(ts)
    assert set(fit) | set(held) == {t.family for t in ts}
