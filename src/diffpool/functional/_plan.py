r"""The pooling planner: how a batch's pooling products are laid out, decided from its sizes.

The math of a pooling level (:mod:`diffpool.functional.formulas`) is the same in every layout;
a layout only decides how the graphs of a batch are cut into padded ``[b, n, *]`` blocks and
how :math:`\mathbf{A}\mathbf{S}` is computed:

``"padded"``
    the batch as one block padded to :math:`N_{\max}`, the adjacency as one dense
    ``[B, N_max, N_max]`` block: static shapes and no host synchronisation (what
    ``torch.compile`` gets), and the fastest layout for batches of small graphs.
``"sparse"``
    size buckets (graphs within a factor :data:`MAX_WASTE` of each other, each bucket padded
    to its own largest graph), :math:`\mathbf{A}\mathbf{S}` a sparse-dense product: no
    :math:`n \times n` block is built.
``"per_bucket"``
    ``"sparse"`` with the assignment held per bucket at the bucket's own width (per-graph
    budgets): the batch's widest budget does not widen the other buckets' rows.

``layout="auto"`` (the default of the functions and layers) asks :func:`plan_sparse`; a layout
named by the caller is taken as it is (and refused where it cannot apply). Every threshold of
the choice is in this module, with what it was measured on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from diffpool.functional.assignment import cluster_budget

#: The layouts a caller can name (``"auto"``: :func:`plan_sparse` chooses).
LAYOUTS = ("auto", "padded", "sparse", "per_bucket")

#: Graphs go into one size bucket while its largest has at most this many times the nodes of
#: its smallest: padded work at most 1.5x the unpadded work.
MAX_WASTE = 1.5

#: Fixed cost of one more size bucket (a gather, a batched matmul, their backward and the
#: bookkeeping), in multiply-adds of padded work. Buckets whose padding to the previous
#: bucket's size costs less than this are merged: on small graphs a few kernel launches more
#: would cost more than the padding they save. Measured on CPU; the exact value is not critical.
BUCKET_OVERHEAD_MACS = 1 << 21

#: Fixed cost of holding one bucket's assignment at its own width (a softmax, a sparse product
#: and the bookkeeping of its own), against the unused columns of one flat ``[N, C]``
#: assignment. Measured on CPU, per-graph budgets, summed step times per-bucket vs flat: D&D
#: batches without the two largest graphs 12.1 vs 14.1 s; PROTEINS, ENZYMES and synthetic
#: N_max 100 to 400 equal within noise; a batch that forms one bucket always stays flat.
PER_BUCKET_ASSIGNMENT_MACS = 1 << 17

#: The fixed cost of the sparse layouts against the padded one, in multiply-adds: the padded
#: layout is taken while the work it adds stays under it (:func:`padded_pays`). The sparse
#: layouts spend it on the coalesce's sort, the sparse product's setup, the size buckets'
#: gathers and the identity's check for cancellation; the padded batch on its dense product
#: :math:`B N_{\max}^2 C` and on the padded rows of :math:`\mathbf{S}^\top[\mathbf{Z} |
#: \mathbf{A}\mathbf{S}]`. Measured on CPU, one thread, batch by batch (one pooling level
#: forward and backward, padded / best sparse layout, paired rounds): the two cost the same
#: where the padded batch added about 10M multiply-adds on PROTEINS and ENZYMES and 17M to 20M
#: on synthetic batches (N_max 100 to 200, sizes uniform from N_max / 4: less of the padding is
#: waste); at 4.9M (synthetic N_max 100) padded took 0.80x to 0.87x of the time, at 47M
#: (N_max 200) 1.14x to 1.5x. Against the earlier rule (the dense product alone under
#: :data:`DENSE_BLOCK_MACS`), on the batches whose layout this changes (paired rounds, median):
#: the pooling level 0.85x (synthetic N_max 100, both budgets; ENZYMES, fixed), 0.93x to 0.94x
#: (ENZYMES and PROTEINS, per-graph budgets), 0.54x (COLLAB's dense graphs, the 8 of its 250
#: batches it pads with per-graph budgets: their sparse product costs what a dense one does);
#: a training step of :class:`~diffpool.models.DiffPoolNet` on the same batches 0.99x to 1.00x (its
#: encoders dominate).
PADDED_EXTRA_MACS = 1 << 23

#: Up to this many multiply-adds for the residual's product :math:`\mathbf{S}\mathbf{S}^\top`
#: of a dense ``[b, n, n]`` block, ``b * n**2 * C``, the block is small (:func:`small_dense_block`):
#: the Frobenius link loss then comes from the residual (:func:`residual_pays`).
DENSE_BLOCK_MACS = 1 << 22

#: The elementwise passes of the residual link loss over its ``[b, n, n]`` block, counted as
#: columns of :math:`\mathbf{S}\mathbf{S}^\top` in :func:`residual_pays`.
RESIDUAL_PASSES = 8

#: With fixed budgets, a size bucket keeps its coarsened adjacency as its factors (inside
#: :class:`~diffpool.models.DiffPoolNet` only) where that saves at least this many multiply-adds per
#: feature column of one dense layer, :math:`b\,(C^2 - n(2C + n))` (``b`` graphs of up to ``n``
#: nodes): below it the extra group that the dense levels then run costs about what it saves
#: (PROTEINS, :math:`C = 155`: equal within noise, measured).
FACTORED_MIN_SAVING = 1 << 20


@dataclass(frozen=True)
class Plan:
    """How one sparse pooling level runs.

    Attributes:
        layout (str): ``"padded"``, ``"sparse"`` or ``"per_bucket"``.
        buckets (list[list[int]] or None): the graphs of every size bucket, largest first
            (:obj:`None` for ``"padded"``).
        heads (list[int] or None): the node count every bucket is padded to.
        widths (list[int] or None): the cluster slots every bucket uses (per-graph budgets);
            :obj:`None`: all of them.
        factored (list[bool] or None): the buckets whose coarsened adjacency stays as its
            factors (fixed budgets, inside the model only).
    """

    layout: str
    buckets: list[list[int]] | None = None
    heads: list[int] | None = None
    widths: list[int] | None = None
    factored: list[bool] | None = None


def bucket_graphs(
    counts: list[int],
    max_waste: float = MAX_WASTE,
    row_cost: Callable[[int], int] | None = None,
    overhead: int = BUCKET_OVERHEAD_MACS,
) -> list[list[int]]:
    """Group graph indices, largest first, so that within a group the largest graph has at
    most ``max_waste`` times the nodes of the smallest.

    With ``row_cost`` (the multiply-adds per padded row of a group headed by a graph of ``n``
    nodes), a group is then merged into the previous, larger one when the padding this adds
    costs at most ``overhead`` multiply-adds."""
    order = sorted(range(len(counts)), key=lambda g: -counts[g])
    buckets: list[list[int]] = []
    for g in order:
        if buckets and counts[g] * max_waste >= counts[buckets[-1][0]]:
            buckets[-1].append(g)
        else:
            buckets.append([g])
    if row_cost is None:
        return buckets
    merged = buckets[:1]
    for graphs in buckets[1:]:
        head = counts[merged[-1][0]]
        padding = sum(head - counts[g] for g in graphs) * row_cost(head)
        saved = sum(counts[g] for g in graphs) * (row_cost(head) - row_cost(counts[graphs[0]]))
        if padding + saved <= overhead:
            merged[-1].extend(graphs)
        else:
            merged.append(graphs)
    return merged


def factored_pays(num_nodes: int, num_clusters: int, num_graphs: int) -> bool:
    r"""Whether ``num_graphs`` graphs of up to ``num_nodes`` nodes should keep
    :math:`\mathbf{A}' = \mathbf{S}^\top\mathbf{A}\mathbf{S}` as its factors: a dense layer
    costs :math:`(2nC + n^2) F` through them against :math:`C^2 F` (so :math:`n < (\sqrt 2 -
    1)\,C`), and the saving over the group is at least :data:`FACTORED_MIN_SAVING` per
    feature column."""
    saving = num_clusters * num_clusters - num_nodes * (2 * num_clusters + num_nodes)
    return saving > 0 and num_graphs * saving >= FACTORED_MIN_SAVING


@dataclass(frozen=True)
class BatchShape:
    """What the planner reads of a batch (all on the host).

    Attributes:
        counts (list[int]): nodes per graph.
        num_edges (int): edges of the batch.
        features (int): embedding width :math:`F`.
        num_slots (int): the output's cluster slots.
        ratio (float or None): per-graph budgets, or :obj:`None` (fixed).
    """

    counts: list[int]
    num_edges: int
    features: int
    num_slots: int
    ratio: float | None

    def width(self, n: int) -> int:
        """Cluster slots a graph of ``n`` nodes uses."""
        if self.ratio is None:
            return self.num_slots
        return min(self.num_slots, cluster_budget(n, self.ratio))

    def row_cost(self, n: int) -> int:
        """Multiply-adds per padded row of a bucket headed by ``n`` nodes:
        :math:`\\mathbf{S}^\\top[\\mathbf{Z} | \\mathbf{A}\\mathbf{S}]` and
        :math:`\\mathbf{S}^\\top\\mathbf{S}`."""
        return self.width(n) * (self.features + 2 * self.width(n))


def size_buckets(shape: BatchShape) -> tuple[list[list[int]], list[int]]:
    """The size buckets of a batch and the node count each is padded to."""
    buckets = bucket_graphs(shape.counts, row_cost=shape.row_cost)
    if len(buckets) == 1:  # one block in graph order: no permutation to undo
        buckets = [list(range(len(shape.counts)))]
    return buckets, [max(shape.counts[g] for g in graphs) for graphs in buckets]


def per_bucket_pays(shape: BatchShape, buckets: list[list[int]], widths: list[int]) -> bool:
    """Whether an assignment held per bucket at its own width is worth its per-bucket
    bookkeeping: the columns the flat ``[N, num_slots]`` form would carry beyond each
    bucket's width (softmax, gathers and ``A S``: about the average degree plus one operation
    each) cost more than :data:`PER_BUCKET_ASSIGNMENT_MACS` per bucket."""
    if len(buckets) < 2:
        return False
    nodes = [sum(shape.counts[g] for g in graphs) for graphs in buckets]
    unused = sum(n * (shape.num_slots - w) for n, w in zip(nodes, widths))
    per_column = 1 + shape.num_edges / max(1, sum(shape.counts))
    return unused * per_column > PER_BUCKET_ASSIGNMENT_MACS * len(buckets)


def padded_pays(shape: BatchShape, buckets: list[list[int]], heads: list[int]) -> bool:
    r"""Whether the padded batch costs less than the size buckets ``buckets`` (padded to
    ``heads``) with a sparse :math:`\mathbf{A}\mathbf{S}`: the multiply-adds it adds, its
    dense :math:`\mathbf{A}\mathbf{S}` (:math:`B N_{\max}^2 C`) and the rows it pads beyond
    the buckets' (:meth:`BatchShape.row_cost`: :math:`\mathbf{S}^\top[\mathbf{Z} |
    \mathbf{A}\mathbf{S}]` and :math:`\mathbf{S}^\top\mathbf{S}`), less the sparse
    product's :math:`E C`, at most :data:`PADDED_EXTRA_MACS`. A batch of dense graphs is
    padded at any size: its sparse product costs what the dense one does, and its dense block
    holds about as many entries as it has edges."""
    largest = max(shape.counts)
    width = shape.width(largest)
    padded = len(shape.counts) * largest * (largest * width + shape.row_cost(largest))
    bucketed = sum(len(graphs) * n * shape.row_cost(n) for graphs, n in zip(buckets, heads))
    return padded - bucketed - shape.num_edges * width <= PADDED_EXTRA_MACS


def small_dense_block(num_graphs: int, num_nodes: int, num_clusters: int) -> bool:
    r"""Whether a dense block of ``num_graphs`` graphs padded to ``num_nodes`` nodes, pooled
    to ``num_clusters`` slots, is small: :math:`b\,n^2 C` at most :data:`DENSE_BLOCK_MACS`."""
    return num_graphs * num_nodes * num_nodes * num_clusters <= DENSE_BLOCK_MACS


def residual_pays(s_shape: tuple[int, ...]) -> bool:
    r"""Whether the Frobenius link loss of a dense block with assignment shape ``[b, n, C]``
    comes from the residual :math:`\mathbf{A} - \mathbf{S}\mathbf{S}^\top`
    (:func:`~diffpool.functional.formulas.residual_link_loss`) rather than from the identity's
    three terms: where the block is small (:func:`small_dense_block`, its elementwise passes
    counted as :data:`RESIDUAL_PASSES` more clusters). Its :math:`b\,n^2 C`
    multiply-adds then cost less than the identity's dozen more operations and its check for
    cancellation, a read of the device from the host. Measured on CPU, one pooling step,
    forward and backward, residual / identity (in-process, 30 alternating rounds): MUTAG
    0.89x (fixed and per-graph budgets), ENZYMES 1.01x / 1.02x (its batches at
    :math:`b\,n^2 C` of 1.5 to 6.4 million, on both sides of the bound)."""
    b, n, c = s_shape
    # the residual's elementwise passes over [b, n, n] (forward and backward) cost about as
    # much as 8 more columns of S S^T: with few clusters they dominate (b=128, n=60, C=8:
    # 1.42x the identity's time without this term; paired in-process steps)
    return small_dense_block(b, n, c + RESIDUAL_PASSES)


def check_layout(layout: str, ratio: float | None, soft: bool) -> None:
    """``layout`` is one of :data:`LAYOUTS` and can run with these budgets and assignment."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "per_bucket" and (ratio is None or not soft):
        raise ValueError(
            "layout='per_bucket' holds a learned assignment per size bucket at its own width: "
            "it needs per-graph budgets (ratio=...) and logits, not hard cluster ids"
        )


def plan_sparse(
    shape: BatchShape | None,
    layout: str | Plan = "auto",
    *,
    soft: bool = True,
    factored: bool = False,
) -> Plan:
    """The plan of one sparse pooling level.

    Args:
        shape (BatchShape or None): the batch's sizes; :obj:`None` where they are not known on
            the host (under ``torch.compile``): the ``"padded"`` layout.
        layout (str or Plan): one of :data:`LAYOUTS`, or a :class:`Plan` whose ``layout`` and
            ``buckets`` (where given) are taken as they are. (default: ``"auto"``)
        soft (bool): a learned assignment (logits), not hard cluster ids.
        factored (bool): let buckets of graphs small against :math:`C` keep their coarsened
            adjacency as its factors (fixed budgets and a learned assignment only).
    """
    given = layout if isinstance(layout, Plan) else Plan(layout)
    check_layout(given.layout, None if shape is None else shape.ratio, soft)
    if shape is None or given.layout == "padded":
        return Plan("padded")
    buckets, heads = size_buckets(shape)
    if given.buckets is not None:
        graphs = sorted(g for bucket in given.buckets for g in bucket)
        if graphs != list(range(len(shape.counts))) or not all(given.buckets):
            raise ValueError(
                f"a Plan's buckets must hold every graph of the batch once (0..."
                f"{len(shape.counts) - 1}) in non-empty lists, got {given.buckets}"
            )
        buckets = given.buckets
        heads = [max(shape.counts[g] for g in graphs) for graphs in buckets]
    widths = None if shape.ratio is None else [shape.width(n) for n in heads]
    name = given.layout
    if name == "auto":
        name = _choose(shape, buckets, heads, widths, soft)
        if name == "padded":
            return Plan("padded")
    keep = None
    if factored and soft and shape.ratio is None and name == "sparse":
        keep = [factored_pays(n, shape.num_slots, len(g)) for n, g in zip(heads, buckets)]
        keep = keep if any(keep) else None
    return Plan(name, buckets, heads, widths, keep)


def _choose(shape: BatchShape, buckets, heads, widths, soft: bool) -> str:
    if widths is not None and soft and per_bucket_pays(shape, buckets, widths):
        return "per_bucket"
    return "padded" if padded_pays(shape, buckets, heads) else "sparse"


def dense_groups(counts: list[int], features: int) -> list[list[int]] | None:
    """The size groups of a model's dense levels (per-graph budgets, ``counts`` the first
    level's budgets), or :obj:`None` where one padded batch is as cheap: a batch with one large
    graph (D&D) then no longer pads every other graph's dense levels to it."""
    groups = bucket_graphs(counts, row_cost=lambda n: n * (n + features))
    return groups if len(groups) > 1 else None
