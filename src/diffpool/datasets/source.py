"""Any PyG dataset as one indexable collection of graphs, with the splits it brings.

:func:`resolve_dataset` takes what a user gives :class:`~diffpool.training.GraphDataModule`
(a dataset object, a list of :class:`~torch_geometric.data.Data`, a Hydra ``_target_`` spec,
or one dataset per split) and returns the graphs and, where the dataset defines them, its own
train / val / test indices. :func:`graph_targets` reads every graph's target at once.
"""

from __future__ import annotations

import inspect
import socket
import urllib.error
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.transforms import Compose

from diffpool.datasets.splits import FoldSplit, checked_split
from diffpool.utils import targets

#: a dataset's arguments that take a transform, which a spec may give as a ``_target_`` spec
TRANSFORM_ARGS = ("transform", "pre_transform")

#: the keys of a dataset's own split (``get_idx_split()`` says ``valid``, OGB style)
SPLIT_KEYS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


class DataUnavailableError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable here."""


class GraphList(Sequence):
    """Several datasets (or lists of graphs) as one sequence, in order."""

    def __init__(self, parts: Sequence[Sequence[Data]]):
        self.parts = list(parts)
        self.offsets = torch.tensor([0, *(len(p) for p in self.parts)]).cumsum(0)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, idx: int) -> Data:
        if not 0 <= idx < len(self):
            raise IndexError(f"graph {idx} out of range for {len(self)} graphs")
        part = int(torch.searchsorted(self.offsets, idx, right=True)) - 1
        return self.parts[part][idx - int(self.offsets[part])]


def instantiate_dataset(spec: Mapping[str, Any], **extra: Any):
    """Build a dataset from a ``_target_`` spec (a class or function and its arguments).
    Inside :func:`diffpool.utils.targets.reading` (a spec read from a file), only a dataset
    of the package (:data:`~diffpool.utils.targets.REGISTRIES`), or a name the reader trusts.

    A download that fails (no network) is a :class:`DataUnavailableError` that says where the
    files go; a dataset asking a question on the console (OGB does) is one as well.
    """
    spec = dict(spec)
    target = spec.pop("_target_", None)
    if not target:
        raise ValueError(f"a dataset spec needs a '_target_' (a class or function), got {spec}")
    targets.check(spec, "dataset")
    factory = targets.resolve(target, "dataset")
    kwargs = {k: as_transform(v) if k in TRANSFORM_ARGS else v
              for k, v in spec.items() if not k.startswith("_")}  # fmt: skip
    return call_dataset(factory, target, **{**kwargs, **extra})


def as_transform(value):
    """A transform, built from a ``_target_`` spec (a list of them: composed, in order)."""
    if value is None or callable(value):
        return value
    if isinstance(value, Mapping):
        return targets.build(value, "transform")
    if isinstance(value, Sequence) and not isinstance(value, str):
        parts = [as_transform(v) for v in value if v is not None]
        return Compose(parts) if len(parts) > 1 else (parts[0] if parts else None)
    raise TypeError(f"transform must be a callable or a '_target_' spec, got {value!r}")


def call_dataset(factory, target: str, **kwargs: Any):
    """``factory(**kwargs)``, a failed download or a console question turned into a
    :class:`DataUnavailableError` that names ``target`` and where its files go."""
    where = kwargs.get("root", "its root folder")
    try:
        return factory(**kwargs)
    except EOFError as err:  # input() without a console
        raise DataUnavailableError(
            f"{target} asked a question on the console while loading from {where} (an "
            "incomplete or outdated copy?): remove or complete that folder"
        ) from err
    except Exception as err:
        if not _network_error(err):
            raise
        raise DataUnavailableError(
            f"{target} is not in {where} and could not be downloaded ({err}): put its files "
            f"there (PyG datasets read {where}/raw/ or their processed/ folder) or run once "
            "where the internet is reachable"
        ) from err


#: the modules of the HTTP clients datasets download with (PyG: fsspec / aiohttp, OGB: urllib)
NETWORK_MODULES = ("aiohttp", "requests", "urllib3", "fsspec.implementations.http")


def _network_error(err: BaseException | None) -> bool:
    """Whether ``err`` (or what caused it) is a failed connection or download."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(
            err, TimeoutError | urllib.error.URLError | socket.gaierror | ConnectionError
        ):
            return True
        if type(err).__module__.startswith(NETWORK_MODULES):
            return True
        err = err.__cause__ or err.__context__
    return False


def _accepts(target, name: str) -> bool:
    factory = targets.resolve(target, "dataset")
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _as_graphs(value, what: str):
    if isinstance(value, Mapping) and "_target_" in value:
        return instantiate_dataset(value)
    if isinstance(value, Data):
        raise TypeError(f"{what} is a single graph: pass a dataset or a list of graphs")
    if not hasattr(value, "__len__") or not hasattr(value, "__getitem__"):
        raise TypeError(
            f"{what} must be a PyG Dataset, a list of Data or a '_target_' spec, got "
            f"{type(value).__name__}"
        )
    return value


