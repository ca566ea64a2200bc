"""PyG layers: the sparse first DiffPool level, its dense counterpart, and encoder stacks."""

from diffpool.functional.output import DiffPoolOutput
from diffpool.nn.dense_diffpool_conv import DenseDiffPoolConv
from diffpool.nn.diffpool_conv import DiffPoolConv
from diffpool.nn.encoders import (
    ENCODERS,
    DenseGNNEncoder,
    GNNEncoder,
    get_encoder,
    register_encoder,
)
from diffpool.nn.features import CategoricalEncoder
from diffpool.nn.sum_conv import DenseSumConv, SumConv

__all__ = [
    "DiffPoolConv",
    "DenseDiffPoolConv",
    "DiffPoolOutput",
    "GNNEncoder",
    "DenseGNNEncoder",
    "ENCODERS",
    "register_encoder",
    "get_encoder",
    "CategoricalEncoder",
    "SumConv",
    "DenseSumConv",
]
