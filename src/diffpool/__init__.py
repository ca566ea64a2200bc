"""diffpool: fast, exact hierarchical graph pooling (DiffPool) for PyTorch Geometric."""

from diffpool.nn import DenseDiffPoolConv, DiffPoolConv, DiffPoolOutput

__version__ = "0.2.0"

__all__ = ["DiffPoolConv", "DenseDiffPoolConv", "DiffPoolOutput", "__version__"]
