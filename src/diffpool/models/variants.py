"""The paper's model variants and baselines, each a set of constructor arguments.

``build_model("nolp", in_channels, num_classes, max_num_nodes, **overrides)`` is
``DiffPoolNet(..., link_loss="none", **overrides)``; the Hydra configs in ``conf/model/``
instantiate through this function, so that a variant is defined in exactly one place.
"""

from __future__ import annotations

from typing import Any

import torch

from diffpool.models.baselines import GlobalPoolNet
from diffpool.models.diffpool_net import DiffPoolNet

#: variant -> (model class, the arguments that define the variant)
VARIANTS: dict[str, tuple[type[torch.nn.Module], dict[str, Any]]] = {
    # classification + link prediction + entropy
    "diffpool": (DiffPoolNet, {}),
    # DiffPool-NoLP: the same without the link-prediction loss
    "nolp": (DiffPoolNet, dict(link_loss="none")),
    # DiffPool-Det: assignments from a deterministic clustering; nothing to regularise
    "det": (DiffPoolNet, dict(assignment="det", link_loss="none", entropy_loss=False)),
    # the paper's GraphSAGE baseline: mean over all nodes, no hierarchy
    "base": (GlobalPoolNet, dict(readout="mean")),
    "set2set": (GlobalPoolNet, dict(readout="set2set")),
    "sortpool": (GlobalPoolNet, dict(readout="sortpool")),
}


def build_model(
    variant: str,
    in_channels: int,
    num_classes: int,
    max_num_nodes: int | None = None,
    **overrides: Any,
) -> torch.nn.Module:
    """Build a variant of the paper's table; ``overrides`` are further constructor arguments.

    Arguments that only the hierarchical models take (``ratio``, ``num_levels``,
    ``link_loss``, ...) are dropped for the flat baselines, so that one sweep can range over
    all variants.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; known: {sorted(VARIANTS)}")
    cls, defining = VARIANTS[variant]
    clash = {k for k in overrides if k in defining and overrides[k] != defining[k]}
    if clash:
        raise ValueError(
            f"variant {variant!r} fixes {sorted(clash)} = {[defining[k] for k in sorted(clash)]}; "
            "pick another variant instead of overriding them"
        )
    kwargs = {**overrides, **defining}
    if cls is DiffPoolNet:
        return DiffPoolNet(in_channels, num_classes, max_num_nodes, **kwargs)
    import inspect

    accepted = inspect.signature(GlobalPoolNet.__init__).parameters
    return GlobalPoolNet(
        in_channels, num_classes, **{k: v for k, v in kwargs.items() if k in accepted}
    )
