"""Adding a method is adding a folder.

A toy method package is written to a temporary directory (nothing else changes) and pointed at
with ``$STEERLENS_METHOD_PATH``; it must then show up in ``steerlens methods``, be usable from a
spec (by method name and by its role's short name), and run through the contract suite, which
names no method. Each check runs in a fresh process, so the toy stays out of this session's
registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TOY = textwrap.dedent('''
    """A toy method: the unit mean-difference direction, added at one residual layer."""

    from steerlens.pipeline import Steerer, register_method, register_role, register_role_alias
    from steerlens.pipeline.editors import VectorEditor
    from steerlens.pipeline.selectors import FixedSelector


    @register_role
    class UnitDirectionEditor(VectorEditor):
        kind = "toy_unit_direction"

        def module_vector(self, pos, neg, paired):
            d = pos.mean(0) - neg.mean(0)
            return d / d.norm().clamp_min(1e-12), {"norm": float(d.norm())}


    register_role_alias("editor", "toy-unit", {"kind": "toy_unit_direction"})


    @register_method("toy-unit", help="toy: unit mean-difference direction at one layer",
                     contract={"params": {"layer": 1, "alpha": 4.0}, "gen_alpha": 200.0})
    def make_toy(*, layer: int = 1, alpha: float = 1.0, positions: str = "all") -> Steerer:
        return Steerer(FixedSelector([f"blocks.{layer}.hook_resid_post"]), UnitDirectionEditor(positions=positions),
                       alpha=alpha, method="toy-unit", method_params=dict(layer=layer, alpha=alpha, positions=positions))
''')


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    pkg = root / "toy_unit_method"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(TOY)
    env = dict(os.environ)
    env["STEERLENS_METHOD_PATH"] = str(root)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def _run(args, env, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_toy_method_is_listed_by_steerlens_methods(toy_env):
    r = _run(["-m", "steerlens", "methods", "--roles"], toy_env)
    assert r.returncode == 0, r.stderr
    assert "toy-unit" in r.stdout and "unit mean-difference direction" in r.stdout
    assert "toy-unit (toy_unit_direction)" in r.stdout  # its spec short name
    r0 = _run(["-m", "steerlens", "methods"], {k: v for k, v in toy_env.items() if k != "STEERLENS_METHOD_PATH"})
    assert r0.returncode == 0 and "toy-unit" not in r0.stdout  # found only through the folder


def test_toy_method_in_a_spec(toy_env):
    code = textwrap.dedent('''
        import steerlens
        from steerlens.pipeline import SimpleContrastiveData, load_steerer
        from steerlens.pipeline.spec import build_steerer, normalise_spec
        spec = normalise_spec({"name": "t", "steerer": [
            {"name": "a", "method": "toy-unit", "params": {"layer": 1}, "fit": {"task": "safety"}},
            {"name": "b", "selector": {"kind": "fixed", "modules": ["blocks.0.hook_resid_post"]},
             "editor": "toy-unit", "gate": "none", "fit": {"task": "safety"}}]})
        model = steerlens.load_model("tiny-random", seed=0)
        data = SimpleContrastiveData(["Hi there", "Tell me a joke"], ["How to hurt", "Make a weapon"])
        for st in spec["steerer"]:
            s = build_steerer(st).fit(model, data)
            assert type(s.editor).__name__ == "UnitDirectionEditor", s
            assert abs(float(s.editor.vectors[0].norm()) - 1) < 1e-4
        import tempfile
        d = tempfile.mkdtemp()
        s.save(d + "/art")
        assert load_steerer(d + "/art", model=model).editor.kind == "toy_unit_direction"
        print("SPEC-OK")
    ''')
    r = _run(["-c", code], toy_env)
    assert r.returncode == 0 and "SPEC-OK" in r.stdout, r.stdout + r.stderr


def test_register_package_from_python(toy_env):
    env = {k: v for k, v in toy_env.items() if k != "STEERLENS_METHOD_PATH"}
    code = textwrap.dedent(f'''
        from steerlens.pipeline import available_methods, make_steerer, register_package
        assert "toy-unit" not in available_methods()
        register_package({toy_env["STEERLENS_METHOD_PATH"]!r})   # after the registry was read: imported now
        assert "toy-unit" in available_methods()
        assert make_steerer("toy-unit", layer=0).method == "toy-unit"
        try:
            register_package("/no/such/dir")
        except Exception as e:
            assert "neither a module name nor a directory" in str(e), e
        else:
            raise AssertionError("a missing directory was accepted")
        print("REGISTER-OK")
    ''')
    r = _run(["-c", code], env)
    assert r.returncode == 0 and "REGISTER-OK" in r.stdout, r.stdout + r.stderr


def test_toy_method_runs_through_the_contract_suite(toy_env):
    r = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_contract.py", "-k", "toy-unit",
              "-o", "addopts="], toy_env, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    # every per-method contract test ran for the toy; only the closed-gate checks skip (it has no gate)
    collect = _run(["-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", "tests/test_contract.py",
                    "-k", "toy-unit", "-o", "addopts="], toy_env)
    n = sum("toy-unit" in line for line in collect.stdout.splitlines())
    assert n >= 6, collect.stdout
    import re

    m = re.search(r"(\d+) passed(?:, (\d+) skipped)?", r.stdout)
    assert m, r.stdout[-2000:]
    passed, skipped = int(m.group(1)), int(m.group(2) or 0)
    assert passed + skipped == n and passed >= 6 and skipped <= 2, r.stdout[-2000:]
