"""The method registry: ``make_steerer(method, **params)`` without a central if/else, and the
discovery of method packages.

A method registers a factory that builds an unfitted :class:`~steerlens.pipeline.Steerer`::

    from steerlens.pipeline import register_method

    @register_method("real", help="REAL-selected heads, ITI-style editor",
                     contract={"params": {"heads": 3}, "gen_alpha": 1000.0})
    def make_real(*, heads: int = 16, alpha: float = 5.0, **kw) -> Steerer:
        return Steerer(REALSelector(heads=heads, **kw), ITIEditor(), alpha=alpha, method="real",
                       method_params=dict(heads=heads, alpha=alpha, **kw))

Method packages are found, not listed: every package under :mod:`steerlens.pipeline.methods`
(``pkgutil``), every package given to :func:`register_package` or named in the environment
variable ``STEERLENS_METHOD_PATH`` (directories of method packages, or method package
directories themselves, separated by ``os.pathsep``), and every module of the ``steerlens.methods``
entry-point group. They are imported the first time the registry is read; importing one registers
its methods, roles, role aliases and spec defaults. Adding a method is adding a folder.

This module sits below :mod:`~steerlens.pipeline.steerer` (it never imports it): the factories
build steerers, the registry only calls them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .errors import PipelineError
from .roles import Gate, ROLE_TYPES

#: The package whose subpackages are the built-in methods.
METHODS_PACKAGE = "steerlens.pipeline.methods"
#: Environment variable: extra method packages (directories), separated by ``os.pathsep``.
METHOD_PATH_ENV = "STEERLENS_METHOD_PATH"
#: Entry-point group of installed method packages (value: a module name).
ENTRY_POINT_GROUP = "steerlens.methods"


@dataclass
class MethodInfo:
    name: str
    factory: Callable[..., Any]
    help: str = ""
    #: default site family: "resid" (a layer) or "heads".
    family: str = "resid"
    #: how the contract suite builds this method on the 2-layer tiny random model:
    #: ``{"params": {...}, "gen_alpha": strength at which greedy text changes there}``.
    contract: Optional[dict] = None
    hidden: bool = False
    #: what ``steerlens fit`` fits the method on when not told (``{"n": ...}``: the validated size)
    fit_defaults: Optional[dict] = None
    #: named parameter sets (``{"paper": {...}}``); ``"default"`` (no overrides) is always there
    presets: Optional[dict] = None

    def preset_names(self) -> list[str]:
        """The presets this method has: ``"default"`` first, then the registered ones."""
        return ["default", *sorted(k for k in (self.presets or {}) if k != "default")]

    def parameters(self) -> dict[str, Any]:
        """Keyword parameters of the factory and their defaults."""
        sig = inspect.signature(self.factory)
        return {k: (None if p.default is inspect.Parameter.empty else p.default)
                for k, p in sig.parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


METHODS: dict[str, MethodInfo] = {}
_loaded = False


def register_method(name: str, *, help: str = "", family: str = "resid", contract: Optional[dict] = None,
                    hidden: bool = False, fit_defaults: Optional[dict] = None,
                    presets: Optional[dict] = None) -> Callable:
    """Decorator: register ``factory(**params) -> Steerer`` under ``name`` (in a method package).

    ``contract`` tells the contract suite (``tests/test_contract.py``) how to build the method on
    the tiny random model; every registered method runs through it. ``hidden`` methods (test
    roles) are left out of ``steerlens methods``. ``presets``: named parameter sets
    (``{"paper": {"C": 1.0, ...}}``, see :func:`preset_params`); ``"default"`` is implicit (the
    factory's own defaults) and may not be redefined."""
    if presets and "default" in presets:
        raise PipelineError(f"method {name!r}: the 'default' preset is the factory's defaults; do not register it")
    key = name.lower()

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        old = METHODS.get(key)
        if old is not None and (old.factory.__module__, old.factory.__qualname__) != (
                factory.__module__, factory.__qualname__):
            raise PipelineError(f"method {name!r} is already registered by {old.factory.__module__}")
        METHODS[key] = MethodInfo(key, factory, help, family, contract, hidden, dict(fit_defaults or {}),
                                  {k: dict(v) for k, v in (presets or {}).items()})
        return factory

    return deco


class MethodPackageError(PipelineError):
    """A method package entry that is neither a module name nor a directory."""


_EXTRA_PACKAGES: list[Union[str, Path]] = []
_imported: dict[str, str] = {}   # module name -> where it came from


def _import_path_package(path: Path) -> str:
    """Import the package in directory ``path`` under its directory name; returns the name."""
    name = path.name
    if name in sys.modules:
        return name
    spec = importlib.util.spec_from_file_location(name, path / "__init__.py", submodule_search_locations=[str(path)])
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the method package at {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return name


def _path_packages(entry: Union[str, Path]) -> list[Path]:
    """A directory that is a package (has ``__init__.py``), or the packages directly inside it."""
    p = Path(entry)
    if (p / "__init__.py").is_file():
        return [p]
    if p.is_dir():
        return sorted(q for q in p.iterdir() if (q / "__init__.py").is_file() and not q.name.startswith(("_", ".")))
    raise MethodPackageError(f"method package {str(entry)!r} is neither a module name nor a directory")


def _import_one(entry: Union[str, Path]) -> None:
    if isinstance(entry, str) and os.sep not in entry and not Path(entry).exists():
        if entry not in _imported:
            importlib.import_module(entry)
            _imported[entry] = entry
        return
    for pkg in _path_packages(entry):
        key = str(pkg.resolve())
        if key not in _imported.values():
            _imported[_import_path_package(pkg)] = key


def _guarded(entry: Union[str, Path]) -> None:
    try:
        _import_one(entry)
    except MethodPackageError:
        raise
    except Exception as e:  # noqa: BLE001 - one broken package must not hide the others
        warnings.warn(f"steering method package {entry} failed to import ({e!r}); its methods are unavailable")


def method_packages() -> list[str]:
    """Module names of the built-in method packages (subpackages of :data:`METHODS_PACKAGE`)."""
    pkg = importlib.import_module(METHODS_PACKAGE)
    return [f"{METHODS_PACKAGE}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if m.ispkg]


def _entry_point_modules() -> list[str]:
    from importlib.metadata import entry_points

    try:
        return [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
    except Exception:  # noqa: BLE001 - broken metadata must not break the registry
        return []


def register_package(package: Union[str, os.PathLike]) -> None:
    """Add a method package: a module name (``"mylab.steering"``), a package directory, or a
    directory of packages. It is imported now if the registry was already read, else with the rest."""
    entry: Union[str, Path] = package if isinstance(package, str) and os.sep not in package \
        and not Path(package).exists() else Path(package)
    if entry not in _EXTRA_PACKAGES:
        _EXTRA_PACKAGES.append(entry)
    if _loaded:
        _guarded(entry)


def load_plugins() -> None:
    """Import every method package (once; packages registered later are imported when registered)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    env = [e for e in os.environ.get(METHOD_PATH_ENV, "").split(os.pathsep) if e.strip()]
    for entry in [*method_packages(), *env, *_EXTRA_PACKAGES, *_entry_point_modules()]:
        _guarded(entry)


def available_methods() -> dict[str, MethodInfo]:
    load_plugins()
    return dict(METHODS)


def available_gates() -> list[str]:
    """Kinds of the registered gate roles (``make_gate`` / ``make_steerer(gate=...)`` names)."""
    load_plugins()
    return sorted(k for k, c in ROLE_TYPES.items() if issubclass(c, Gate))


def fit_size(method: Optional[str], n: Optional[int]) -> Optional[int]:
    """How many fit examples to use: ``n`` when given, else the method's registered default
    (``register_method(..., fit_defaults={"n": ...})``: its validated size), else ``None`` (all).
    ``steerlens fit`` and pipeline specs both go through it."""
    if n is not None or not method:
        return n
    load_plugins()
    info = METHODS.get(method.lower())
    return None if info is None else (info.fit_defaults or {}).get("n")


def fit_gate_task(method: Optional[str], task: str, gate_task: Optional[str] = None) -> str:
    """The fit task whose gate data a steerer's gate is fitted on: ``gate_task`` when given, else
    the method's registered default for ``task`` (``register_method(..., fit_defaults={"gate_task":
    {task: gate task}})``: the data its validated gate was fitted on), else ``task`` itself.
    ``steerlens fit``, ``steerlens sweep`` and pipeline specs all go through it."""
    if gate_task is not None:
        return gate_task
    load_plugins()
    info = METHODS.get(method.lower()) if method else None
    return ((info.fit_defaults or {}).get("gate_task") or {}).get(task, task) if info is not None else task


def register_preset(method: str, name: str, params: dict) -> None:
    """Add (or replace) the preset ``name`` of the registered ``method`` (e.g. from another
    package; a method's own presets are given to :func:`register_method`)."""
    load_plugins()
    info = METHODS.get(method.lower())
    if info is None:
        raise PipelineError(f"unknown steering method {method!r}; available: {', '.join(sorted(METHODS))}")
    if name == "default":
        raise PipelineError("the 'default' preset is the factory's defaults; it cannot be redefined")
    info.presets = {**(info.presets or {}), name: dict(params)}


def preset_params(method: str, preset: Optional[str], params: Optional[dict] = None) -> dict:
    """The keyword arguments ``method``'s factory gets under ``preset``: the preset's values,
    then ``params`` on top (explicit options win; a dict-valued parameter such as REAL's ``vqae``
    is merged one level deep, so ``vqae={"epochs": 3}`` keeps the preset's other ``vqae`` keys).
    ``None`` and ``"default"`` add nothing (the factory's defaults). An unknown preset is a
    :class:`PipelineError` listing the method's presets."""
    params = dict(params or {})
    if preset is None or preset == "default":
        return params
    load_plugins()
    info = METHODS.get(str(method).lower())
    if info is None:
        raise PipelineError(f"unknown steering method {method!r}; available: {', '.join(sorted(METHODS))}")
    table = (info.presets or {}).get(str(preset))
    if table is None:
        raise PipelineError(f"method {info.name!r} has no preset {preset!r}; available: {', '.join(info.preset_names())}")
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in table.items()}
    for k, v in params.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_gate(gate: Any, **params: Any) -> Gate:
    """An unfitted gate role from its kind (e.g. ``"scs"``, ``"probe"``, ``"always_open"``) and
    parameters; a :class:`Gate` instance is returned as is (then ``params`` must be empty)."""
    if isinstance(gate, Gate):
        if params:
            raise PipelineError("gate parameters given together with a gate instance; set them on the instance")
        return gate
    load_plugins()
    cls = ROLE_TYPES.get(str(gate))
    if cls is None or not issubclass(cls, Gate):
        raise PipelineError(f"unknown gate {gate!r}; available: {', '.join(available_gates())}")
    try:
        return cls(**params)
    except TypeError as e:
        accepted = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "params")]
        raise PipelineError(f"gate {gate!r}: {e}; it takes {accepted}") from None


