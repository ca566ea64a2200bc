"""Lightning data modules: any PyG dataset with a split strategy (:class:`GraphDataModule`),
and the TU benchmarks' stratified k-fold CV over offline copies (:class:`TUDataModule`)."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from omegaconf import DictConfig, OmegaConf
from torch_geometric.data import Dataset
from torch_geometric.loader import DataLoader

from diffpool.datasets.source import dataset_name, graph_targets, resolve_dataset
from diffpool.datasets.splits import FoldSplit, fold_split, load_split_file, split_file_folds
from diffpool.datasets.tu import load_tu
from diffpool.training.sampler import GraphBatchSampler
from diffpool.training.tasks import TargetError, Task, infer_task, ogb_task, target_matrix

log = logging.getLogger(__name__)

#: what :meth:`GraphDataModule.predict_dataloader` can give
PREDICT_SPLITS = ("test", "val", "train", "all")


def _plain(value):
    """Hydra's config nodes as plain data (what a checkpoint can hold)."""
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


class GraphDataModule(LightningDataModule):
    r"""Any PyG dataset for graph-level learning: a split strategy, the task, the loaders.

    ``dataset`` is a PyG ``Dataset`` or a list of :class:`~torch_geometric.data.Data`
    (Python), or a Hydra ``_target_`` spec that builds one (configs; stored in checkpoints).
    The ``split`` strategy decides which graphs train, validate and test:

    * ``"kfold"``: fold ``fold`` of ``num_folds``-fold cross-validation is the test set and
      ``val_ratio`` of the other folds validates, stratified by class for classification
      (the folds of :class:`TUDataModule`), plain k-fold otherwise;
    * ``"dataset"``: the dataset's own split: ``get_idx_split()`` (OGB), a spec whose class
      takes ``split=`` (PyG's ``ZINC``: built once per split, named by ``split_names``), or a
      ``{"train", "val", "test"}`` mapping of datasets;
    * ``"file"``: a published split file (:func:`~diffpool.datasets.load_split_file`: Errica
      et al.'s folds, ``inner`` picks the model-selection split, or one
      ``{"train", "val", "test"}`` object).

    The ``task`` (:mod:`diffpool.training.tasks`: ``multiclass``, ``binary``, ``multilabel``,
    ``regression``) is inferred from the targets where that is unambiguous (OGB datasets
    declare theirs) and logged; ``metric`` picks the selection metric among the task's (an
    OGB dataset's leaderboard metric by default). Categorical node or edge features (integer
    ``x`` / ``edge_attr``, e.g. atoms and bonds) need a ``node_encoder`` / ``edge_encoder``
    spec (OGB's ``AtomEncoder`` / ``BondEncoder``, :class:`~diffpool.nn.CategoricalEncoder`):
    the :class:`~diffpool.training.GraphClassifier` builds and trains them with the model.

    :meth:`val_dataloader` returns the validation set and the test set (``heldout``, logged
    every epoch: the curve the authors' protocol selects on); every graph carries
    ``graph_id``, its index in the dataset. Batches come from
    :class:`~diffpool.training.GraphBatchSampler` (under DDP every graph once per epoch).

    Args:
        dataset (Dataset, Sequence[Data] or Mapping): The graphs (see above).
        split (str, optional): ``"kfold"``, ``"dataset"`` or ``"file"``.
            (default: :obj:`"kfold"`)
        fold (int, optional): The test fold (``kfold``, ``file``); 0 with ``dataset``.
            (default: :obj:`0`)
        num_folds (int, optional): Folds of ``kfold``. (default: :obj:`10`)
        seed (int, optional): Seed of the folds and of the training order.
            (default: :obj:`0`)
        val_ratio (float, optional): Share of the training folds that validates (``kfold``);
            ``0``: none (the paper protocol only). (default: :obj:`0.1`)
        split_file (str, optional): The split file of ``split="file"``. (default: :obj:`None`)
        inner (int, optional): The model-selection split of an Errica-style file.
            (default: :obj:`0`)
        split_names (Mapping, optional): The ``split=`` value of each of ``train``, ``val``,
            ``test`` for a spec built per split. (default: the same names)
        task (str, optional): The task; :obj:`None` infers it. (default: :obj:`None`)
        metric (str, optional): The selection metric; :obj:`None`: the task's (or OGB's).
            (default: :obj:`None`)
        node_encoder (Mapping, optional): ``_target_`` spec of a module that maps ``x`` to
            dense features. (default: :obj:`None`)
        edge_encoder (Mapping, optional): The same for ``edge_attr``. (default: :obj:`None`)
        edge_features (bool, optional): Give ``edge_attr`` to the encoders that take edge
            features (``gine``, ``gat``, your own). (default: :obj:`True`)
        batch_size (int, optional): Graphs per step and device. (default: :obj:`20`)
        num_workers (int, optional): Loader worker processes. (default: :obj:`0`)
        transform (callable, optional): A transform applied to every graph after the
            dataset's own (e.g. DiffPool-Det's clusters). (default: :obj:`None`)
        predict_split (str, optional): What :meth:`predict_dataloader` gives: ``"test"``,
            ``"val"``, ``"train"`` or ``"all"``. (default: :obj:`"test"`)
        name (str, optional): The dataset's name in logs and results. (default: its
            ``name`` attribute or class name)
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
        transform: Callable | None = None,
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
        if split == "kfold" and not 0 <= fold < num_folds:
            raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
        if split == "dataset" and fold != 0:
            raise ValueError(f"split='dataset' has one split: fold must be 0, got {fold}")
        if split == "file" and not split_file:
            raise ValueError("split='file' needs split_file (the path of the split file)")
        if not 0.0 <= val_ratio < 1.0:
            raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        dataset = _plain(dataset)
        if type(self) is GraphDataModule:  # a subclass records its own arguments
            self.save_hyperparameters(logger=False, ignore=["transform", "dataset"])
            if isinstance(dataset, Mapping) and "_target_" in dataset:
                self.hparams["dataset"] = dict(dataset)  # a spec rebuilds the data
            # plain data only: checkpoints load with torch.load(weights_only=True)
            for key, value in list(self.hparams.items()):
                self.hparams[key] = _plain(value)
        self.source = dataset
        self.split_strategy, self.split_file, self.inner = split, split_file, inner
        self.split_names = dict(_plain(split_names) or {})
        self.task_name, self.metric_name = task, metric
        self.node_encoder, self.edge_encoder = _plain(node_encoder), _plain(edge_encoder)
        self.edge_features = edge_features
        self.name = name
        self.fold, self.num_folds, self.seed, self.val_ratio = fold, num_folds, seed, val_ratio
        self.batch_size, self.num_workers = batch_size, num_workers
        self.transform = transform
        self.predict_split = predict_split
        self.dataset: IndexedDataset | None = None
        self.split: FoldSplit | None = None
        self.task: Task | None = None
        self.ogb_name: str | None = None

    # -- data -------------------------------------------------------------------------------
    def _load(self) -> tuple[Any, FoldSplit | None]:
        """The graphs and the dataset's own split (``split="dataset"``)."""
        if self.source is None:
            raise ValueError(f"{type(self).__name__} needs a dataset")
        return resolve_dataset(self.source, self.split_strategy, self.split_names)

    def prepare_data(self) -> None:
        """Extract / process / download the dataset (rank 0), unless this process has it."""
        if self.dataset is None:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        """Load the dataset (once), decide the task and split it."""
        if self.dataset is not None:
            return
        graphs, own = self._load()
        self.name = self.name or dataset_name(graphs)
        where = f"{self.name}"
        try:
            targets = target_matrix(graph_targets(graphs))
        except ValueError as err:
            raise TargetError(f"{err}: graph-level tasks need a target y per graph") from None
        declared = None
        task_type = getattr(graphs, "task_type", None)
        if isinstance(task_type, str):
            declared = ogb_task(task_type, int(getattr(graphs, "num_tasks", targets.size(1))))
        task, size, reason = infer_task(targets, self.task_name, declared, where)
        metric = self.metric_name
        eval_metric = getattr(graphs, "eval_metric", None)
        if isinstance(eval_metric, str) and self.name.startswith("ogbg-"):
            self.ogb_name = self.name
            if metric is None and eval_metric in Task(task, size).metric_names:
                metric = eval_metric
        self.task = Task(task, size, metric=metric)
        self.split = self._split(targets, own, len(graphs))
        self._check_features(graphs[0])
        log.info(
            "%s: %s task (%s), %d outputs, selection metric val/%s",
            self.name, task, reason, size, self.task.metric,
        )  # fmt: skip
        self.dataset = IndexedDataset(graphs, self.transform)

    def _split(self, targets: torch.Tensor, own: FoldSplit | None, size: int) -> FoldSplit:
        if self.split_strategy == "dataset":
            return own
        if self.split_strategy == "file":
            self.num_folds = split_file_folds(self.split_file)
            return load_split_file(self.split_file, size, self.fold, self.inner)
        # diffpool.datasets.splits' own folds, not scikit-learn's StratifiedKFold: the archived
        # runs were trained on these folds (torch's randperm per class, dealt round-robin), and
        # no random_state of sklearn's numpy shuffle gives the same members (checked: ENZYMES)
        classes = self.task is not None and self.task.name in ("multiclass", "binary")
        labels = targets[:, 0] if classes else torch.zeros(size, dtype=torch.long)
        return fold_split(labels, self.fold, self.num_folds, self.seed, self.val_ratio)

    def _check_features(self, sample) -> None:
        x = getattr(sample, "x", None)
        if x is None:
            raise ValueError(
                f"the graphs of {self.name} have no node features (x): add them with a "
                "transform in the dataset (e.g. torch_geometric.transforms.OneHotDegree)"
            )
        if not x.is_floating_point() and self.node_encoder is None:
            raise ValueError(
                f"the node features of {self.name} are categorical ({x.dtype}): give a "
                "node_encoder that embeds them (e.g. {_target_: "
                "ogb.graphproppred.mol_encoder.AtomEncoder, emb_dim: 64} for OGB molecules, "
                "{_target_: diffpool.nn.CategoricalEncoder, ...} otherwise)"
            )
        edge_attr = getattr(sample, "edge_attr", None)
        if self.edge_features and edge_attr is not None:
            if not edge_attr.is_floating_point() and self.edge_encoder is None:
                raise ValueError(
                    f"the edge features of {self.name} are categorical ({edge_attr.dtype}): "
                    "give an edge_encoder (e.g. ogb's BondEncoder, diffpool.nn."
                    "CategoricalEncoder) or pass edge_features=false"
                )

    # -- facts the model needs --------------------------------------------------------------
    def _require_setup(self) -> IndexedDataset:
        if self.dataset is None:
            self.setup()
        return self.dataset

    @property
    def num_features(self) -> int:
        """The width of the node features ``x`` as the dataset gives them (before any
        ``node_encoder``)."""
        x = self._require_setup().base[0].x
        return 1 if x.dim() == 1 else int(x.size(-1))

    @property
    def edge_dim(self) -> int | None:
        """The width of the edge features given to the encoders (:obj:`None`: none)."""
        if not self.edge_features:
            return None
        edge_attr = getattr(self._require_setup().base[0], "edge_attr", None)
        if edge_attr is None:
            return None
        return 1 if edge_attr.dim() == 1 else int(edge_attr.size(-1))

    @property
    def num_classes(self) -> int:
        """The size of the model's output: classes, labels or target values (the task's
        ``num_outputs``)."""
        self._require_setup()
        return self.task.num_outputs

    @property
    def max_num_nodes(self) -> int:
        """The largest graph of the whole dataset: the reference of the fixed cluster count
        (``ratio`` times it), where the authors' code pads to a node cap instead."""
        base = self._require_setup().base
        slices = getattr(base, "slices", None)  # an InMemoryDataset's: read at once
        if isinstance(base, Dataset) and isinstance(slices, dict) and "x" in slices:
            sizes = slices["x"][1:] - slices["x"][:-1]
            return int(sizes[list(base.indices())].max())
        return max(int(base[i].num_nodes) for i in range(len(base)))

    @property
    def evaluator(self):
        """OGB's ``Evaluator`` of an OGB dataset (:obj:`None` for others): the test set is
        scored with it as well, under OGB's metric name."""
        self._require_setup()
        if self.ogb_name is None:
            return None
        from diffpool.datasets.ogb import ogb_evaluator

        return ogb_evaluator(self.ogb_name)

    # -- loaders ----------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, indices: torch.Tensor, shuffle: bool) -> DataLoader:
        dataset = self._require_setup()
        world, rank = self._world()
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
        self._require_setup()
        return self._loader(self.split.train, shuffle=True)

    @property
    def val_stages(self) -> tuple[str, ...]:
        """What each loader of :meth:`val_dataloader` is, in order: ``"val"`` (the validation
        set, absent when it is empty, e.g. ``val_ratio=0``) and ``"heldout"`` (the test set)."""
        if self.split is not None:
            return ("val", "heldout") if len(self.split.val) else ("heldout",)
        no_val = self.split_strategy == "kfold" and self.val_ratio == 0
        return ("heldout",) if no_val else ("val", "heldout")

    def val_dataloader(self) -> list[DataLoader]:
        self._require_setup()
        sets = {"val": self.split.val, "heldout": self.split.test}
        return [self._loader(sets[stage], False) for stage in self.val_stages]

    def test_dataloader(self) -> DataLoader:
        self._require_setup()
        return self._loader(self.split.test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The graphs of :attr:`predict_split`, in dataset order: ``"test"``, ``"val"``,
        ``"train"`` or ``"all"``. To predict on other graphs, pass a loader of them to
        ``Trainer.predict``."""
        if self.predict_split == "all":
            indices = torch.arange(len(self._require_setup()))
        else:
            self._require_setup()
            indices = getattr(self.split, self.predict_split)
        return self._loader(indices.sort().values, shuffle=False)

    def describe(self) -> str:
        """One line for the log: the dataset, the split and the feature sizes."""
        split = self.split
        where = {"kfold": f"fold {self.fold}/{self.num_folds}", "file": f"split file "
                 f"{self.split_file}, fold {self.fold}/{self.num_folds}",
                 "dataset": "its own split"}[self.split_strategy]  # fmt: skip
        edges = f", {self.edge_dim} edge features" if self.edge_dim else ""
        return (
            f"{self.name} {where}: {len(split.train)} graphs train, {len(split.val)} "
            f"validation, {len(split.test)} test; {self.num_features} node features{edges}"
        )

    def __repr__(self) -> str:
        where = (
            f"fold={self.fold}/{self.num_folds}"
            if self.split_strategy != "dataset"
            else "split='dataset'"
        )
        return (
            f"{type(self).__name__}('{self.name}', {where}, seed={self.seed}, "
            f"batch_size={self.batch_size})"
        )


class TUDataModule(GraphDataModule):
    r"""One fold of stratified ``num_folds``-fold cross-validation on a TU dataset: a
    :class:`GraphDataModule` over :func:`~diffpool.datasets.load_tu` (offline copies, the
    node-feature choice) with ``split="kfold"``, or one fold of a published split file
    (``split="file"``, ``split_file``, ``inner``: as :class:`GraphDataModule` reads them).

    The ``fold``-th fold is the test set; ``val_ratio`` of the other folds (stratified) is the
    validation set, the rest trains. Splits depend only on ``seed``, ``num_folds`` and
    ``fold``, so every job of a sweep over ``fold`` sees the same partition.

    :meth:`val_dataloader` returns two loaders, the validation set and the test fold: the
    test fold's accuracy after every epoch is the curve the authors' protocol (``paper``)
    selects its epoch on; the ``fair`` protocol selects on the validation set only.
    ``val_ratio=0`` is the authors' own split: no validation set, every other fold trains
    (90% of the graphs with 10 folds), and :meth:`val_dataloader` returns the test fold
    alone. Such runs have a ``paper`` result only; :attr:`val_stages` names the loaders.

    The task is inferred as for any dataset (the TU benchmarks' class labels: multiclass).
    Edge labels are not given to the encoders unless ``edge_features=True``.

    Args:
        name (str): TU dataset name, in any case (see :func:`~diffpool.datasets.load_tu`).
        root (str, optional): Folder of ``NAME.zip`` archives and ``NAME/`` dataset folders.
            (default: :obj:`"data/TU"`)
        fold (int, optional): Test fold. (default: :obj:`0`)
        num_folds (int, optional): (default: :obj:`10`)
        seed (int, optional): Seed of the splits and of the training order.
            (default: :obj:`0`)
        val_ratio (float, optional): Share of the training folds held out for validation;
            ``0`` holds out none (the paper protocol only). (default: :obj:`0.1`)
        batch_size (int, optional): Graphs per step and device. (default: :obj:`20`)
        num_workers (int, optional): Loader worker processes. (default: :obj:`0`)
        node_features (str, optional): ``"auto"`` (what the dataset has, logged),
            ``"labels"``, ``"attributes"`` or ``"both"``. (default: :obj:`"auto"`)
        fallback_features (str, optional): ``"degree"`` or ``"constant"`` for datasets without
            node features. (default: :obj:`"degree"`)
        max_degree (int, optional): Cap of the one-hot degree fallback. (default: :obj:`64`)
        download (bool, optional): Allow PyG's download when no offline copy exists.
            (default: :obj:`False`)
        transform (callable, optional): A transform applied to every graph after the feature
            transform. (default: :obj:`None`)
        predict_split (str, optional): What :meth:`predict_dataloader` gives: ``"test"``,
            ``"val"``, ``"train"`` or ``"all"``. (default: :obj:`"test"`)
        task (str, optional): The task, where not inferred. (default: :obj:`None`)
        metric (str, optional): The selection metric. (default: the task's)
        edge_features (bool, optional): Give the edge labels to the model's encoder; one that
            takes no edge features is then an error (:attr:`edge_features_required`), as
            ``edge_dim=`` with it is. (default: :obj:`False`)
        split (str, optional): ``"kfold"`` (the folds above) or ``"file"`` (a published
            split file: :func:`~diffpool.datasets.load_split_file`, Errica et al.'s folds or
            one ``{"train", "val", "test"}`` object; ``fold`` picks its fold, ``num_folds``
            is the file's). (default: :obj:`"kfold"`)
        split_file (str, optional): The split file of ``split="file"``. (default: :obj:`None`)
        inner (int, optional): The model-selection split of an Errica-style file.
            (default: :obj:`0`)
    """

    def __init__(
        self,
        name: str,
        root: str | os.PathLike = "data/TU",
        fold: int = 0,
        num_folds: int = 10,
        seed: int = 0,
        val_ratio: float = 0.1,
        batch_size: int = 20,
        num_workers: int = 0,
        node_features: str = "auto",
        fallback_features: str = "degree",
        max_degree: int = 64,
        download: bool = False,
        transform: Callable | None = None,
        predict_split: str = "test",
        task: str | None = None,
        metric: str | None = None,
        edge_features: bool = False,
        split: str = "kfold",
        split_file: str | os.PathLike | None = None,
        inner: int = 0,
    ):
        if split not in ("kfold", "file"):
            raise ValueError(
                f"split must be 'kfold' or 'file' (a TU dataset has no split of its own), "
                f"got {split!r}"
            )
        if split_file is not None:
            split_file = os.fspath(split_file)  # plain data in checkpoints
        super().__init__(
            split=split,
            fold=fold,
            num_folds=num_folds,
            seed=seed,
            val_ratio=val_ratio,
            split_file=split_file,
            inner=inner,
            task=task,
            metric=metric,
            edge_features=edge_features,
            batch_size=batch_size,
            num_workers=num_workers,
            transform=transform,
            predict_split=predict_split,
            name=name,
        )
        root = os.fspath(root)  # plain data in checkpoints (torch.load(weights_only=True))
        self.save_hyperparameters(logger=False, ignore=["transform"])
        self.root = root

    def _load(self) -> tuple[Dataset, None]:
        hp = self.hparams
        dataset = load_tu(
            hp.name,
            self.root,
            node_features=hp.node_features,
            fallback_features=hp.fallback_features,
            max_degree=hp.max_degree,
            download=hp.download,
        )
        self.name = dataset.name  # the TU collection's spelling of the name asked for
        return dataset, None

    @property
    def edge_features_required(self) -> bool:
        """Whether the edge features were asked for (``edge_features=True``, not the TU
        default): an encoder that takes none is an error, not a log line."""
        return bool(self.edge_features)


class IndexedDataset(Dataset):
    """A dataset whose graphs carry ``graph_id``, their index in it, and go through one more
    ``transform`` (after the dataset's own)."""

    def __init__(self, base: Dataset | Sequence, transform: Callable | None = None):
        super().__init__(transform=transform)
        self.base = base

    @property
    def num_features(self) -> int:
        x = self.base[0].x
        return 1 if x.dim() == 1 else int(x.size(-1))

    def len(self) -> int:
        return len(self.base)

    def get(self, idx: int):
        # a copy: the graphs of a list given by the user are not changed
        data = copy.copy(self.base[idx])
        data.graph_id = torch.tensor([idx])
        return data
