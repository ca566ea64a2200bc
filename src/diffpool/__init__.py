"""diffpool: fast, exact hierarchical graph pooling (DiffPool) for PyTorch Geometric.

The layers are imported on first use (PEP 562): ``from diffpool import DiffPoolConv`` works
as ever, while the command-line tools and configs start without importing torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffpool.nn import DenseDiffPoolConv, DiffPoolConv, DiffPoolOutput

__version__ = "0.2.0"

__all__ = ["DiffPoolConv", "DenseDiffPoolConv", "DiffPoolOutput", "__version__"]


def __getattr__(name: str):
    if name in ("DiffPoolConv", "DenseDiffPoolConv", "DiffPoolOutput"):
        from diffpool import nn

        return getattr(nn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
