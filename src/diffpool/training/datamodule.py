"""Lightning data modules: any PyG dataset with a split strategy (:class:`GraphDataModule`)
and the TU benchmarks by name (:class:`TUDataModule`)."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Dataset
from torch_geometric.loader import DataLoader

from diffpool.datasets.ogb import ogb_evaluator
from diffpool.datasets.source import as_transform, dataset_name, graph_targets, resolve_dataset
from diffpool.datasets.splits import FoldSplit, fold_split, load_split_file, split_file_folds
from diffpool.datasets.tu import load_tu
from diffpool.training.sampler import GraphBatchSampler
from diffpool.training.tasks import TargetError, Task, infer_task, ogb_task, target_matrix

log = logging.getLogger(__name__)

#: what :meth:`GraphDataModule.predict_dataloader` can give
PREDICT_SPLITS = ("test", "val", "train", "all")
#: the settings that one kind of split reads (given for another split: an error; a run stored
#: before that was an error may hold them, unread)
READ_BY_SPLIT = {"val_ratio": "kfold", "inner": "file"}


def unread_by_split(settings) -> set[str]:
    """The settings of :data:`READ_BY_SPLIT` that the split of a data config (a mapping with
    ``split``, default ``"kfold"``) does not read."""
    split = settings.get("split", "kfold")
    return {name for name, reader in READ_BY_SPLIT.items() if split != reader}


def _plain(value):
    """Config nodes and paths as plain data (checkpoints load with ``weights_only=True``)."""
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _width(tensor: torch.Tensor) -> int:
    return 1 if tensor.dim() == 1 else int(tensor.size(-1))


def followed_by(data: Mapping, transform: Callable | None) -> dict:
    """The data module spec ``data`` with ``transform`` (a model's, e.g. DiffPool-Det's
    clusters) applied after its own."""
    data = dict(data)
    steps = [t for t in (data.pop("transform", None), transform) if t is not None]
    return {**data, "transform": steps or None}


def _as_transform(value) -> Callable | None:
    """A transform, built from a ``_target_`` spec (a list of them: composed, in order)."""
    return as_transform(_plain(value))


class GraphDataModule(LightningDataModule):
    r"""Any PyG dataset for graph-level learning: its split, its task and the loaders.

    :meth:`val_dataloader` gives the validation set, then the test set (``"heldout"``, the
    paper protocol's curve); :attr:`val_stages` names them. Every graph carries ``graph_id``,
    its index in the dataset. The task (:mod:`~diffpool.training.tasks`) is inferred from
    the targets where that is unambiguous (OGB datasets declare theirs).

    Args:
        dataset (Dataset, Sequence[Data] or Mapping): A PyG dataset, a list of graphs, a
            ``_target_`` spec of one, or (``split="dataset"``) a ``{"train", "val", "test"}``
            mapping of them.
        split (str, optional): ``"kfold"`` (fold ``fold`` of ``num_folds``-fold CV tests,
            ``val_ratio`` of the rest validates; stratified for classes), ``"dataset"``
            (``get_idx_split()``, a spec whose class takes ``split=``, or the mapping) or
            ``"file"`` (:func:`~diffpool.datasets.load_split_file` of ``split_file``, its
            model-selection split ``inner``). (default: :obj:`"kfold"`)
        fold (int, optional): The test fold. (default: :obj:`0`)
        num_folds (int, optional): (default: :obj:`10`; a split file's own count)
        seed (int, optional): Seed of the folds and the training order. (default: :obj:`0`)
        val_ratio (float, optional): Share of the training folds that validates; ``0``: none
            (the paper protocol only); ``split="kfold"`` only. (default: :obj:`0.1`)
        split_file (str, optional): The split file of ``split="file"``. (default: :obj:`None`)
        inner (int, optional): The split file's model-selection split (Errica et al.'s
            ``inner``); ``split="file"`` only. (default: :obj:`0`)
        split_names (Mapping, optional): The ``split=`` values of ``train``, ``val`` and
            ``test`` for a spec built per split. (default: those names)
        task (str, optional): The task. (default: inferred)
        metric (str, optional): The selection metric. (default: the task's, OGB's for OGB)
        node_encoder (Mapping, optional): ``_target_`` spec of a module that embeds
            categorical ``x``; ``edge_encoder`` the same for ``edge_attr``.
            (default: :obj:`None`)
        edge_features (bool, optional): Give ``edge_attr`` to encoders that take it.
            (default: :obj:`True`)
        batch_size (int, optional): Graphs per step and device. (default: :obj:`20`)
        num_workers (int, optional): Loader worker processes. (default: :obj:`0`)
        transform (callable, optional): Applied to every graph after the dataset's own, also
            to the graphs the features, targets and sizes are read from; a ``_target_`` spec
            of one (PyG's transforms), or a list of them, applied in order.
            (default: :obj:`None`)
        predict_split (str, optional): What :meth:`predict_dataloader` gives, one of
            :data:`PREDICT_SPLITS`. (default: :obj:`"test"`)
        name (str, optional): The name in logs and results. (default: the dataset's)
    """

    def __init__(
        self,
        dataset: Dataset | Sequence | Mapping | None = None,
        split: str = "kfold",
        fold: int = 0,
        num_folds: int = 10,
        seed: int = 0,
        val_ratio: float = 0.1,
        split_file: str | os.PathLike | None = None,
        inner: int = 0,
        split_names: Mapping[str, str] | None = None,
        task: str | None = None,
        metric: str | None = None,
        node_encoder: Mapping | None = None,
        edge_encoder: Mapping | None = None,
        edge_features: bool = True,
        batch_size: int = 20,
        num_workers: int = 0,
        transform: Callable | Mapping | Sequence | None = None,
        predict_split: str = "test",
        name: str | None = None,
    ):
        super().__init__()
        if predict_split not in PREDICT_SPLITS:
            raise ValueError(
                f"predict_split must be one of {PREDICT_SPLITS}, got {predict_split!r}"
            )
        if split not in ("kfold", "dataset", "file"):
            raise ValueError(f"split must be 'kfold', 'dataset' or 'file', got {split!r}")
        if split == "dataset" and fold != 0:
            raise ValueError(f"split='dataset' has one split: fold must be 0, got {fold}")
        if split == "file" and not split_file:
            raise ValueError("split='file' needs split_file (the path of the split file)")
        if not 0.0 <= val_ratio < 1.0:
            raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
        # a setting the split does not read is an error, not a run that ignores it
        if split != READ_BY_SPLIT["val_ratio"] and val_ratio != 0.1:
            raise ValueError(
                f"val_ratio={val_ratio} sets the validation share of split='kfold' only: "
                f"split={split!r} takes its validation set from the "
                f"{'split file' if split == 'file' else 'dataset'}"
            )
        if split != READ_BY_SPLIT["inner"] and inner != 0:
            raise ValueError(f"inner={inner} picks a split file's model-selection split: it "
                             f"needs split='file', got split={split!r}")  # fmt: skip
        # the arguments of this class and its subclasses' (Lightning collects both)
        self.save_hyperparameters(logger=False, ignore=["transform", "dataset"])
        self.source = _plain(dataset)
        if isinstance(self.source, Mapping) and "_target_" in self.source:
            self.hparams["dataset"] = self.source  # a spec rebuilds the data
        self.hparams.update({key: _plain(value) for key, value in self.hparams.items()})
        self.node_encoder, self.edge_encoder = _plain(node_encoder), _plain(edge_encoder)
        self.edge_features, self.name = edge_features, name
        self.transform = _as_transform(transform)
        self.fold, self.num_folds, self.seed = fold, num_folds, seed
        self.batch_size, self.num_workers = batch_size, num_workers
        self.dataset: IndexedDataset | None = None
        self.split: FoldSplit | None = None
        self.task: Task | None = None
        self.ogb_name: str | None = None

    def _load(self) -> tuple[Dataset | Sequence, FoldSplit | None]:
        """The graphs and, with ``split="dataset"``, their own split."""
        if self.source is None:
            raise ValueError(f"{type(self).__name__} needs a dataset")
        return resolve_dataset(self.source, self.hparams.split, self.hparams.split_names)

    def prepare_data(self) -> None:
        if self.dataset is None:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        """Load the dataset (once), decide the task and split it."""
        if self.dataset is not None:
            return
        graphs, own = self._load()
        self.name = self.name or dataset_name(graphs)
        dataset = IndexedDataset(graphs, self.transform)  # the graphs as the loaders give them
        try:
            targets = target_matrix(graph_targets(graphs if self.transform is None else dataset))
        except ValueError as err:
            raise TargetError(f"{err}: graph-level tasks need a target y per graph") from None
        declared, task_type = None, getattr(graphs, "task_type", None)
        if isinstance(task_type, str):
            declared = ogb_task(task_type, int(getattr(graphs, "num_tasks", targets.size(1))))
        hp = self.hparams
        task, size, reason = infer_task(targets, hp.task, declared, self.name)
        metric, eval_metric = hp.metric, getattr(graphs, "eval_metric", None)
        if isinstance(eval_metric, str) and self.name.startswith("ogbg-"):
            self.ogb_name = self.name
            if metric is None and eval_metric in Task(task, size).metric_names:
                metric = eval_metric
        self.task = Task(task, size, metric=metric)
        if hp.split == "dataset":
            self.split, self.num_folds = own, 1  # one split: its fold 0 of 1
        elif hp.split == "file":
            self.num_folds = split_file_folds(hp.split_file)
            self.split = load_split_file(hp.split_file, len(graphs), self.fold, hp.inner)
        else:
            # the package's own folds: the archived runs were trained on them
            classes = task in ("multiclass", "binary")
            labels = targets[:, 0] if classes else torch.zeros(len(graphs), dtype=torch.long)
            self.split = fold_split(labels, self.fold, self.num_folds, self.seed, hp.val_ratio)
        self._check_features(dataset[0])
        log.info("%s: %s task (%s), %d outputs, selection metric val/%s",
                 self.name, task, reason, size, self.task.metric)  # fmt: skip
        self.dataset = dataset

    def _check_features(self, sample) -> None:
        x = getattr(sample, "x", None)
        if x is None:
            raise ValueError(
                f"the graphs of {self.name} have no node features (x): add them "
                "with a transform (e.g. torch_geometric.transforms.OneHotDegree)"
            )
        if not x.is_floating_point() and self.node_encoder is None:
            raise ValueError(
                f"the node features of {self.name} are categorical ({x.dtype}): "
                "give a node_encoder (OGB's AtomEncoder, diffpool.nn.CategoricalEncoder)"
            )
        edge_attr = getattr(sample, "edge_attr", None) if self.edge_features else None
        if edge_attr is not None and not edge_attr.is_floating_point() and not self.edge_encoder:
            raise ValueError(
                f"the edge features of {self.name} are categorical ({edge_attr.dtype}): "
                "give an edge_encoder or pass edge_features=false"
            )

    def _require_setup(self) -> IndexedDataset:
        if self.dataset is None:
            self.setup()
        return self.dataset

    @property
    def num_features(self) -> int:
        """The width of ``x`` as the loaders give it (before any ``node_encoder``)."""
        return _width(self._require_setup()[0].x)

    @property
    def edge_dim(self) -> int | None:
        """The width of the ``edge_attr`` given to the encoders (:obj:`None`: none)."""
        edge_attr = getattr(self._require_setup()[0], "edge_attr", None)
        return _width(edge_attr) if self.edge_features and edge_attr is not None else None

    @property
    def num_classes(self) -> int:
        """The model's output size: the task's ``num_outputs``."""
        self._require_setup()
        return self.task.num_outputs

    @property
    def max_num_nodes(self) -> int:
        """The number of nodes of the largest graph in the whole dataset (as the loaders
        give them: after the transforms, which may add or drop nodes)."""
        dataset = self._require_setup()
        base = dataset.base
        slices = getattr(base, "slices", None)  # an InMemoryDataset's: read at once
        stored = dataset.transform is None and getattr(base, "transform", None) is None
        if stored and isinstance(base, Dataset) and isinstance(slices, dict) and "x" in slices:
            sizes = slices["x"][1:] - slices["x"][:-1]
            return int(sizes[list(base.indices())].max())
        return max(int(dataset[i].num_nodes) for i in range(len(dataset)))

    @property
    def evaluator(self):
        """OGB's ``Evaluator`` for an OGB dataset, else :obj:`None`."""
        self._require_setup()
        return None if self.ogb_name is None else ogb_evaluator(self.ogb_name)

    @property
    def val_stages(self) -> tuple[str, ...]:
        """The loaders of :meth:`val_dataloader`: ``"val"`` unless the validation set is
        empty (``val_ratio=0``), then ``"heldout"`` (the test set)."""
        self._require_setup()
        return ("val", "heldout") if len(self.split.val) else ("heldout",)

    def _loader(self, part: str, shuffle: bool = False) -> DataLoader:
        dataset = self._require_setup()
        if part == "all":
            indices = torch.arange(len(dataset))
        else:
            indices = getattr(self.split, "test" if part == "heldout" else part).sort().values
        if not len(indices):
            raise ValueError(f"the {part} set of {self.name} is empty (val_ratio=0, or a split "
                             "without one): choose another split of it")  # fmt: skip
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = GraphBatchSampler(
            len(indices), self.batch_size, shuffle, self.seed, num_replicas=world, rank=rank
        )
        return DataLoader(
            dataset[indices],
            batch_sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(stage) for stage in self.val_stages]

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The graphs of :attr:`predict_split`, in dataset order."""
        return self._loader(self.hparams.predict_split)

    def describe(self) -> str:
        """One line for the log: the dataset, the split and the feature sizes."""
        fold = f"fold {self.fold}/{self.num_folds}"
        where = {"kfold": fold, "file": f"split file {self.hparams.split_file}, {fold}",
                 "dataset": "its own split"}[self.hparams.split]  # fmt: skip
        split, edges = self.split, f", {self.edge_dim} edge features" if self.edge_dim else ""
        return (
            f"{self.name} {where}: {len(split.train)} graphs train, {len(split.val)} "
            f"validation, {len(split.test)} test; {self.num_features} node features{edges}"
        )


class TUDataModule(GraphDataModule):
    r"""A :class:`GraphDataModule` of a TU dataset by name, read by
    :func:`~diffpool.datasets.load_tu`: stratified k-fold CV or a split file.

    Args:
        name (str): The TU dataset, in any case.
        root (str, optional): Folder of ``NAME.zip`` archives and ``NAME/`` dataset folders.
            (default: :obj:`"data/TU"`)
        node_features (str, optional): As :func:`~diffpool.datasets.load_tu` takes it, as are
            ``fallback_features``, ``max_degree`` and ``download``. (default: :obj:`"auto"`)
        edge_features (bool, optional): Give the edge labels to the encoder; one that takes
            none is then an error. (default: :obj:`False`)
        split (str, optional): ``"kfold"`` or ``"file"``. (default: :obj:`"kfold"`)
        **kwargs (optional): The other arguments of :class:`GraphDataModule`.
    """

    def __init__(
        self,
        name: str,
        root: str | os.PathLike = "data/TU",
        *,
        node_features: str = "auto",
        fallback_features: str = "degree",
        max_degree: int = 64,
        download: bool = False,
        edge_features: bool = False,
        split: str = "kfold",
        **kwargs,
    ):
        if split not in ("kfold", "file"):
            raise ValueError(f"split must be 'kfold' or 'file' (a TU dataset has no split of "
                             f"its own), got {split!r}")  # fmt: skip
        super().__init__(split=split, edge_features=edge_features, **kwargs)

    def _load(self) -> tuple[Dataset, None]:
        hp = self.hparams
        return load_tu(hp.name, hp.root, hp.node_features, hp.fallback_features,
                       hp.max_degree, hp.download), None  # fmt: skip

    @property
    def edge_features_required(self) -> bool:
        """Edge features asked for: an encoder that takes none is an error."""
        return bool(self.edge_features)


class IndexedDataset(Dataset):
    """``base`` with one more ``transform``, every graph a copy carrying ``graph_id``."""

    def __init__(self, base: Dataset | Sequence, transform: Callable | None = None):
        super().__init__(transform=transform)
        self.base = base

    def len(self) -> int:
        return len(self.base)

    def get(self, idx: int):
        data = copy.copy(self.base[idx])  # a list given by the user stays as it was
        data.graph_id = torch.tensor([idx])
        return data
