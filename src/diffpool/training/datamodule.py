"""Lightning data module for the TU benchmarks: one fold of stratified k-fold CV."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from lightning.pytorch import LightningDataModule
from torch_geometric.data import Dataset
from torch_geometric.loader import DataLoader

from diffpool.datasets.splits import FoldSplit, fold_split
from diffpool.datasets.tu import load_tu
from diffpool.training.sampler import GraphBatchSampler

#: what :meth:`TUDataModule.predict_dataloader` can give
PREDICT_SPLITS = ("test", "val", "train", "all")


class TUDataModule(LightningDataModule):
    r"""One fold of stratified ``num_folds``-fold cross-validation on a TU dataset.

    The ``fold``-th fold is the test set; ``val_ratio`` of the other folds (stratified) is the
    validation set, the rest trains. Splits depend only on ``seed``, ``num_folds`` and
    ``fold``, so every job of a sweep over ``fold`` sees the same partition.

    :meth:`val_dataloader` returns two loaders, the validation set and the test fold: the
    test fold's accuracy after every epoch is the curve the authors' protocol (``paper``)
    selects its epoch on; the ``fair`` protocol selects on the validation set only.
    ``val_ratio=0`` is the authors' own split: no validation set, every other fold trains
    (90% of the graphs with 10 folds), and :meth:`val_dataloader` returns the test fold
    alone. Such runs have a ``paper`` result only; :attr:`val_stages` names the loaders.

    Every graph carries ``graph_id``, its index in the dataset (``batch.graph_id`` in a
    batch). Batches come from :class:`~diffpool.training.GraphBatchSampler`: under DDP every
    graph is seen exactly once per epoch, with Lightning's default
    ``use_distributed_sampler=True`` as with ``False``.

    The dataset is loaded once, by :meth:`setup`; ``transform`` (e.g. the
    :class:`~diffpool.transforms.ClusterAssignment` of DiffPool-Det, see
    :func:`diffpool.models.data_transform`) is part of the pipeline from the start.

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
    ):
        super().__init__()
        if predict_split not in PREDICT_SPLITS:
            raise ValueError(
                f"predict_split must be one of {PREDICT_SPLITS}, got {predict_split!r}"
            )
        if not 0 <= fold < num_folds:
            raise ValueError(f"fold must be in [0, {num_folds}), got {fold}")
        if not 0.0 <= val_ratio < 1.0:
            raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        root = os.fspath(root)  # plain data in checkpoints (torch.load(weights_only=True))
        self.save_hyperparameters(logger=False, ignore=["transform"])
        self.name, self.root = name, root
        self.fold, self.num_folds, self.seed, self.val_ratio = fold, num_folds, seed, val_ratio
        self.batch_size, self.num_workers = batch_size, num_workers
        self.transform = transform
        self.predict_split = predict_split
        self.dataset: Dataset | None = None
        self.split: FoldSplit | None = None

    # -- data -------------------------------------------------------------------------------
    def _load(self) -> Dataset:
        hp = self.hparams
        return load_tu(
            self.name,
            self.root,
            node_features=hp.node_features,
            fallback_features=hp.fallback_features,
            max_degree=hp.max_degree,
            download=hp.download,
        )

    def prepare_data(self) -> None:
        """Extract / process the dataset (rank 0), unless this process has loaded it."""
        if self.dataset is None:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        """Load the dataset (once) and split it."""
        if self.dataset is not None:
            return
        dataset = self._load()
        self.name = dataset.name  # the TU collection's spelling of the name asked for
        self.split = fold_split(dataset.y, self.fold, self.num_folds, self.seed, self.val_ratio)
        self.dataset = IndexedDataset(dataset, self.transform)

    # -- facts the model needs --------------------------------------------------------------
    def _require_setup(self) -> Dataset:
        if self.dataset is None:
            self.setup()
        return self.dataset

    @property
    def num_features(self) -> int:
        return self._require_setup().num_features

    @property
    def num_classes(self) -> int:
        return int(self._require_setup().base.y.max()) + 1

    @property
    def max_num_nodes(self) -> int:
        """The largest graph of the whole dataset: the reference of the fixed cluster count
        (``ratio`` times it), where the authors' code pads to a node cap instead."""
        base = self._require_setup().base
        slices = base.slices.get("x")
        if slices is not None:
            return int((slices[1:] - slices[:-1]).max())
        return max(int(base.get(i).num_nodes) for i in range(len(base)))

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
        return self._loader(self.split.train, shuffle=True)

    @property
    def val_stages(self) -> tuple[str, ...]:
        """What each loader of :meth:`val_dataloader` is, in order: ``"val"`` (the validation
        set, absent with ``val_ratio=0``) and ``"heldout"`` (the test fold)."""
        return ("val", "heldout") if self.val_ratio > 0 else ("heldout",)

    def val_dataloader(self) -> list[DataLoader]:
        self._require_setup()
        sets = {"val": self.split.val, "heldout": self.split.test}
        return [self._loader(sets[stage], False) for stage in self.val_stages]

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split.test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The graphs of :attr:`predict_split`, in dataset order: ``"test"`` (the fold),
        ``"val"``, ``"train"`` or ``"all"``. To predict on other graphs, pass a loader of
        them to ``Trainer.predict``."""
        if self.predict_split == "all":
            indices = torch.arange(len(self._require_setup()))
        else:
            self._require_setup()
            indices = getattr(self.split, self.predict_split)
        return self._loader(indices.sort().values, shuffle=False)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}('{self.name}', fold={self.fold}/{self.num_folds}, "
            f"seed={self.seed}, batch_size={self.batch_size})"
        )


class IndexedDataset(Dataset):
    """A dataset whose graphs carry ``graph_id``, their index in it, and go through one more
    ``transform`` (after the dataset's own)."""

    def __init__(self, base: Dataset, transform: Callable | None = None):
        super().__init__(transform=transform)
        self.base = base

    @property
    def num_features(self) -> int:
        return self.base.num_features

    @property
    def y(self) -> torch.Tensor:
        """The graph labels, in the dataset's order (``graph_id``)."""
        return self.base.y

    def len(self) -> int:
        return len(self.base)

    def get(self, idx: int):
        data = self.base[idx]
        data.graph_id = torch.tensor([idx])
        return data