def make_steerer(method: str, *, gate: Any = None, gate_params: Optional[dict] = None, preset: Optional[str] = None,
                 **params: Any) -> Any:
    """An unfitted steerer for ``method`` (e.g. ``"caa"``, ``"repe"``, ``"iti"``, ``"real"``).

    ``params`` go to the method's factory; unknown ones are an error naming the accepted ones.
    ``preset`` (e.g. ``"paper"``; ``None`` / ``"default"``: the factory's defaults) starts from a
    named parameter set of the method (:func:`preset_params`); ``params`` override it. A steerer
    built from a preset other than ``default`` records its name in ``method_params["preset"]``.
    ``gate`` (a gate kind such as ``"scs"`` / ``"probe"``, or a :class:`Gate`) with
    ``gate_params`` gates any method: the factory's steerer gets that gate instead of its own
    (see :meth:`Steerer.with_gate`); fit it with ``fit(model, data, gate_data=...)``.
    """
    methods = available_methods()
    info = methods.get(str(method).lower())
    if info is None:
        raise PipelineError(f"unknown steering method {method!r}; available: {', '.join(sorted(methods))}")
    params = preset_params(info.name, preset, params)
    accepted = info.parameters()
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(info.factory).parameters.values())
    bad = [k for k in params if k not in accepted]
    if bad and not has_var_kw:
        raise PipelineError(f"method {info.name!r} does not take {bad}; it takes {sorted(accepted)}")
    st = info.factory(**params)
    if preset not in (None, "default"):
        st.method_params = {**st.method_params, "preset": str(preset)}
    if gate is None:
        if gate_params:
            raise PipelineError("gate_params given without gate=")
        return st
    return st.with_gate(make_gate(gate, **(gate_params or {})))


__all__ = ["register_method", "register_preset", "preset_params", "make_steerer", "fit_size", "fit_gate_task", "make_gate", "available_gates", "available_methods", "METHODS",
           "MethodInfo", "load_plugins", "register_package", "method_packages", "METHODS_PACKAGE", "METHOD_PATH_ENV"]
