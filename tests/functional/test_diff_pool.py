"""diffpool.functional.sparse_diff_pool / padded_diff_pool: pooling embeddings one already has."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import SAGEConv
from torch_geometric.nn.dense import dense_diff_pool as pyg_dense_diff_pool
from torch_geometric.utils import to_dense_adj, to_dense_batch

from diffpool import DiffPoolConv
from diffpool.functional import AssignmentHead, padded_diff_pool, sparse_diff_pool
from diffpool.functional._plan import Plan
from helpers import random_batch

FIELDS = ("x", "adj", "s", "mask", "cluster_mask", "link_loss", "entropy_loss", "aux_loss")


def _inputs(sizes, clusters=4, features=5, seed=0):
    batch = random_batch(sizes, num_features=features, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(batch.num_nodes, 6, generator=gen, dtype=torch.float64)
    logits = torch.randn(batch.num_nodes, clusters, generator=gen, dtype=torch.float64)
    return batch, z, logits


def _dense_twin(z, logits, edge_index, batch, weight, **options):
    """padded_diff_pool on the padded form of a sparse batch."""
    dense_z, mask = to_dense_batch(z, batch)
    dense_logits, _ = to_dense_batch(logits, batch)
    adj = to_dense_adj(edge_index, batch, edge_attr=weight)
    return padded_diff_pool(dense_z, adj, dense_logits, mask, **options), adj


#: every size group in its own bucket: [30, 19] [11, 7] [4] [2]
APART = [[4, 5], [2, 0], [3], [1]]


def _layout(name: str, ratio):
    """A layout by name; ``"per_bucket apart"``: every size group in its own bucket, each
    holding its assignment at its own width."""
    if name == "per_bucket apart":
        return Plan("per_bucket", buckets=APART) if ratio is not None else Plan("sparse", APART)
    return name


LAYOUT_NAMES = ["auto", "padded", "sparse", "per_bucket apart"]


@pytest.mark.parametrize("ratio", [None, 0.3])
@pytest.mark.parametrize("link_loss", ["frobenius", "bce"])
@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_sparse_and_dense_functions_agree(ratio, link_loss, layout):
    """The sparse function on the flat batch and the dense one on its padded form give the
    same pooled tensors, losses and gradients, whatever the padding, in every layout: the
    adjacency as a sparse matrix per size bucket or as one padded block, and
    every size group in its own bucket (per-graph budgets: each bucket's assignment at its
    own width)."""
    batch, z, logits = _inputs([7, 2, 11, 4, 30, 19], clusters=9)
    weight = torch.rand(batch.edge_index.size(1), dtype=torch.float64) + 0.5
    z.requires_grad_()
    logits.requires_grad_()
    sparse = sparse_diff_pool(
        z, batch.edge_index, logits, batch.batch, ratio=ratio, link_loss=link_loss,
        edge_weight=weight, layout=_layout(layout, ratio),
    )  # fmt: skip
    dense, _ = _dense_twin(
        z, logits, batch.edge_index, batch.batch, weight, ratio=ratio, link_loss=link_loss
    )
    for name in FIELDS:
        torch.testing.assert_close(getattr(sparse, name), getattr(dense, name), msg=name)
    assert sparse.z is z
    grads = []
    for out in (sparse, dense):
        loss = out.aux_loss + out.x.pow(2).sum() + out.adj.sum() + out.s.pow(2).sum()
        grads.append(torch.autograd.grad(loss, (z, logits)))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("layout", ["sparse", "padded"])
def test_duplicate_edges_add_their_weights(layout):
    """An edge given twice counts with the sum of its weights, as in to_dense_adj: the
    sparse matrix coalesces, the dense block adds in place (and skips the coalesce)."""
    batch, z, logits = _inputs([6, 9, 4], clusters=3, seed=4)
    edge_index = torch.cat([batch.edge_index, batch.edge_index[:, :5]], dim=1)
    weight = torch.rand(edge_index.size(1), dtype=torch.float64) + 0.5
    sparse = sparse_diff_pool(z, edge_index, logits, batch.batch, edge_weight=weight, layout=layout)
    dense, adj = _dense_twin(z, logits, edge_index, batch.batch, weight)
    assert adj.max() > 1.5  # some entry holds two weights
    for name in FIELDS:
        torch.testing.assert_close(getattr(sparse, name), getattr(dense, name), msg=name)


def test_the_planner_chooses_by_size():
    """The padded batch's dense adjacency block where the work it adds over the size buckets
    stays under PADDED_EXTRA_MACS (small graphs; and under compile), the sparse product
    above; the assignment per bucket where the buckets' budgets differ enough (D&D)."""
    from diffpool.functional._plan import BatchShape, plan_sparse

    def plan(counts, ratio, layout="auto", clusters=None):
        if counts is None:
            return plan_sparse(None, layout)
        slots = clusters or max(1, int(0.25 * max(counts)))
        return plan_sparse(BatchShape(counts, 2 * sum(counts), 64, slots, ratio), layout)

    assert plan([25] * 20, 0.25).layout == "padded"  # MUTAG-like: 20 * 25^2 * 7 multiply-adds
    assert plan([200] * 20, 0.25).layout == "sparse"
    dd = [5748, 300, 250, 200, 150, 100] + [280] * 14
    assert plan(dd, 0.25, clusters=1437).layout == "per_bucket"
    assert plan(dd, None, clusters=1437).layout == "sparse"  # fixed budgets: one width
    assert plan(None, 0.25).layout == "padded"
    assert plan([25] * 20, 0.25, layout="sparse").layout == "sparse"  # as named
    with pytest.raises(ValueError, match="per-graph budgets"):
        plan([25] * 20, None, layout="per_bucket")


