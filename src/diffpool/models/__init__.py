"""Graph classifiers: the hierarchical DiffPool model, its variants and the flat baselines."""

from diffpool.models.baselines import GlobalPoolNet
from diffpool.models.diffpool_net import DiffPoolNet
from diffpool.models.output import ClassifierOutput, classify, unbatch_levels
from diffpool.models.variants import VARIANTS, build_model, data_transform

__all__ = [
    "DiffPoolNet",
    "GlobalPoolNet",
    "ClassifierOutput",
    "VARIANTS",
    "build_model",
    "classify",
    "data_transform",
    "unbatch_levels",
]
