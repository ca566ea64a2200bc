"""Input checks shared by the pooling layers.

Every check raises a :class:`ValueError` or :class:`TypeError` whose message names the argument and
the problem, so that bad input never ends in a crash deep inside PyTorch or in a silent wrong
answer. Shapes and types are checked on the host; the checks of values (ranges, NaN, sorting) take
a :class:`DeferredChecks`, which reads all of them from the device in one transfer, together with
what the caller needs on the host anyway (a batch's node counts): validation then costs no
synchronisation of its own. Without one, a value check synchronises at once. The layers skip the
value checks while ``torch.compile`` traces and when built with ``validate=False``.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from diffpool.utils.connectivity import is_sparse_tensor, is_torch_sparse, stored_values

#: a check's error: a message, or a callable of the host values that returns the exception
_Error = str | Callable[..., Exception]


class DeferredChecks:
    """Value checks read from the device at once.

    :meth:`require` records device-side 0-d integer or boolean scalars (a minimum, a count, a
    test's outcome; int64 where they can be, since :meth:`read` stacks them), a test of their
    host values that is true when the input is fine, and the error to raise otherwise (a
    message, or a callable of the host values, called only on failure: it may then read more
    from the device to name the entry); :meth:`read` copies every scalar and the given integer
    tensors to the host in one transfer, runs the tests, raises the first failed one's error,
    and returns the tensors' values. The tests run on the host, so a check costs the device
    only the reductions that produce its scalars.
    """

    __slots__ = ("_scalars", "_checks")

    def __init__(self):
        self._scalars: list[Tensor] = []
        self._checks: list[tuple[int, int, Callable[..., bool], _Error]] = []

    def require(
        self,
        scalars: Tensor | tuple[Tensor, ...],
        error: _Error,
        passes: Callable[..., bool] = bool,
    ) -> None:
        start = len(self._scalars)
        if isinstance(scalars, Tensor):
            self._scalars.append(scalars)
        else:
            self._scalars += scalars
        self._checks.append((start, len(self._scalars), passes, error))

    def read(self, *values: Tensor) -> list[list[int]]:
        """Raise the first failed check's error; the ``values`` (1-D integer tensors) as lists."""
        # 0-d scalars stacked (a reshape per scalar would cost more than the stack); one part
        # needs no cat; cat's common dtype holds every integer and boolean entry exactly
        parts = [torch.stack(self._scalars)] if self._scalars else []
        parts += [v.reshape(-1) for v in values]
        if not parts:
            return []
        device = parts[0].device
        if any(p.device != device for p in parts):
            parts = [p.to(device) for p in parts]
        host = (parts[0] if len(parts) == 1 else torch.cat(parts)).tolist()
        for start, stop, passes, error in self._checks:
            if not passes(*host[start:stop]):
                raise ValueError(error) if isinstance(error, str) else error(*host[start:stop])
        out, start = [], len(self._scalars)
        for v in values:
            out.append(host[start : start + v.numel()])
            start += v.numel()
        return out


def _require(
    checks: DeferredChecks | None,
    scalars: Tensor | tuple[Tensor, ...],
    error: str | Callable[..., Exception],
    passes: Callable[..., bool] = bool,
) -> None:
    """``checks.require(...)``, or at once (one synchronisation) without ``checks``."""
    now = DeferredChecks() if checks is None else checks
    now.require(scalars, error, passes)
    if checks is None:
        now.read()


#: The sum that tests a tensor's values for NaN and infinity, by the tensor's dtype: its bits
#: as an integer dtype of the same width, and the position and width of the exponent.
_SUMS = {torch.float64: (torch.float64, torch.int64, 52, 0x7FF)}
_FLOAT32_SUM = (torch.float32, torch.int32, 23, 0xFF)


def _require_finite(checks: DeferredChecks | None, t: Tensor, message: str) -> None:
    """No NaN or infinite value in ``t``, tested through its sum: a NaN or an infinity makes
    the sum non-finite, and on a CPU ``torch.isfinite(t).all()`` costs 5 to 10 times the sum.
    The sum is taken in float32 (float64 for float64 input; a float64 sum of float32 input
    would first convert every value) and goes to the host as its
    bits (a view, no kernel; as int64, one conversion, where the sum is float32: the stack of
    the checks' scalars is then of one dtype, which costs a third of a mixed one), whose
    exponent the host tests (``isfinite`` and a test on the device would be more kernels). A
    sum that overflows from finite values is told apart on the host, with one more read, only
    then."""
    dtype, bits_dtype, shift, ones = _SUMS.get(t.dtype, _FLOAT32_SUM)
    total = t.detach().sum(dtype=dtype).view(bits_dtype).long()

    def passes(bits: int) -> bool:  # the exponent is not all ones, or no value is NaN / inf
        return (bits >> shift) & ones != ones or bool(torch.isfinite(t).all())

    _require(checks, total, message, passes)


def check_count(value: int, name: str = "num_clusters") -> int:
    """A positive int (``num_clusters``, ``batch_size``, ``max_num_nodes``): anything with
    ``__index__`` (a NumPy or 0-dim torch integer), not a bool."""
    try:
        if isinstance(value, bool):
            raise TypeError
        count = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if count <= 0:
        raise ValueError(f"{name} must be positive, got {count}")
    return count


def check_num_clusters(num_clusters: int) -> int:
    return check_count(num_clusters, "num_clusters")


def check_ratio(ratio: float | None) -> float | None:
    if ratio is None:
        return None
    if isinstance(ratio, bool) or not isinstance(ratio, Real):
        raise TypeError(f"ratio must be a float in (0, 1], got {type(ratio).__name__}")
    if not (0.0 < float(ratio) <= 1.0) or math.isnan(ratio):
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return float(ratio)


def check_coefficient(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {value}")
    return float(value)


def check_features(
    x: Tensor, dim: int, name: str = "x", finite: bool = True, checks: DeferredChecks | None = None
) -> None:
    """A floating-point ``[N, F]`` (``dim=2``) or ``[B, N, F]`` tensor with at least one node,
    and (``finite``) no NaN or infinite value."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dim:
        shape = "[num_nodes, num_features]" if dim == 2 else "[batch_size, num_nodes, num_features]"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.size(-2) == 0 or (dim == 3 and x.size(0) == 0):
        raise ValueError(f"empty batch: {name} has shape {tuple(x.shape)}")
    if finite:
        _require_finite(checks, x, f"{name} contains NaN or infinite values")


def as_int64_index(index):
    """An integer index tensor (``edge_index``, ``batch``) as int64, which torch's scatter
    needs on some paths (PyG accepts int32 and converts it in places); a float, bool or sparse
    input, or an int64 one, is returned as it is (for the checks to refuse or to pass on)."""
    if (
        isinstance(index, Tensor)
        and index.layout == torch.strided
        and index.dtype not in (torch.int64, torch.bool)
        and not index.is_floating_point()
        and not index.is_complex()
    ):
        return index.long()
    return index


def check_input_matches(x: Tensor, module: torch.nn.Module, in_channels: int | None) -> None:
    """``x`` fits ``module``: the dtype of its parameters (outside autocast) and its
    ``in_channels`` (where it has a fixed one), checked by shape and dtype only."""
    name = type(module).__name__
    param = next((p for p in module.parameters() if p.is_floating_point()), None)
    if (
        param is not None
        and x.dtype != param.dtype
        and not torch.is_autocast_enabled(x.device.type)
    ):
        raise TypeError(
            f"x is {x.dtype} but the parameters of {name} are {param.dtype}: convert one of "
            f"them (x.to({param.dtype}) or {name}.to({x.dtype}))"
        )
    if isinstance(in_channels, int) and in_channels > 0 and x.size(-1) != in_channels:
        raise ValueError(
            f"x has {x.size(-1)} features per node but {name} takes in_channels={in_channels}"
        )


def explains_input(in_channels: Callable[[Any], int | None] | None = None):
    """Decorate a module's method ``(self, x, ...)`` (``x`` a tensor or a list of them): where
    it fails with a RuntimeError, :func:`check_input_matches`'s named error is raised instead
    if ``x`` does not fit the module. Checked on failure only: walking a module's parameters
    costs as much as a small graph's layer. ``in_channels(module)``: its input width
    (default: its ``in_channels``)."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, x, *args, **kwargs):
            try:
                return method(self, x, *args, **kwargs)
            except RuntimeError as err:
                width = (
                    getattr(self, "in_channels", None) if in_channels is None else in_channels(self)
                )
                for t in x if isinstance(x, list | tuple) else [x]:
                    try:
                        check_input_matches(t, self, width)
                    except (TypeError, ValueError) as named:
                        raise named from err
                raise

        return wrapper

    return decorate


def check_batch(
    batch: Tensor, num_nodes: int, batch_size: int | None, checks: DeferredChecks | None = None
) -> None:
    """``batch`` must be sorted and run from graph 0 to ``batch_size - 1`` (that no graph in
    between is left without nodes is :func:`check_graph_sizes`'s test of the node counts)."""
    if not isinstance(batch, Tensor):
        raise TypeError(f"batch must be a torch.Tensor, got {type(batch).__name__}")
    if batch.dim() != 1 or batch.dtype not in (torch.long, torch.int32, torch.int64):
        raise ValueError(
            f"batch must be a 1-D integer tensor, got shape {tuple(batch.shape)} and {batch.dtype}"
        )
    if batch.numel() != num_nodes:
        raise ValueError(
            f"batch has {batch.numel()} entries but x has {num_nodes} nodes: they must match"
        )
    # sorted (no step down), from 0 to batch_size - 1: its first and last entries are then its
    # range, and a graph without nodes is a zero among the node counts, which the caller reads
    # anyway (check_graph_sizes); two reductions fewer than the range and both step bounds
    lowest = torch.diff(batch).min() if num_nodes > 1 else batch.new_zeros(())
    first, last = batch[0], batch[-1]

    def fits(lowest: int, first: int, last: int) -> bool:
        return lowest >= 0 and first == 0 and (batch_size is None or last == batch_size - 1)

    def error(lowest: int, first: int, last: int) -> Exception:
        if lowest < 0:
            return ValueError("batch must be sorted (nodes of a graph contiguous, graphs in order)")
        if first != 0:
            return ValueError(f"batch must start at graph 0, got {first}")
        if last >= batch_size:
            return ValueError(
                f"batch_size={batch_size} but batch holds graphs 0..{last}: batch_size must "
                "count every graph of the batch"
            )
        gaps = range(last + 1, batch_size)
        empty = f"graph {gaps[0]}" if len(gaps) == 1 else f"graphs {gaps[0]}..{gaps[-1]}"
        return ValueError(
            f"batch_size={batch_size} but batch holds graphs 0..{last}: {empty} would have no "
            "nodes (every graph needs at least one node; PyG's readouts would give them zeros)"
        )

    _require(checks, (lowest, first, last), error, fits)


def check_graph_sizes(counts: list[int]) -> None:
    """Every graph of a batch that :func:`check_batch` passed has a node (``counts``: its
    nodes per graph, on the host): a sorted batch from 0 to ``batch_size - 1`` has no other
    way to leave a graph out."""
    if 0 in counts:
        graph = counts.index(0)
        raise ValueError(
            f"batch is gapped: graph {graph} has no nodes; every graph needs at least one node"
        )


def check_max_num_nodes(max_num_nodes: int | None, counts: list[int]) -> None:
    """``max_num_nodes`` is a count that holds the largest graph (``counts``: nodes per
    graph, on the host)."""
    if max_num_nodes is None:
        return
    check_count(max_num_nodes, "max_num_nodes")
    if not counts:
        return
    largest = max(counts)
    if max_num_nodes < largest:
        raise ValueError(
            f"max_num_nodes={max_num_nodes} is smaller than the largest graph in the batch "
            f"({largest} nodes): nodes would be dropped"
        )


def check_connectivity(
    edge_index, edge_weight: Tensor | None, num_nodes: int, checks: DeferredChecks | None = None
) -> None:
    """Check ``edge_index`` (+ ``edge_weight``), a ``SparseTensor`` or a ``torch.sparse`` matrix."""
    if is_sparse_tensor(edge_index) or is_torch_sparse(edge_index):
        size = tuple(edge_index.sizes() if is_sparse_tensor(edge_index) else edge_index.shape)
        if len(size) != 2 or size[0] != num_nodes or size[1] != num_nodes:
            raise ValueError(
                f"the sparse adjacency has size {size} but x has {num_nodes} nodes: "
                f"expected ({num_nodes}, {num_nodes})"
            )
        if edge_weight is not None:
            raise ValueError(
                "edge_weight is only accepted with edge_index; a sparse adjacency "
                "carries its own values"
            )
        values = stored_values(edge_index)
        if values is not None and values.is_floating_point():
            message = "the sparse adjacency's values contain NaN or infinite values"
            _require_finite(checks, values, message)
        return
    if not isinstance(edge_index, Tensor):
        raise TypeError(
            "edge_index must be a [2, num_edges] tensor, a torch_sparse.SparseTensor or a "
            f"torch.sparse tensor, got {type(edge_index).__name__}"
        )
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"edge_index must have shape [2, num_edges], got {tuple(edge_index.shape)}"
        )
    if edge_index.is_floating_point() or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index must be an integer tensor, got {edge_index.dtype}")
    if edge_index.numel() > 0:

        def out_of_range(lo: int, hi: int) -> Exception:
            return ValueError(
                f"edge_index out of range: it holds node indices in [{lo}, {hi}] but x has "
                f"{num_nodes} nodes"
            )

        _require(
            checks, edge_index.aminmax(), out_of_range, lambda lo, hi: 0 <= lo <= hi < num_nodes
        )
    if edge_weight is not None:
        if not isinstance(edge_weight, Tensor) or not edge_weight.is_floating_point():
            raise TypeError("edge_weight must be a floating-point tensor")
        if edge_weight.dim() != 1 or edge_weight.numel() != edge_index.size(1):
            raise ValueError(
                f"edge_weight must have shape [{edge_index.size(1)}] (one weight per edge), "
                f"got {tuple(edge_weight.shape)}"
            )
        _require_finite(checks, edge_weight, "edge_weight contains NaN or infinite values")


def check_edge_attr(edge_attr: Tensor | None, edge_index) -> None:
    """``[E, D]`` (or ``[E]``) edge features, one row per column of an ``edge_index``
    tensor (with a sparse adjacency they are the GNNs' to read); shapes only."""
    if edge_attr is None or not isinstance(edge_index, Tensor) or is_torch_sparse(edge_index):
        return
    if not isinstance(edge_attr, Tensor):
        raise TypeError(f"edge_attr must be a tensor, got {type(edge_attr).__name__}")
    edges = edge_index.size(1)
    if edge_attr.dim() not in (1, 2) or edge_attr.size(0) != edges:
        raise ValueError(
            f"edge_attr must have shape [{edges}, edge_dim] (one row per edge), got "
            f"{tuple(edge_attr.shape)}"
        )


def check_edges_within_graphs(
    index: Tensor, batch: Tensor, checks: DeferredChecks | None = None
) -> None:
    """Every edge (``index``: ``[2, E]`` source and target) joins two nodes of one graph: an
    edge between graphs would mix their coarsened adjacencies and losses without a word.
    (Indices out of range are :func:`check_connectivity`'s to name: they are clamped here.)"""
    if index.numel() == 0:
        return
    # the graphs of both ends in one gather, [2, E]; their difference is 0 within a graph
    index = as_int64_index(index)  # take() needs int64
    across = batch.take(index.clamp(0, batch.numel() - 1)).diff(dim=0)

    def error(count: int) -> Exception:
        first = int(across.nonzero()[0, 1])
        i, j = int(index[0, first]), int(index[1, first])
        return ValueError(
            f"{count} edge(s) join nodes of different graphs of the batch (e.g. node {i} of "
            f"graph {int(batch[i])} and node {j} of graph {int(batch[j])}): every edge must "
            "stay inside its graph"
        )

    _require(checks, across.count_nonzero(), error, lambda count: count == 0)


def check_dense_inputs(
    x: Tensor,
    adj: Tensor,
    mask: Tensor | None,
    finite: bool = True,
    factored: bool = False,
    finite_adj: bool | None = None,
) -> None:
    """Shapes, types and (``finite``) values of a dense batch; ``finite_adj``: whether the
    values of ``adj`` are checked (default: as ``finite``); ``factored``: ``adj`` is a
    :class:`~diffpool.functional._factored.FactoredAdjacency` (our own pooling's output), of
    which the shape is checked. The value checks share one synchronisation with the device."""
    check_features(x, dim=3, finite=False)
    batch_size, num_nodes = x.shape[:2]
    if not factored and (not isinstance(adj, Tensor) or adj.layout != torch.strided):
        raise TypeError("adj must be a dense tensor of shape [batch_size, num_nodes, num_nodes]")
    if tuple(adj.shape) != (batch_size, num_nodes, num_nodes):
        raise ValueError(
            f"adj must have shape [{batch_size}, {num_nodes}, {num_nodes}] to match x, "
            f"got {tuple(adj.shape)}"
        )
    checks = DeferredChecks()
    if finite:
        _require_finite(checks, x, "x contains NaN or infinite values")
    if (finite if finite_adj is None else finite_adj) and not factored:
        _require_finite(checks, adj, "adj contains NaN or infinite values")
    if mask is not None:
        if not isinstance(mask, Tensor) or tuple(mask.shape) != (batch_size, num_nodes):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must have shape [{batch_size}, {num_nodes}], got {got}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        checks.require(
            mask.any(dim=-1).all(),
            "mask leaves a graph without nodes; every graph needs at least one",
        )
    checks.read()


def check_logits(
    s: Tensor, rows: tuple[int, ...], name: str = "s", columns: str = "num_clusters"
) -> None:
    """The shape of pooling logits (or of the features they are computed from): ``[*rows, K]``
    with ``K > 0``; ``rows`` e.g. ``(num_nodes,)`` or ``(batch_size, num_nodes)``. Shapes
    only, no synchronisation."""
    if s.dim() != len(rows) + 1 or tuple(s.shape[:-1]) != tuple(rows) or s.size(-1) == 0:
        expected = ", ".join([str(r) for r in rows] + [columns])
        raise ValueError(
            f"{name} must have shape [{expected}] (one row per node), got {tuple(s.shape)}"
        )


def check_assignment(
    assignment: Tensor, shape: tuple[int, ...], num_slots: int, mask: Tensor | None = None
) -> None:
    """A hard assignment: integer cluster ids of the given shape, each in ``[0, num_slots)``
    (where ``mask`` is true, when given)."""
    if not isinstance(assignment, Tensor):
        raise TypeError(f"assignment must be a tensor, got {type(assignment).__name__}")
    if assignment.dtype not in (torch.long, torch.int32):
        raise TypeError(f"assignment must hold integer cluster ids, got {assignment.dtype}")
    if tuple(assignment.shape) != tuple(shape):
        raise ValueError(
            f"assignment has shape {tuple(assignment.shape)} but the nodes need {tuple(shape)}"
        )
    ids = assignment if mask is None else assignment[mask]
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_slots):
        raise ValueError(
            f"assignment ids must lie in [0, {num_slots}), got [{int(ids.min())}, {int(ids.max())}]"
        )