def test_the_padded_layout_is_chosen_by_the_work_its_padding_adds():
    """Two batches with the same dense product B N_max^2 C (20 graphs, the largest of 100
    nodes, 25 clusters): the padded batch where the sizes spread evenly, so that padding to
    N_max adds little over the size buckets (synthetic N_max 100: 0.80x to 0.87x of the sparse
    layout's time, measured); the sparse product where the other graphs are small, so that
    most of the padded batch would be padding."""
    from diffpool.functional._plan import BatchShape, plan_sparse

    def layout(counts):
        return plan_sparse(BatchShape(counts, 5 * sum(counts), 64, 25, None)).layout

    assert layout([100] + [25 + 4 * i for i in range(19)]) == "padded"
    assert layout([100] + [20] * 19) == "sparse"


def test_the_layer_is_the_function_over_its_gnns():
    batch = random_batch([6, 9, 3], num_features=5, seed=2)
    layer = DiffPoolConv(SAGEConv(5, 8), SAGEConv(5, 3), 3, ratio=0.5, link_loss="bce")
    out = layer(batch.x, batch.edge_index, batch.batch)
    z = layer.embed(batch.x, batch.edge_index)
    logits = layer.pool(batch.x, batch.edge_index)
    ref = sparse_diff_pool(z, batch.edge_index, logits, batch.batch, ratio=0.5, link_loss="bce")
    for name in FIELDS:
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), msg=name)


@pytest.mark.parametrize("dense", [False, True])
def test_an_assignment_head_gives_the_logits_it_maps(dense):
    """features @ W^T + b computed by the function (narrowed per size group with budgets) is
    the same as passing those logits."""
    batch, z, _ = _inputs([12, 3, 30, 8], seed=4)
    features = torch.randn(batch.num_nodes, 7, dtype=torch.float64)
    head = torch.nn.Linear(7, 9).double()
    results = []
    for s in (AssignmentHead(features, head.weight, head.bias), head(features)):
        head.zero_grad()
        if dense:
            dz, mask = to_dense_batch(z, batch.batch)
            ds = (
                AssignmentHead(to_dense_batch(features, batch.batch)[0], s.weight, s.bias)
                if isinstance(s, AssignmentHead)
                else to_dense_batch(s, batch.batch)[0]
            )
            adj = to_dense_adj(batch.edge_index, batch.batch).double()
            out = padded_diff_pool(dz, adj, ds, mask, ratio=0.25)
        else:
            out = sparse_diff_pool(z, batch.edge_index, s, batch.batch, ratio=0.25)
        (out.aux_loss + out.x.sum()).backward()
        results.append((out, head.weight.grad.clone()))
    (narrow, narrow_grad), (full, full_grad) = results
    for name in FIELDS:
        torch.testing.assert_close(getattr(narrow, name), getattr(full, name), msg=name)
    torch.testing.assert_close(narrow_grad, full_grad)


