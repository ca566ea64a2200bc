"""The named result of a graph classifier."""

from __future__ import annotations

from typing import NamedTuple

import torch
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


def classify(
    model: torch.nn.Module, batch, return_assignments: bool = True, return_levels: bool = True
) -> ClassifierOutput:
    """Run a graph classifier on a PyG mini-batch: the one way :mod:`diffpool.training` calls a
    model.

    The models of the package take the whole batch (``model.forward_batch(batch, ...)``), so
    that each reads what it needs from it (DiffPool-Det its clusters). Any other module is
    called PyG's way, ``model(batch.x, batch.edge_index, batch.batch)``, and returns logits
    (or a :class:`ClassifierOutput`). ``return_levels=False``: the caller reads only the
    logits and the losses (``levels`` may be empty).
    """
    forward_batch = getattr(model, "forward_batch", None)
    if forward_batch is not None:
        return forward_batch(
            batch, return_assignments=return_assignments, return_levels=return_levels
        )
    out = model(batch.x, batch.edge_index, batch.batch)
    if isinstance(out, ClassifierOutput):
        return out
    if not isinstance(out, Tensor) or out.dim() != 2 or out.size(0) != batch.num_graphs:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{type(model).__name__} returned {shape}; a graph classifier returns logits "
            f"[num_graphs, num_classes] = [{batch.num_graphs}, C] or a ClassifierOutput"
        )
    zero = out.new_zeros(())
    return ClassifierOutput(out, zero, out.new_zeros(0), out.new_zeros(0))


def unbatch_levels(out: ClassifierOutput, num_graphs: int) -> list[dict[str, list[Tensor]]]:
    """Each pooling level of ``out`` as per-graph tensors without padding, on the CPU: ``s``
    ``[N_g, C_g]`` (the graph's nodes, the clusters it uses), ``clusters`` ``[N_g]`` (each
    node's hard cluster among them) and ``x`` ``[C_g, F]`` (the pooled embeddings)."""
    levels = []
    for level in out.levels:
        if level.s is None:
            raise ValueError("the model returned no assignments: call it with them")
        content: dict[str, list[Tensor]] = {"s": [], "clusters": [], "x": []}
        for g in range(num_graphs):
            nodes, clusters = level.mask[g], level.cluster_mask[g]
            s = level.s[g][nodes][:, clusters].detach().float().cpu()
            content["s"].append(s)
            content["clusters"].append(s.argmax(-1))
            content["x"].append(level.x[g][clusters].detach().float().cpu())
        levels.append(content)
    return levels
