"""Mini-batches of graphs across distributed ranks, every graph seen exactly once."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DistributedSampler, Sampler


class EpochOfShuffle(Sampler[int]):
    """The graphs' indices in dataset order, and the epoch that seeds
    :class:`GraphBatchSampler`'s shuffle: Lightning calls ``set_epoch`` on a batch sampler's
    ``sampler`` before every epoch (resumed runs included), not on the batch sampler."""

    def __init__(self, num_graphs: int):
        self.num_graphs, self.epoch = num_graphs, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_graphs

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.num_graphs))


class GraphBatchSampler(BatchSampler):
    r"""Batches of dataset indices for rank ``rank`` of ``num_replicas``, every graph once
    per epoch over all ranks, every rank the same number of steps (DDP needs it), where
    :class:`~torch.utils.data.DistributedSampler` repeats graphs to even out the ranks.

    An epoch has :math:`T = \min(\lceil n / (W b) \rceil, \lfloor n / W \rfloor)` steps for
    :math:`n` graphs, :math:`W` ranks and batch size :math:`b`: the (shuffled) indices are cut
    into :math:`T` global batches whose sizes differ by at most one, and rank :math:`r` takes
    every :math:`W`-th graph of each from the :math:`r`-th.

    Args:
        num_graphs (int): :math:`n`.
        batch_size (int): Graphs per rank and step, :math:`b`.
        shuffle (bool, optional): Reshuffle every epoch, seeded by ``seed`` and the epoch.
            (default: :obj:`False`)
        seed (int, optional): (default: :obj:`0`)
        num_replicas (int, optional): :math:`W`. (default: :obj:`1`)
        rank (int, optional): :math:`r`. (default: :obj:`0`)
        sampler (Sampler, optional): A :class:`~torch.utils.data.DistributedSampler` (as
            Lightning passes it) sets ``num_replicas`` and ``rank``, and its ``set_epoch`` the
            epoch. (default: :obj:`None`: an :class:`EpochOfShuffle`)
        drop_last (bool, optional): Must be :obj:`False`. (default: :obj:`False`)
    """

    def __init__(
        self,
        num_graphs: int,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        sampler: Sampler | None = None,
        drop_last: bool = False,
    ):
        if drop_last:
            raise ValueError("GraphBatchSampler never drops graphs (drop_last must be False)")
        if isinstance(sampler, DistributedSampler):
            num_replicas, rank = sampler.num_replicas, sampler.rank
        else:
            sampler = EpochOfShuffle(num_graphs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        if num_graphs < num_replicas:
            raise ValueError(
                f"{num_graphs} graphs cannot feed {num_replicas} ranks: every rank needs a "
                "graph in every step"
            )
        self.num_graphs, self.batch_size = num_graphs, batch_size
        self.shuffle, self.seed = shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.sampler, self.drop_last = sampler, False  # BatchSampler's attributes

    @property
    def epoch(self) -> int:
        """The epoch that seeds the shuffle, as Lightning set it on :attr:`sampler`."""
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        steps = math.ceil(self.num_graphs / (self.num_replicas * self.batch_size))
        return min(steps, self.num_graphs // self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_graphs, generator=gen)
        else:
            order = torch.arange(self.num_graphs)
        for chunk in torch.tensor_split(order, len(self)):
            yield chunk[self.rank :: self.num_replicas].tolist()