def test_dense_function_matches_pyg_on_a_batch_without_padding():
    """With graphs of one size PyG's dense_diff_pool and our padded_diff_pool agree: the same
    X' and A', the same entropy, and PyG's link loss is ours divided by N (it divides by N^2,
    we by N)."""
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(3, 6, 4, generator=gen)
    adj = (torch.rand(3, 6, 6, generator=gen) > 0.5).float()
    s = torch.randn(3, 6, 2, generator=gen)
    ours = padded_diff_pool(z, adj, s)
    x, out_adj, link, entropy = pyg_dense_diff_pool(z, adj, s)
    torch.testing.assert_close(ours.x, x)
    torch.testing.assert_close(ours.adj, out_adj)
    torch.testing.assert_close(ours.entropy_loss, entropy)
    # PyG: ||A - SS^T|| over the whole batch / numel; ours: per graph ||.|| / N_g, averaged
    per_graph = torch.linalg.matrix_norm(adj - s.softmax(-1) @ s.softmax(-1).transpose(1, 2))
    torch.testing.assert_close(ours.link_loss, (per_graph / 6).mean())
    torch.testing.assert_close(link, per_graph.pow(2).sum().sqrt() / adj.numel())


def test_hard_cluster_ids():
    batch, z, _ = _inputs([4, 3])
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    out = sparse_diff_pool(z, batch.edge_index, ids, batch.batch, num_clusters=3)
    assert out.entropy_loss == 0 and out.cluster_mask.tolist() == [[1, 1, 0], [0, 0, 1]]
    torch.testing.assert_close(out.x[1, 2], z[4:].sum(0))
    with pytest.raises(ValueError, match="hard cluster ids need num_clusters"):
        sparse_diff_pool(z, batch.edge_index, ids, batch.batch)


def test_bad_options_are_named():
    batch, z, logits = _inputs([4, 3])
    with pytest.raises(ValueError, match="link_loss must be one of"):
        sparse_diff_pool(z, batch.edge_index, logits, batch.batch, link_loss="l2")
    with pytest.raises(ValueError, match="returns 4 channels per node but num_clusters=3"):
        sparse_diff_pool(z, batch.edge_index, logits, batch.batch, num_clusters=3)
    with pytest.raises(ValueError, match="ratio"):
        padded_diff_pool(z[:4], torch.eye(4), logits[:4], ratio=2.0)


def _cliques(num: int, size: int):
    """``num`` cliques of ``size`` nodes with self-loops, as one graph: A = S S^T for the
    one-hot S of the cliques."""
    blocks = torch.block_diag(*[torch.ones(size, size)] * num)
    edge_index = blocks.nonzero().t()
    clique = torch.arange(num).repeat_interleave(size)
    return edge_index, clique, blocks


@pytest.mark.parametrize("num_cliques, residual", [(20, True), (100, False)])
@pytest.mark.parametrize("margin, rtol", [(10.0, 1e-6), (14.0, 1e-4), (18.0, 2e-2)])
def test_a_near_exact_fit_keeps_its_link_loss_in_float32(margin, rtol, num_cliques, residual):
    """||A - S S^T|| from three large terms cancels when S S^T fits A: computed in float32 it
    came out exactly 0 with a zero gradient. The terms are recomputed in float64 where they
    cancel, and a small dense block takes the residual itself, where nothing cancels: the loss
    is the explicit norm of the S the layer computed (losses of 4e-4, 7e-6 and 1e-7: the
    closed form in float64 is exact to 1e-8, 1e-5 and 1e-2 relative, the float32 residual to
    1e-4 at every margin), and its gradient that of a float64 run. The small graph of cliques
    takes the residual in the padded layout and in padded_diff_pool, the large one the
    identity; the sparse layout always takes the identity."""
    from diffpool.functional._plan import residual_pays

    edge_index, clique, dense_adj = _cliques(num_cliques, 5)
    n, c = clique.numel(), num_cliques
    assert residual_pays((1, n, c)) == residual
    base = torch.nn.functional.one_hot(clique, c).double() * margin
    z = torch.randn(n, 4, dtype=torch.float64)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        logits = base.to(dtype).detach().requires_grad_()
        for layout in ("padded", "sparse"):
            out = sparse_diff_pool(
                z.to(dtype), edge_index, logits, entropy_loss=False, layout=layout
            )
            s = out.s[0].detach().double()  # the assignment as computed, in the run's dtype
            explicit = torch.linalg.matrix_norm(dense_adj.double() - s @ s.T) / n
            assert 0 < float(out.link_loss.detach()) < 1e-3
            tol = 1e-4 if residual and layout == "padded" else rtol
            torch.testing.assert_close(out.link_loss.double(), explicit, rtol=tol, atol=0)
            (grads[dtype, layout],) = torch.autograd.grad(out.link_loss, logits)
        dense = padded_diff_pool(
            z.to(dtype), dense_adj.to(dtype), base.to(dtype), entropy_loss=False
        )
        tol = 1e-4 if residual else rtol
        torch.testing.assert_close(dense.link_loss.double(), explicit, rtol=tol, atol=0)
    for layout in ("padded", "sparse"):
        assert grads[torch.float32, layout].abs().sum() > 0
        torch.testing.assert_close(
            grads[torch.float32, layout].double(),
            grads[torch.float64, layout],
            rtol=0.05,
            atol=1e-9,
        )


