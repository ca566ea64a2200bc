"""Building objects from ``_target_`` specs, where a spec read from a file is data.

A spec is a mapping with a ``_target_`` (a dotted name) and the keyword arguments of the call,
as Hydra writes it. Specs reach the package two ways:

* from the user, at the call: a config on the command line or a spec passed in Python. The
  user's own classes are theirs to trust, so any name is imported and called;
* from a file: a checkpoint's hyperparameters, a run's ``results.json``. A file is data, so a
  name is built only when it is in a registry of the package (:data:`REGISTRIES`): the
  package's models, encoders, dataset loaders and data modules, the classes of ``torch.optim``
  and ``torch.optim.lr_scheduler``, ``torch.nn``'s modules, PyG's transforms.
  Anything else is refused *before it is imported* (importing a module runs its code) with an
  :class:`UntrustedTargetError` that names the file, the name and how to trust it: by naming
  it again at the call (``trust=[...]``).

Hydra's ``instantiate`` imports whatever a spec names (its one guard, a short blocklist, lets
``pathlib.Path.write_text`` through), so specs read from files are built here instead.
:func:`reading` marks the code that builds from a file; :func:`build` and :func:`resolve`
check every name against the registries while it is active, and trust the caller otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class UntrustedTargetError(ValueError):
    """A file names a ``_target_`` that is in none of the package's registries."""


@dataclass(frozen=True)
class Registry:
    """The names of one kind of object that may be built from a file: the public attributes
    of ``modules`` that pass ``accepts`` (``names``: only those)."""

    what: str
    modules: tuple[str, ...]
    accepts: Callable[[Any], bool] = callable
    names: frozenset[str] | None = None

    def describe(self) -> str:
        if self.names is not None:
            return ", ".join(sorted(f"{m}.{n}" for m in self.modules for n in self.names))
        return ", ".join(f"{m}.<{self.what}>" for m in self.modules)


def _subclass_of(module: str, name: str) -> Callable[[Any], bool]:
    def accepts(obj: Any) -> bool:
        base = getattr(importlib.import_module(module), name)
        return isinstance(obj, type) and issubclass(obj, base)

    return accepts


def _scheduler(obj: Any) -> bool:
    from torch.optim import lr_scheduler

    return isinstance(obj, type) and issubclass(
        obj, (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)
    )


#: kind -> what may be built from a file
REGISTRIES: dict[str, tuple[Registry, ...]] = {
    "model": (
        Registry(
            "model",
            ("diffpool.models",),
            names=frozenset({"build_model", "DiffPoolNet", "GlobalPoolNet"}),
        ),
    ),
    "encoder": (
        Registry("encoder", ("diffpool.nn",), names=frozenset({"CategoricalEncoder"})),
        Registry(
            "encoder",
            ("ogb.graphproppred.mol_encoder",),
            names=frozenset({"AtomEncoder", "BondEncoder"}),
        ),
        Registry("module", ("torch.nn",), _subclass_of("torch.nn", "Module")),
    ),
    "optimizer": (
        Registry("optimizer", ("torch.optim",), _subclass_of("torch.optim", "Optimizer")),
    ),
    "scheduler": (Registry("scheduler", ("torch.optim.lr_scheduler",), _scheduler),),
    # only the package's loaders, which check a dataset's processed files before PyG or OGB
    # read them (PyG unpickles processed/pre_transform.pt and pre_filter.pt, falls back to
    # unpickling data.pt, reads fsspec URLs as roots; several PyG datasets unpickle their raw
    # files): PyG's and OGB's classes themselves are built from a file only when trusted
    "dataset": (
        Registry(
            "dataset",
            ("diffpool.datasets",),
            names=frozenset({"load_tu", "load_ogb", "hierarchical_communities"}),
        ),
    ),
    "transform": (
        Registry(
            "transform",
            ("torch_geometric.transforms",),
            _subclass_of("torch_geometric.transforms", "BaseTransform"),
        ),
        Registry("transform", ("diffpool.transforms",), names=frozenset({"ClusterAssignment"})),
    ),
    "datamodule": (
        Registry(
            "data module",
            ("diffpool.training",),
            names=frozenset({"GraphDataModule", "TUDataModule"}),
        ),
    ),
}

#: the kind of a spec found under these keys of another spec (others: any kind)
NESTED_KINDS = {
    "model": "model",
    "dataset": "dataset",
    "node_encoder": "encoder",
    "edge_encoder": "encoder",
    "optimizer": "optimizer",
    "scheduler": "scheduler",
    "transform": "transform",
    "pre_transform": "transform",
}


@dataclass(frozen=True)
class _Source:
    """The file being read and the names its reader trusts."""

    path: str
    trusted: frozenset[str] = field(default_factory=frozenset)


_SOURCE: contextvars.ContextVar[_Source | None] = contextvars.ContextVar(
    "diffpool_spec_source", default=None
)


