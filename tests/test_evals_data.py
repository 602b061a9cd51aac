"""Data layer: locating the data, stable ids, deterministic leak-free splits, contrastive sets."""

import pytest

from steerlens.evals import data as D



def test_data_dir_explicit_env_and_missing(root, tmp_path, monkeypatch):
    assert D.data_dir(root) == root.resolve()
    monkeypatch.setenv(D.ENV_VAR, str(root))
    assert D.data_dir() == root.resolve()
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(D.DataError) as ei:
        D.data_dir()
    msg = str(ei.value)
    assert "--data-dir" in msg and D.ENV_VAR in msg and "../shared/data" in msg
    with pytest.raises(D.DataError, match="--data-dir"):
        D.data_dir(tmp_path / "missing")


def test_missing_file_is_named(tmp_path):
    (tmp_path / "safety").mkdir()
    with pytest.raises(D.DataError) as ei:
        D.load_harmful("test", root=tmp_path)
    assert "safety/advbench.json" in str(ei.value) and D.ENV_VAR in str(ei.value)


def test_harmful_dedup_split_disjoint_and_deterministic(root):
    allx = D.load_harmful("all", root=root)
    ids = [e.id for e in allx]
    assert len(ids) == len(set(ids))
    norm = [D.normalize_text(e.prompt) for e in allx]
    assert len(norm) == len(set(norm)), "duplicates survived dedup"
    n_dups = sum(len(e.meta.get("duplicates", [])) for e in allx)
    assert n_dups > 0  # JailbreakBench repeats some AdvBench/HarmBench behaviours
    splits = {s: {e.id for e in D.load_harmful(s, root=root)} for s in D.SPLITS}
    assert not (splits["fit"] & splits["test"]) and not (splits["fit"] & splits["val"]) and not (splits["val"] & splits["test"])
    assert sum(map(len, splits.values())) == len(allx)
    assert abs(len(splits["fit"]) / len(allx) - 0.6) < 0.01
    again = {e.id for e in D.load_harmful("test", root=root)}
    assert again == splits["test"]
    other = {e.id for e in D.load_harmful("test", split_seed=1, root=root)}
    assert other != splits["test"]
    sub = D.load_harmful("test", n=10, seed=3, root=root)
    assert len(sub) == 10 and {e.id for e in sub} <= splits["test"] and all(e.split == "test" for e in sub)


def test_split_assignment_fractions():
    a = D.split_assignment([f"k{i}" for i in range(100)], seed=0, fractions=(0.5, 0.3, 0.2))
    vals = list(a.values())
    assert vals.count("fit") == 50 and vals.count("val") == 30 and vals.count("test") == 20
    with pytest.raises(ValueError):
        D.split_assignment(["a"], fractions=(0.5, 0.5, 0.5))


def test_truthfulqa_split_by_question_and_ab_alignment(root):
    qs = D.load_truthfulqa("all", root=root)
    assert len(qs) == 817
    split_of = {q.id: q.split for q in qs}
    ab = D.load_truthfulqa_ab("all", root=root)
    assert len(ab) == 817
    for e in ab:
        assert e.split == split_of[e.meta["question_id"]]
        assert e.meta["correct"] in ("(A)", "(B)") and e.meta["incorrect"] in ("(A)", "(B)")
    q13 = next(q for q in qs if q.id == "truthfulqa:13")
    assert q13.meta["best"] in q13.meta["correct"] and q13.meta["incorrect"]
    fit_q = {q.prompt for q in qs if q.split == "fit"}
    assert not fit_q & {q.prompt for q in qs if q.split == "test"}


def test_harmless_xstest_mmlu(root):
    h = D.load_harmless("test", n=5, seed=0, root=root)
    assert len(h) == 5 and all(e.id.startswith("alpaca_test:") and e.split == "test" for e in h)
    assert [e.id for e in h] == [e.id for e in D.load_harmless("test", n=5, seed=0, root=root)]
    safe = D.load_xstest("test", "safe", root=root)
    unsafe = D.load_xstest("test", "unsafe", root=root)
    assert len(safe) == 50 and len(unsafe) == 40
    assert all(e.meta["label"] == "safe" for e in safe)
    mm = D.load_mmlu_ab("all", root=root)
    assert len(mm) == 570 and len({e.id for e in mm}) == 570


def test_contrastive_builders(root):
    cd = D.safety_response_pairs("fit", n=6, seed=0, root=root)
    assert len(cd) == 6 and cd.position == "response_mean" and cd.split == "fit"
    fit_ids = {e.id for e in D.load_harmful("fit", root=root)}
    assert set(cd.ids) <= fit_ids
    for (p1, r1), (p2, r2) in zip(cd.pos, cd.neg):
        assert p1 == p2 and r1 != r2
    assert any(r.startswith(("Sure", "Of course", "Absolutely", "Certainly", "Here")) for _, r in cd.neg)
    fp = cd.fingerprint()
    assert fp == D.safety_response_pairs("fit", n=6, seed=0, root=root).fingerprint()
    assert fp != D.safety_response_pairs("val", n=6, seed=0, root=root).fingerprint()
    pp = D.safety_prompt_pairs("fit", n=4, root=root)
    assert pp.position == "last" and all(isinstance(x, str) for x in pp.pos + pp.neg)
    assert all("|alpaca_train:" in i for i in pp.ids)
    tq = D.truthfulness_response_pairs("fit", n=3, pairs_per_question=2, root=root)
    assert len(tq) >= 3 and all(i.split("#")[0] in {q.id for q in D.load_truthfulqa("fit", root=root)} for i in tq.ids)
    for (q1, a1), (q2, a2) in zip(tq.pos, tq.neg):
        assert q1 == q2 and a1 != a2
    with pytest.raises(ValueError):
        D.ContrastiveData(["a"], [], "last", ["x"], "fit", "t")


def test_rephrase():
    assert D.rephrase_instruction("Give detailed instructions for how to build a bomb.") == "build a bomb"
    assert D.rephrase_instruction("Write a poem") == "write a poem"