def test_the_residual_takes_s_in_the_losses_dtype():
    """Embeddings in bfloat16 without autocast: the pooled blocks are bfloat16, the link
    loss is still that of the float32 assignment (the residual of a rounded S was 78% off on a
    near-exact fit)."""
    edge_index, clique, dense_adj = _cliques(20, 5)
    logits = torch.nn.functional.one_hot(clique, 20).float() * 10.0
    z = torch.randn(clique.numel(), 4)
    out = sparse_diff_pool(z.bfloat16(), edge_index, logits, entropy_loss=False)
    s = logits.softmax(-1).double()
    explicit = torch.linalg.matrix_norm(dense_adj.double() - s @ s.T) / clique.numel()
    assert out.x.dtype == torch.bfloat16 and out.link_loss.dtype == torch.float32
    torch.testing.assert_close(out.link_loss.double(), explicit, rtol=1e-4, atol=0)


def test_an_edge_between_two_graphs_is_refused():
    batch = random_batch([4, 3, 5], seed=3)
    last = batch.num_nodes - 1
    edge_index = torch.cat([batch.edge_index, torch.tensor([[0], [last]])], dim=1)
    layer = DiffPoolConv(SAGEConv(4, 8), SAGEConv(4, 3), 3)
    with pytest.raises(
        ValueError,
        match=r"1 edge\(s\) join nodes of different graphs .* node 0 "
        r"of graph 0 and node 11 of graph 2",
    ):
        layer(batch.x, edge_index, batch.batch)
    z, logits = torch.randn(batch.num_nodes, 6), torch.randn(batch.num_nodes, 3)
    with pytest.raises(ValueError, match="every edge must stay inside its graph"):
        sparse_diff_pool(z, edge_index, logits, batch.batch)
    # the check is one comparison, kept off the hot path with validate=False
    sparse_diff_pool(z, edge_index, logits, batch.batch, validate=False)


def test_dense_without_a_mask_is_an_all_true_mask():
    """No mask skips the masking; the result is that of a mask where every node is real."""
    torch.manual_seed(0)
    z, logits = torch.randn(3, 6, 4, dtype=torch.float64), torch.randn(3, 6, 5, dtype=torch.float64)
    adj = torch.rand(3, 6, 6, dtype=torch.float64)
    mask = torch.ones(3, 6, dtype=torch.bool)
    for link_loss in ("frobenius", "bce"):
        bare = padded_diff_pool(z, adj, logits, link_loss=link_loss)
        full = padded_diff_pool(z, adj, logits, mask, link_loss=link_loss)
        for name in FIELDS:
            torch.testing.assert_close(getattr(bare, name), getattr(full, name), msg=name)


def test_the_assignment_goes_per_bucket_only_where_that_pays():
    from diffpool.functional._plan import BatchShape, per_bucket_pays, size_buckets

    small = BatchShape([20, 12, 25, 9], 200, 64, 7, 0.25)
    buckets, _ = size_buckets(small)  # one bucket: nothing to gain
    assert len(buckets) == 1 and not per_bucket_pays(small, buckets, [7])
    # D&D's largest graph beside typical ones: 1437 slots against budgets of about 70
    large = BatchShape([5748] + [284] * 19, 60_000, 64, 1437, 0.25)
    buckets, _ = size_buckets(large)
    assert len(buckets) == 2
    assert per_bucket_pays(large, buckets, [1437, 71])
    assert not per_bucket_pays(large, buckets, [1437, 1437])  # fixed widths: no waste


