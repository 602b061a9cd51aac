"""README tables come from saved run outputs: ``scripts/readme_tables.py --check`` must pass, and it
must fail when a table and its source disagree."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_readme_table_matches_its_source_files():
    rt = _script()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = rt.sections_in(text)
    assert {"main", "judge", "gates"} <= set(names)
    _, changed = rt.rendered(text, ROOT)
    assert changed == [], f"README sections out of date with their sources: {changed} (run scripts/readme_tables.py)"


def test_check_fails_on_a_hand_edited_table_and_on_a_changed_source(tmp_path):
    rt = _script()
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # a figure typed over by hand inside the main table
    start = text.index("<!-- table:main -->")
    i = text.index("| finesteer |", start)
    edited = text[:i] + text[i:].replace("| finesteer | 0.", "| finesteer | 1.", 1)
    assert edited != text
    readme = tmp_path / "README.md"
    readme.write_text(edited, encoding="utf-8")
    assert rt.main(["--check", "--readme", str(readme)]) == 1
    # a source file that moved on while the README did not
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "docs" / "results", root / "docs" / "results")
    shutil.copytree(ROOT / "benchmarks" / "results" / "judge", root / "benchmarks" / "results" / "judge")
    res = json.loads((root / "docs/results/main/results.json").read_text())
    res["records"][0]["value"] = 1 - res["records"][0]["value"] + 0.01
    (root / "docs/results/main/results.json").write_text(json.dumps(res))
    _, changed = rt.rendered(text, root)
    assert changed == ["main"]
    # rewriting then checking agrees
    fixed, _ = rt.rendered(text, root)
    assert rt.rendered(fixed, root)[1] == []


def test_collect_main_copies_a_run_and_the_sites_real_chose(tmp_path):
    rt = _script()
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    src = ROOT / "docs" / "results" / "main"
    for name in ("results.json", "paired.json", "summary.json"):
        shutil.copyfile(src / name, (run / "eval" / name) if name == "results.json" else run / name)
    for s, d in ((0, run), (1, run / "seeds" / "seed-1")):
        art = d / "artifacts" / "finesteer"
        art.mkdir(parents=True)
        (art / "metadata.json").write_text(json.dumps({"config": {"selector": {"kind": "real_selector"},
                                                                  "selection": {"modules": [f"blocks.{12 + s}.hook_resid_post"]}}}))
    dest = rt.collect_main(run, tmp_path)
    assert json.loads((dest / "selection.json").read_text()) == {"finesteer": {"0": ["blocks.12"], "1": ["blocks.13"]}}
    assert (dest / "results.json").read_bytes() == (src / "results.json").read_bytes()
    assert not list(dest.parent.glob(".main-*")) and not dest.with_name("main.old").exists()
    with pytest.raises(FileNotFoundError):
        rt.collect_main(tmp_path / "nothing", tmp_path)


def test_fidelity_odesteer_block_matches_its_json(tmp_path):
    """docs/fidelity.md's ODESteer-MC block is experiments/odesteer_paper.py's rendering of
    docs/results/fidelity/odesteer_mc.json, and a hand edit of the block is told apart."""
    import odesteer_paper as op

    text = op.DOC.read_text(encoding="utf-8")
    block = text[text.index(op.DOC_BEGIN):text.index(op.DOC_END) + len(op.DOC_END)]
    doc = tmp_path / "fidelity.md"
    doc.write_text(text.replace(block, f"{op.DOC_BEGIN}\nhand-edited\n{op.DOC_END}"), encoding="utf-8")
    assert doc.read_text(encoding="utf-8") != text
    op.render_docs(op.JSON, doc)
    assert doc.read_text(encoding="utf-8") == text, "run: python experiments/odesteer_paper.py --render-docs"


@pytest.mark.parametrize("module,json_attr,cmd", [
    ("real_paper", "DOCS_JSON", "python experiments/real_paper.py --out runs/real_paper --render-docs"),
    ("odesteer_authors", "JSON", "python experiments/odesteer_authors.py --render-docs"),
])
def test_fidelity_blocks_match_their_json(tmp_path, module, json_attr, cmd):
    """docs/fidelity.md's REAL-protocol and ODESteer-authors blocks are their experiments' renderings
    of their saved JSON; a hand edit of a block is told apart."""
    import importlib

    m = importlib.import_module(module)
    text = m.DOC.read_text(encoding="utf-8")
    block = text[text.index(m.DOC_BEGIN):text.index(m.DOC_END) + len(m.DOC_END)]
    doc = tmp_path / "fidelity.md"
    doc.write_text(text.replace(block, f"{m.DOC_BEGIN}\nhand-edited\n{m.DOC_END}"), encoding="utf-8")
    assert doc.read_text(encoding="utf-8") != text
    m.render_docs(getattr(m, json_attr), doc)
    assert doc.read_text(encoding="utf-8") == text, f"run: {cmd}"
