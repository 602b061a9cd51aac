"""Old module paths of the pipeline keep importing (with a ``DeprecationWarning``).

The method packages moved under :mod:`steerlens.pipeline.methods` and ``pipeline/base.py`` was
split into the core modules; user code written against the old paths
(``from steerlens.pipeline.finesteer import SCSGate``, ``from steerlens.pipeline.base import
Selection``) gets the module at its new home, the *same* module object (so roles are not
registered twice). New code should import from the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: old package prefix -> new package prefix
MOVED = {
    "steerlens.pipeline.real": "steerlens.pipeline.methods.real",
    "steerlens.pipeline.finesteer": "steerlens.pipeline.methods.finesteer",
    "steerlens.pipeline.odesteer": "steerlens.pipeline.methods.odesteer",
    "steerlens.pipeline.baselines": "steerlens.pipeline.methods.baselines",
    "steerlens.pipeline.interventions": "steerlens.pipeline.methods.interventions",
    "steerlens.pipeline.compose": "steerlens.pipeline.steerer",
}
#: ``steerlens.pipeline.base`` is rebuilt from the modules its names moved to.
BASE = "steerlens.pipeline.base"
BASE_PARTS = ("errors", "selection", "contrastive", "roles", "gates", "steerer")


def new_name(old: str) -> str | None:
    for a, b in MOVED.items():
        if old == a or old.startswith(a + "."):
            return b + old[len(a):]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        if self.target == BASE:
            mod = types.ModuleType(BASE, "steerlens.pipeline.base moved: see steerlens.pipeline.roles & co.")
            for part in BASE_PARTS:
                src = importlib.import_module(f"steerlens.pipeline.{part}")
                for k in getattr(src, "__all__", ()):
                    setattr(mod, k, getattr(src, k))
            return mod
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass


class MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        target_name = BASE if fullname == BASE else new_name(fullname)
        if target_name is None:
            return None
        warnings.warn(f"{fullname} moved to {target_name if fullname != BASE else 'steerlens.pipeline.{roles, selection, contrastive, gates, steerer, errors}'}; "
                      "import it from there", DeprecationWarning, stacklevel=2)
        return importlib.util.spec_from_loader(fullname, _Alias(target_name))


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())


__all__ = ["install", "MOVED", "new_name"]