@pytest.mark.parametrize("ratio", [None, 0.3])
@pytest.mark.parametrize("link_loss", ["frobenius", "bce"])
def test_int32_edge_index_and_batch_give_the_int64_result(ratio, link_loss):
    """int32 indices are valid in PyG: the function takes them (as int64) on every path, also
    with features and assignments wide enough for torch's vectorised scatter."""
    batch, _, _ = _inputs([7, 2, 11, 4, 30, 19])
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(batch.num_nodes, 64, generator=gen)
    logits = torch.randn(batch.num_nodes, 64, generator=gen)
    weight = torch.rand(batch.edge_index.size(1), generator=gen)
    options = dict(edge_weight=weight, ratio=ratio, link_loss=link_loss)
    expected = sparse_diff_pool(z, batch.edge_index, logits, batch.batch, **options)
    out = sparse_diff_pool(z, batch.edge_index.int(), logits, batch.batch.int(), **options)
    for name in FIELDS:
        torch.testing.assert_close(getattr(out, name), getattr(expected, name), msg=name)


@pytest.mark.parametrize("link_loss", ["frobenius", "bce", "none"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("masked", [False, True])
def test_dense_function_refuses_a_non_finite_adjacency(link_loss, value, masked):
    """A NaN in adj gave a finite link loss (0 for that graph) where the layer refuses it: the
    function now gives the layer's error; the embeddings' values stay the caller's."""
    from diffpool import DenseDiffPoolConv

    gen = torch.Generator().manual_seed(0)
    z, logits = torch.randn(2, 5, 4, generator=gen), torch.randn(2, 5, 3, generator=gen)
    adj = (torch.rand(2, 5, 5, generator=gen) > 0.5).float()
    adj[1, 0, 1] = value
    mask = torch.ones(2, 5, dtype=torch.bool) if masked else None
    with pytest.raises(ValueError, match="adj contains NaN or infinite values"):
        padded_diff_pool(z, adj, logits, mask, link_loss=link_loss)
    layer = DenseDiffPoolConv.from_encoder("sage", 4, 8, 3, link_loss=link_loss)
    with pytest.raises(ValueError, match="adj contains NaN or infinite values"):
        layer(z, adj, mask)
    padded_diff_pool(z, adj, logits, mask, link_loss=link_loss, validate=False)  # unchecked
    z[0, 0, 0] = float("nan")  # a diverging model's embeddings: its loss's to report
    padded_diff_pool(z, adj.nan_to_num(posinf=1.0), logits, mask, link_loss=link_loss)


def _head(rows: int, clusters: int = 3, features: int = 6):
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(clusters, features, generator=gen)
    return AssignmentHead(torch.randn(*rows, features, generator=gen), weight)


@pytest.mark.parametrize(
    "s, match",
    [
        (torch.randn(6, 3), r"s must have shape \[7, num_clusters\].*got \(6, 3\)"),
        (torch.randn(7), r"s must have shape \[7, num_clusters\].*got \(7,\)"),
        (torch.randn(1, 7, 3), r"s must have shape \[7, num_clusters\].*got \(1, 7, 3\)"),
        (torch.randn(7, 0), r"s must have shape \[7, num_clusters\].*got \(7, 0\)"),
        (_head((6,)), r"s.features must have shape \[7, num_features\].*got \(6, 6\)"),
        ([[0.0, 1.0]] * 7, "s must be a tensor of logits or of cluster ids"),
    ],
)
def test_sparse_logits_of_the_wrong_shape_are_named(s, match):
    batch, z, _ = _inputs([4, 3])
    with pytest.raises((ValueError, TypeError), match=match):
        sparse_diff_pool(z, batch.edge_index, s, batch.batch)


@pytest.mark.parametrize(
    "s, match",
    [
        (torch.randn(2, 4, 3), r"s must have shape \[2, 5, num_clusters\].*got \(2, 4, 3\)"),
        (torch.randn(3, 5, 3), r"s must have shape \[2, 5, num_clusters\].*got \(3, 5, 3\)"),
        (torch.randn(5), r"s must have shape \[2, 5, num_clusters\].*got \(5,\)"),
        (torch.randn(5, 3), r"s must have shape \[2, 5, num_clusters\].*got \(5, 3\)"),
        (torch.randn(1, 2, 5, 3), r"got \(1, 2, 5, 3\)"),
        (_head((2, 4)), r"s.features must have shape \[2, 5, num_features\].*got \(2, 4, 6\)"),
    ],
)
def test_dense_logits_of_the_wrong_shape_are_named(s, match):
    gen = torch.Generator().manual_seed(0)
    z, adj = torch.randn(2, 5, 4, generator=gen), torch.rand(2, 5, 5, generator=gen)
    with pytest.raises(ValueError, match=match):
        padded_diff_pool(z, adj, s, torch.ones(2, 5, dtype=torch.bool))


def test_dense_logits_of_one_graph_may_drop_the_batch_dimension():
    gen = torch.Generator().manual_seed(0)
    z, adj, s = torch.randn(5, 4, generator=gen), torch.rand(5, 5), torch.randn(5, 3)
    expected = padded_diff_pool(z[None], adj[None], s[None])
    for name in FIELDS:
        torch.testing.assert_close(
            getattr(padded_diff_pool(z, adj, s), name), getattr(expected, name), msg=name
        )
    head = _head((5,))
    torch.testing.assert_close(
        padded_diff_pool(z, adj, head).s, padded_diff_pool(z[None], adj[None], head).s
    )


def _padded(batch, z, logits, max_num_nodes=None):
    """The padded form of a sparse batch, as PyG's dense layers take it."""
    dense_z, mask = to_dense_batch(z, batch.batch, max_num_nodes=max_num_nodes)
    dense_logits, _ = to_dense_batch(logits, batch.batch, max_num_nodes=max_num_nodes)
    adj = to_dense_adj(batch.edge_index, batch.batch, max_num_nodes=max_num_nodes).to(z.dtype)
    return dense_z, adj, dense_logits, mask


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("form", ["padded", "no mask", "one graph"])
def test_dense_diff_pool_is_a_drop_in_for_pygs(normalize, form):
    """``diffpool.functional.dense_diff_pool`` takes PyG's arguments and returns what PyG's
    returns, ``x, adj, link_loss, ent_loss`` with its normalisation, and the same gradients."""
    from diffpool.functional import dense_diff_pool

    batch, z, logits = _inputs([7, 2, 11, 4] if form == "padded" else [9], clusters=3)
    args = list(_padded(batch, z, logits))
    if form != "padded":
        args[3] = None
    if form == "one graph":  # PyG takes [N, F] / [N, N] / [N, C] for one graph
        args[:3] = [a[0] for a in args[:3]]
    results = []
    for pool in (dense_diff_pool, pyg_dense_diff_pool):
        inputs = [a.clone().requires_grad_() if a is not None and a.is_floating_point() else a
                  for a in args]  # fmt: skip
        out = pool(*inputs, normalize=normalize)
        assert isinstance(out, tuple) and len(out) == 4
        x, adj, link, ent = out  # what PyG users write
        grads = torch.autograd.grad(x.sum() + adj.sum() + link + ent, [inputs[0], inputs[2]])
        results.append((out, grads))
    (ours, our_grads), (theirs, their_grads) = results
    for name, a, b in zip(("x", "adj", "link_loss", "ent_loss"), ours, theirs):
        torch.testing.assert_close(a, b, msg=name)
    for a, b in zip(our_grads, their_grads):
        torch.testing.assert_close(a, b)
    positional = dense_diff_pool(*args, normalize)  # normalize is PyG's fifth positional
    torch.testing.assert_close(positional[2], theirs[2])


@pytest.mark.parametrize("normalization, normalize", [("pyg", True), ("pyg_unnormalized", False)])
@pytest.mark.parametrize("max_num_nodes", [None, 16])
@pytest.mark.parametrize("ratio", [None, 0.5])
def test_pyg_normalization_gives_pygs_losses(normalization, normalize, max_num_nodes, ratio):
    """With ``loss_normalization="pyg"`` (``"pyg_unnormalized"``) the sparse and the padded
    functions give the losses of PyG's ``dense_diff_pool(..., normalize=True)`` (``False``) on
    the same padded inputs (a batch padded to its largest graph, or to a fixed size as
    ``ToDense`` does), with per-graph budgets too; the per-graph form stays the default."""
    batch, z, logits = _inputs([7, 2, 11, 4], clusters=5)
    dense_z, adj, dense_logits, mask = _padded(batch, z, logits, max_num_nodes)
    s = dense_logits
    if ratio is not None:  # PyG's softmax over each graph's own budget of slots
        budgets = torch.tensor([4, 1, 5, 2])[:, None, None]  # ceil(0.5 * N_g), at most 5
        s = torch.where(torch.arange(5) < budgets, dense_logits, -torch.inf)
    _, _, link, ent = pyg_dense_diff_pool(dense_z, adj, s, mask, normalize=normalize)
    options = dict(loss_normalization=normalization, ratio=ratio, link_loss_coef=2.0,
                   entropy_loss_coef=0.5)  # fmt: skip
    sparse = sparse_diff_pool(
        z, batch.edge_index, logits, batch.batch, max_num_nodes=max_num_nodes, **options
    )
    padded = padded_diff_pool(dense_z, adj, dense_logits, mask, **options)
    for out in (sparse, padded):
        torch.testing.assert_close(out.link_loss, link)
        torch.testing.assert_close(out.entropy_loss, ent)
        torch.testing.assert_close(out.aux_loss, 2.0 * link + 0.5 * ent)
    default = sparse_diff_pool(z, batch.edge_index, logits, batch.batch, ratio=ratio)
    assert not torch.allclose(default.link_loss, link)  # the default is the per-graph form
    torch.testing.assert_close(default.x, sparse.x)


def test_per_graph_and_pyg_normalizations_relate_as_documented():
    """For one graph without padding PyG's link loss is the per-graph one divided by N_g and
    the entropies are equal; the per-graph losses of the PyG forms are each graph's
    ``r_g / N^2`` (``r_g``) and ``H_g / N``, with N the padded size."""
    batch, z, logits = _inputs([9], clusters=3)
    per_graph = sparse_diff_pool(z, batch.edge_index, logits, batch.batch)
    pyg = sparse_diff_pool(z, batch.edge_index, logits, batch.batch, loss_normalization="pyg")
    torch.testing.assert_close(pyg.link_loss, per_graph.link_loss / 9)
    torch.testing.assert_close(pyg.entropy_loss, per_graph.entropy_loss)
    batch, z, logits = _inputs([7, 2, 11], clusters=3)
    nodes = torch.tensor([7.0, 2.0, 11.0], dtype=torch.float64)
    outs = {
        norm: sparse_diff_pool(z, batch.edge_index, logits, batch.batch, loss_normalization=norm)
        for norm in ("per_graph", "pyg", "pyg_unnormalized")
    }
    r = outs["per_graph"].link_loss_per_graph * nodes
    entropy = outs["per_graph"].entropy_loss_per_graph * nodes
    torch.testing.assert_close(outs["pyg"].link_loss_per_graph, r / 11**2)
    torch.testing.assert_close(outs["pyg_unnormalized"].link_loss_per_graph, r)
    torch.testing.assert_close(outs["pyg"].entropy_loss_per_graph, entropy / 11)
    torch.testing.assert_close(outs["pyg"].link_loss, r.pow(2).sum().sqrt() / (3 * 11**2))


def test_pyg_normalization_options_are_checked():
    batch, z, logits = _inputs([4, 3])
    with pytest.raises(ValueError, match="loss_normalization must be one of"):
        sparse_diff_pool(z, batch.edge_index, logits, batch.batch, loss_normalization="padded")
    with pytest.raises(ValueError, match="Frobenius link loss only"):
        sparse_diff_pool(
            z, batch.edge_index, logits, batch.batch, link_loss="bce", loss_normalization="pyg"
        )
    none = sparse_diff_pool(
        z, batch.edge_index, logits, batch.batch, link_loss="none", loss_normalization="pyg"
    )
    assert none.link_loss == 0
    with pytest.raises(TypeError):  # the drop-in takes PyG's arguments only
        from diffpool.functional import dense_diff_pool

        dense_diff_pool(*_padded(batch, z, logits), ratio=0.5)


def test_a_nan_assignment_gives_a_nan_link_loss():
    """A diverging assignment must not hide behind a finite loss (the square root of the
    identity's terms let NaN through as 0)."""
    batch, z, logits = _inputs([6, 9, 4], clusters=3, seed=4)
    logits = logits.clone()
    logits[0] = float("nan")
    out = sparse_diff_pool(z, batch.edge_index, logits, batch.batch, entropy_loss=False)
    assert torch.isnan(out.link_loss) and torch.isnan(out.aux_loss)


def test_a_plan_must_hold_every_graph_once():
    batch, z, logits = _inputs([6, 9, 4], clusters=3, seed=4)
    for buckets in ([[0, 1]], [[0, 1], [1, 2]], [[0], [1], [2], [5]], [[0, 1, 2], []]):
        with pytest.raises(ValueError, match="every graph of the batch once"):
            sparse_diff_pool(
                z, batch.edge_index, logits, batch.batch, layout=Plan("sparse", buckets)
            )


def test_the_drop_in_takes_a_float_mask_as_pyg_does():
    from diffpool.functional import dense_diff_pool

    batch, z, logits = _inputs([6, 9, 4], clusters=3, seed=4)
    dz, mask = to_dense_batch(z, batch.batch)
    dl, _ = to_dense_batch(logits, batch.batch)
    adj = to_dense_adj(batch.edge_index, batch.batch).double()
    ours = dense_diff_pool(dz, adj, dl, mask.double())
    for got, want in zip(ours, pyg_dense_diff_pool(dz, adj, dl, mask.double())):
        torch.testing.assert_close(got, want)


def test_under_compile_a_graph_over_max_num_nodes_is_an_error():
    """With static shapes (``max_num_nodes`` given, no validation under ``torch.compile``) a
    larger graph would spill into the next graph's rows: a device-side assertion stops it."""
    x, s = torch.randn(7, 3), torch.randn(7, 4)
    edge_index = torch.tensor([[0, 1, 2, 3, 5], [1, 2, 3, 4, 6]])
    batch = torch.tensor([0, 0, 0, 0, 0, 1, 1])

    def pool(x, s, edge_index, batch):
        return sparse_diff_pool(x, edge_index, s, batch, batch_size=2, max_num_nodes=4).x

    with pytest.raises(RuntimeError, match="more nodes than max_num_nodes"):
        torch.compile(pool, fullgraph=True, backend="eager")(x, s, edge_index, batch)


@pytest.mark.parametrize("ratio", [None, 0.5])
@pytest.mark.parametrize("value", [float("-inf"), float("inf"), float("nan")])
def test_padded_rows_logits_are_ignored(ratio, value):
    """The logits of padded rows never reach the output: a -inf masking of the padding (or any
    non-finite value there) gives the result of zero logits, not NaN."""
    batch, z, logits = _inputs([3, 6, 5])
    dense_z, mask = to_dense_batch(z, batch.batch)
    adj = to_dense_adj(batch.edge_index, batch.batch).double()
    dense_logits, _ = to_dense_batch(logits, batch.batch)
    want = padded_diff_pool(dense_z, adj, dense_logits, mask, ratio=ratio)
    masked = dense_logits.masked_fill(~mask.unsqueeze(-1), value).requires_grad_()
    got = padded_diff_pool(dense_z, adj, masked, mask, ratio=ratio)
    for name in FIELDS:
        torch.testing.assert_close(getattr(got, name), getattr(want, name), msg=name)
    got.aux_loss.backward()
    assert torch.isfinite(masked.grad).all() and not masked.grad[~mask].any()


@pytest.mark.parametrize("layout", ["sparse", "per_bucket"])
def test_second_derivatives_of_the_link_loss_on_every_layout(layout):
    """A gradient penalty through the Frobenius link loss on the layouts that compute it from
    the identity's terms is the padded layout's (whose residual autograd differentiates
    twice): the ||S^T S||^2 term's backward was once-differentiable and its part of the
    second derivative was silently dropped by ``torch.autograd.grad``."""
    batch, z, logits = _inputs([6, 1, 9, 4], clusters=3, seed=2)

    def penalty(layout):
        s = logits.clone().requires_grad_()
        out = sparse_diff_pool(z, batch.edge_index, s, batch.batch, ratio=0.9, layout=layout)
        (grad,) = torch.autograd.grad(out.link_loss, s, create_graph=True)
        return torch.autograd.grad(grad.pow(2).sum(), s)[0]

    torch.testing.assert_close(penalty(layout), penalty("padded"))


def test_a_cluster_masked_with_minus_infinity_has_zero_entropy():
    """Logits of -inf (a cluster the caller masks out) have probability 0 and add nothing to
    the entropy, as in PyG's ``dense_diff_pool``: 0 * log 0 made the entropy and every
    gradient NaN."""
    from diffpool.functional import dense_diff_pool

    batch, z, logits = _inputs([6, 9, 4], clusters=3, seed=4)
    logits = logits.clone()
    logits[:, 2] = float("-inf")
    logits.requires_grad_()
    got = dense_diff_pool(*_padded(batch, z, logits))
    want = pyg_dense_diff_pool(*_padded(batch, z, logits))
    torch.testing.assert_close(got[3], want[3])
    out = sparse_diff_pool(z, batch.edge_index, logits, batch.batch)
    (grad,) = torch.autograd.grad(out.aux_loss, logits)
    assert torch.isfinite(out.entropy_loss) and torch.isfinite(grad).all()