def _own_split(dataset) -> dict[str, Tensor]:
    get = getattr(dataset, "get_idx_split", None)
    if get is None:
        raise ValueError(
            f"split='dataset' takes the dataset's own split, but {type(dataset).__name__} has "
            "no get_idx_split() and was not given per split (a {'train', 'val', 'test'} "
            "mapping, or a spec whose class takes split=): use split='kfold' or split='file'"
        )
    parts = get()
    found = {}
    for key, names in SPLIT_KEYS.items():
        name = next((n for n in names if n in parts), None)
        if name is None:
            raise ValueError(f"get_idx_split() of {type(dataset).__name__} has no {key!r} set")
        found[key] = torch.as_tensor(parts[name], dtype=torch.long).view(-1)
    return found


def resolve_dataset(
    dataset, split: str = "kfold", split_names: Mapping[str, str] | None = None
) -> tuple[Any, FoldSplit | None]:
    """The graphs of ``dataset`` and, with ``split="dataset"``, the dataset's own split.

    ``dataset`` is a PyG ``Dataset`` (or any sequence of ``Data``), a ``_target_`` spec, or,
    with ``split="dataset"``, a ``{"train", "val", "test"}`` mapping of datasets or specs (the
    graphs are then concatenated in that order). A spec whose class takes ``split`` (e.g.
    PyG's ``ZINC``) is built once per split, with ``split_names`` (default ``train``,
    ``val``, ``test``); a dataset with ``get_idx_split()`` (OGB's) gives its indices.
    """
    names = {"train": "train", "val": "val", "test": "test", **(split_names or {})}
    per_split = None
    if isinstance(dataset, Mapping) and "_target_" not in dataset:
        if split != "dataset" or set(dataset) != {"train", "val", "test"}:
            raise ValueError(
                "a mapping of datasets must hold 'train', 'val' and 'test' and go with "
                f"split='dataset'; got keys {sorted(dataset)} with split={split!r}"
            )
        per_split = {k: _as_graphs(dataset[k], f"dataset[{k!r}]") for k in ("train", "val", "test")}
    elif (
        split == "dataset"
        and isinstance(dataset, Mapping)
        and _accepts(dataset["_target_"], "split")
    ):
        per_split = {
            k: instantiate_dataset(dataset, split=names[k]) for k in ("train", "val", "test")
        }
    if per_split is not None:
        sizes = [len(per_split[k]) for k in ("train", "val", "test")]
        bounds = torch.tensor([0, *sizes]).cumsum(0)
        parts = [torch.arange(int(bounds[i]), int(bounds[i + 1])) for i in range(3)]
        graphs = GraphList([per_split[k] for k in ("train", "val", "test")])
        graphs.name = getattr(per_split["train"], "name", None) or type(per_split["train"]).__name__
        for attr in ("task_type", "eval_metric", "num_tasks"):
            if hasattr(per_split["train"], attr):
                setattr(graphs, attr, getattr(per_split["train"], attr))
        return graphs, FoldSplit(train=parts[0], val=parts[1], test=parts[2])
    graphs = _as_graphs(dataset, "dataset")
    if len(graphs) == 0:
        raise ValueError("the dataset holds no graphs")
    if split == "dataset":
        where = f"get_idx_split() of {dataset_name(graphs)}"
        return graphs, checked_split(_own_split(graphs), len(graphs), where)
    return graphs, None


def dataset_name(dataset, default: str = "dataset") -> str:
    """A dataset's name: its ``name`` attribute, else its class name."""
    name = getattr(dataset, "name", None)
    if isinstance(name, str) and name:
        return name
    return default if isinstance(dataset, list | tuple) else type(dataset).__name__


def graph_targets(dataset) -> Tensor:
    """Every graph's target as ``[num_graphs, T]``, read at once from an in-memory dataset's
    storage where possible (without a transform, which may change them).

    Raises:
        ValueError: a graph without ``y``, or targets of different sizes.
    """
    if isinstance(dataset, InMemoryDataset) and dataset.transform is None:
        y = getattr(dataset, "y", None)  # PyG's stacked attribute of the graphs, in order
        if y is None:
            raise ValueError(f"{dataset_name(dataset)} has no graph targets (y)")
        if isinstance(y, Tensor) and y.size(0) == len(dataset):
            return y.view(len(dataset), -1)
    ys = []
    for i in range(len(dataset)):
        y = getattr(dataset[i], "y", None)
        if y is None:
            raise ValueError(f"graph {i} of {dataset_name(dataset)} has no target (y)")
        ys.append(torch.as_tensor(y).reshape(-1))
    sizes = {y.numel() for y in ys}
    if len(sizes) > 1:
        raise ValueError(
            f"the graphs of {dataset_name(dataset)} have targets of different sizes "
            f"{sorted(sizes)}: graph-level tasks need one target row per graph"
        )
    return torch.stack(ys)
