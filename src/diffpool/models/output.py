"""The named result of a graph classifier."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from diffpool.functional.output import DiffPoolOutput


class ClassifierOutput(NamedTuple):
    """What :class:`~diffpool.models.DiffPoolNet` and the flat baselines return.

    Attributes:
        logits (torch.Tensor): ``[B, num_classes]`` class scores.
        aux_loss (torch.Tensor): scalar, the sum over pooling levels of each level's weighted
            auxiliary loss (zero without pooling): add it to the classification loss.
        link_loss (torch.Tensor): ``[L]`` unweighted link loss of every pooling level.
        entropy_loss (torch.Tensor): ``[L]`` unweighted entropy loss of every pooling level.
        levels (tuple[DiffPoolOutput, ...]): the full output of every pooling level
            (assignments, masks, coarsened graphs), e.g. for plots.
    """

    logits: Tensor
    aux_loss: Tensor
    link_loss: Tensor
    entropy_loss: Tensor
    levels: tuple[DiffPoolOutput, ...] = ()
