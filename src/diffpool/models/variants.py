"""The paper's model variants and baselines, each a set of constructor arguments.

``build_model("nolp", in_channels, num_classes, max_num_nodes, **config)`` is
``DiffPoolNet(..., link_loss="none", **config)``; the Hydra configs in ``conf/model/``
instantiate through this function, so that a variant is defined in exactly one place: its
entry in :data:`VARIANTS`. What a model needs of the data (DiffPool-Det's clusters) its class
says, from the config alone (:func:`data_transform`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
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
    # DiffPool with the assignment S = softmax(Linear(Z)) on the embeddings, no pooling GNN
    # (torch-geometric-pool's DiffPool and many later papers): the cheaper architecture
    "diffpool_mlp": (DiffPoolNet, dict(pool_net="mlp")),
    # DiffPool-Det: assignments from a deterministic clustering; nothing to regularise
    "det": (DiffPoolNet, dict(assignment="det", link_loss="none", entropy_loss=False)),
    # the paper's GraphSAGE baseline: mean over all nodes, no hierarchy
    "base": (GlobalPoolNet, dict(readout="mean")),
    "set2set": (GlobalPoolNet, dict(readout="set2set")),
    "sortpool": (GlobalPoolNet, dict(readout="sortpool")),
}

#: what every model is built from: facts of the dataset, not settings
DATASET_FACTS = ("in_channels", "num_classes", "max_num_nodes", "edge_dim")


def _resolve(variant: str, config: Mapping[str, Any]) -> tuple[type, dict[str, Any]]:
    """The class of ``variant`` and its keyword arguments; a key the class does not take, or
    one that contradicts the variant, is an error that names it."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; known: {sorted(VARIANTS)}")
    cls, defining = VARIANTS[variant]
    clash = {k for k in config if k in defining and config[k] != defining[k]}
    if clash:
        raise ValueError(
            f"variant {variant!r} fixes {sorted(clash)} = {[defining[k] for k in sorted(clash)]}; "
            "pick another variant instead of overriding them"
        )
    accepted = inspect.signature(cls).parameters
    unknown = sorted(k for k in config if k not in accepted or k in DATASET_FACTS)
    if unknown:
        raise TypeError(
            f"model {variant!r} ({cls.__name__}) takes no {', '.join(map(repr, unknown))}; "
            f"its settings are {sorted(k for k in accepted if k not in DATASET_FACTS)}"
        )
    return cls, {**config, **defining}


def build_model(
    variant: str,
    in_channels: int,
    num_classes: int,
    max_num_nodes: int | None = None,
    edge_dim: int | None = None,
    **config: Any,
) -> torch.nn.Module:
    """Build a variant of the paper's table from the dataset's facts (``edge_dim``: the edge
    feature width, for encoders that take edge features) and its settings (``config``: the
    class's keyword arguments; one it does not take is an error)."""
    cls, kwargs = _resolve(variant, config)
    if edge_dim is not None:
        kwargs["edge_dim"] = edge_dim
    return cls(in_channels, num_classes, max_num_nodes, **kwargs)


def data_transform(spec: Mapping[str, Any]) -> Callable | None:
    """The dataset transform a model config (``{"variant": ..., **settings}``, as the
    ``model`` config group holds) needs, decided before any data is loaded: DiffPool-Det's
    :class:`~diffpool.transforms.ClusterAssignment`; :obj:`None` for the others."""
    config = {k: v for k, v in spec.items() if not k.startswith("_")}
    variant = config.pop("variant", None)
    if variant is None:
        return None
    cls, kwargs = _resolve(variant, config)
    required = getattr(cls, "required_transform", None)
    return None if required is None else required(**kwargs)