@contextlib.contextmanager
def reading(path: str | os.PathLike, trusted: Iterable[str] = ()) -> Iterator[None]:
    """Within this block, specs come from the file ``path``: :func:`build` and
    :func:`resolve` build only the names of :data:`REGISTRIES` and ``trusted`` (what the user
    named at this call)."""
    source = _Source(str(path), frozenset(trusted))
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def target_names(value: Any) -> set[str]:
    """Every ``_target_`` name in ``value`` (a spec, or any nesting of mappings and lists)."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        target = value.get("_target_")
        if isinstance(target, str):
            found.add(target)
        for item in value.values():
            found |= target_names(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found |= target_names(item)
    return found


def _registered(name: str, kind: str | None) -> Any | None:
    """The object ``name`` names if a registry of ``kind`` (any kind: :obj:`None`) holds it.
    Only the registries' own modules are imported."""
    module, _, attr = name.rpartition(".")
    if not module or not attr or attr.startswith("_"):
        return None
    kinds = REGISTRIES if kind is None else {kind: REGISTRIES[kind]}
    for registry in (r for rs in kinds.values() for r in rs):
        if module not in registry.modules:
            continue
        if registry.names is not None and attr not in registry.names:
            continue
        try:
            obj = getattr(importlib.import_module(module), attr)
        except ImportError as err:
            raise ImportError(f"{name} needs {module}, which is not installed ({err})") from err
        except AttributeError:
            continue
        if registry.accepts(obj):
            return obj
    return None


def _import(name: str) -> Any:
    """Hydra's ``_locate``: the object at a dotted path (modules imported as needed)."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            continue
        return obj
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ValueError(f"cannot import {name!r} ({err})") from err


def _refuse(name: str, kind: str | None, source: _Source) -> UntrustedTargetError:
    kinds = [kind] if kind is not None else list(REGISTRIES)
    allowed = "; ".join(r.describe() for k in kinds for r in REGISTRIES[k])
    return UntrustedTargetError(
        f"{source.path} names {kind or 'the object'} {name!r}, which is not in the package's "
        f"registries ({allowed}): a file is data, so nothing else it names is imported or "
        f"called. If you trust this file and {name!r}, name it again at the call: "
        f"trust=[{name!r}] (load_from_checkpoint, load_run; diffpool-train train=false), "
        f"trust={name} (diffpool-predict), --trust {name} (diffpool-viz)"
    )


def _not_a_name(target: Any, source: _Source) -> UntrustedTargetError:
    return UntrustedTargetError(
        f"{source.path} holds a _target_ that is not a name ({type(target).__name__}): a file "
        "names what it builds, and only names of the package's registries are built"
    )


def resolve(target: Any, kind: str | None = None) -> Any:
    """The callable a ``_target_`` names. Inside :func:`reading`, only a name of a registry
    of ``kind`` (:obj:`None`: any) or one the reader trusts; otherwise any importable name
    (a callable given itself is returned as it is).

    Raises:
        UntrustedTargetError: a name from a file that no registry holds.
        ValueError: a name that cannot be imported.
    """
    source = _SOURCE.get()
    if not isinstance(target, str):  # an object given in code; a file holds names only
        if source is not None:
            raise _not_a_name(target, source)
        if not callable(target):
            raise ValueError(f"a _target_ must be a dotted name or a callable, got {target!r}")
        return target
    found = _registered(target, kind)
    if found is not None:
        return found
    if source is not None and target not in source.trusted:
        raise _refuse(target, kind, source)
    return _import(target)


def check(spec: Any, kind: str | None = None) -> None:
    """Inside :func:`reading`: refuse a spec (and everything nested in it) that names what
    no registry holds, before anything is imported. Outside it: nothing to check."""
    source = _SOURCE.get()
    if source is None:
        return
    if isinstance(spec, Mapping) and "_target_" in spec:
        target = spec["_target_"]
        if not isinstance(target, str):  # a weights-only file can hold allowlisted classes
            raise _not_a_name(target, source)
        if target not in source.trusted and _registered(target, kind) is None:
            raise _refuse(target, kind, source)
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if key != "_target_" and isinstance(value, Mapping | list | tuple):
                check(value, NESTED_KINDS.get(key) if isinstance(key, str) else None)
    elif isinstance(spec, list | tuple):
        for value in spec:
            check(value)


def build(spec: Mapping[str, Any], kind: str | None = None, /, **extra: Any) -> Any:
    """Call the ``_target_`` of ``spec`` with its other entries and ``extra`` (entries whose
    key starts with ``_`` are Hydra's and ignored). Nested specs are passed on as data, as
    under Hydra's ``_recursive_: false``; inside :func:`reading` they are checked first."""
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ValueError(f"a spec must be a mapping with a '_target_', got {spec!r}")
    check(spec, kind)
    factory = resolve(spec["_target_"], kind)
    kwargs = {k: v for k, v in spec.items() if not str(k).startswith("_")}
    return factory(**{**kwargs, **extra})
