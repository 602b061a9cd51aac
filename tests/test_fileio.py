"""Atomic writes: a failed write leaves the previous file and no temporary behind."""

import json

import pytest

from steerlens.fileio import atomic_savefig, atomic_write, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic_write_json(p, {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert oct(p.stat().st_mode & 0o777) == "0o644"

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, broken)
    assert json.loads(p.read_text()) == {"x": 1}
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.json"]
    atomic_write_text(p, "new")
    assert p.read_text() == "new"


def test_atomic_savefig_writes_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = atomic_savefig(fig, tmp_path / "plot.png", dpi=50)
    plt.close(fig)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [x.name for x in tmp_path.iterdir()] == ["plot.png"]


def test_atomic_write_report_writes_json_and_md_beside_it(tmp_path):
    from steerlens.fileio import atomic_write_report

    p = atomic_write_report(tmp_path / "new" / "r.json", {"a": 1}, "| a |\n")
    assert p == tmp_path / "new" / "r.json" and json.loads(p.read_text()) == {"a": 1}
    assert (tmp_path / "new" / "r.md").read_text() == "| a |\n"
    assert sorted(x.name for x in (tmp_path / "new").iterdir()) == ["r.json", "r.md"]  # no temporary left
