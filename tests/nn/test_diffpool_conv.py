import math

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader
from torch_geometric.nn import DenseGCNConv, DenseSAGEConv, GCNConv, SAGEConv, dense_diff_pool
from torch_geometric.utils import to_dense_adj, to_dense_batch

from diffpool import DenseDiffPoolConv, DiffPoolConv
from helpers import random_batch, tie_gcn, tie_sage

try:
    from torch_sparse import SparseTensor
except ImportError:  # pragma: no cover - the `sparse` extra is optional
    SparseTensor = None


def sage_layer(in_channels, num_clusters, hidden=8, **kwargs):
    return DiffPoolConv(
        SAGEConv(in_channels, hidden), SAGEConv(in_channels, num_clusters), num_clusters, **kwargs
    )


def dense_reference(layer, batch, normalize=False):
    """PyG's dense formulation with the same weights and the same S."""
    dtype = batch.x.dtype
    emb = DenseSAGEConv(layer.embed.in_channels, layer.embed.out_channels).to(dtype)
    pool = DenseSAGEConv(layer.pool.in_channels, layer.pool.out_channels).to(dtype)
    tie_sage(emb, layer.embed)
    tie_sage(pool, layer.pool)
    x, mask = to_dense_batch(batch.x, batch.batch)
    adj = to_dense_adj(batch.edge_index, batch.batch).to(dtype)
    z, s = emb(x, adj, mask), pool(x, adj, mask)
    return dense_diff_pool(z, adj, s, mask, normalize=normalize), mask


def check_against_reference(layer, batch, atol=1e-5):
    out = layer(batch.x, batch.edge_index, batch.batch)
    (x_ref, adj_ref, link_ref, ent_ref), mask = dense_reference(layer, batch)
    torch.testing.assert_close(out.x, x_ref, atol=atol, rtol=1e-5)
    torch.testing.assert_close(out.adj, adj_ref, atol=atol, rtol=1e-5)
    num_nodes = mask.sum(-1).to(out.s.dtype)
    # Our per-graph link losses are ||A_g - S_g S_g^T||_F / N_g; PyG's unnormalised loss is the
    # Frobenius norm over the whole (zero-padded) batch.
    unnormalised = torch.sqrt(((out.link_loss_per_graph * num_nodes) ** 2).sum())
    torch.testing.assert_close(unnormalised, link_ref, atol=atol, rtol=1e-5)
    # PyG averages entropy over all B * N_max rows (padding rows count as zero).
    ent_sum = (out.entropy_loss_per_graph * num_nodes).sum()
    torch.testing.assert_close(ent_sum, ent_ref * mask.numel(), atol=1e-4, rtol=1e-5)
    return out


@pytest.mark.parametrize("sizes", [[5, 9, 3, 12], [1, 2, 30], [17]])
def test_matches_dense_reference_random(sizes):
    batch = random_batch(sizes, num_features=4)
    check_against_reference(sage_layer(4, 3), batch)


@pytest.mark.parametrize("normalization, normalize", [("pyg", True), ("pyg_unnormalized", False)])
def test_pyg_loss_normalization_gives_pygs_losses(normalization, normalize):
    """With ``loss_normalization="pyg"`` the layer's losses are those of PyG's dense
    formulation (``dense_diff_pool(..., normalize=True)``; ``"pyg_unnormalized"``: ``False``)
    on the padded batch, so that a PyG model's coefficients carry over to ``aux_loss``."""
    batch = random_batch([5, 9, 3, 12], num_features=4)
    layer = sage_layer(4, 3, loss_normalization=normalization, link_loss_coef=2.0,
                       entropy_loss_coef=0.1)  # fmt: skip
    out = layer(batch.x, batch.edge_index, batch.batch)
    (x_ref, adj_ref, link_ref, ent_ref), _ = dense_reference(layer, batch, normalize)
    torch.testing.assert_close(out.x, x_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.link_loss, link_ref)
    torch.testing.assert_close(out.entropy_loss, ent_ref)
    torch.testing.assert_close(out.aux_loss, 2.0 * link_ref + 0.1 * ent_ref)
    built = DiffPoolConv.from_encoder("sage", 4, 8, 3, loss_normalization=normalization)
    assert built.loss_normalization == normalization
    assert f"loss_normalization='{normalization}'" in repr(built)
    assert "loss_normalization" not in repr(sage_layer(4, 3))  # the default, per graph
    with pytest.raises(ValueError, match="Frobenius link loss only"):
        sage_layer(4, 3, link_loss="bce", loss_normalization=normalization)
    with pytest.raises(ValueError, match="loss_normalization must be one of"):
        sage_layer(4, 3, loss_normalization="PyG")


@pytest.mark.parametrize(
    "name", ["ENZYMES", "PROTEINS", pytest.param("DD", marks=pytest.mark.slow)]
)
def test_matches_dense_reference_tu(tu, name):
    """Real batches of 20 graphs, in float64 so that the comparison tests the algebra."""
    dataset = tu(name)
    batch = next(iter(DataLoader(dataset, batch_size=20, shuffle=False)))
    num_clusters = math.ceil(0.25 * int(batch.batch.bincount().max()))
    layer = sage_layer(dataset.num_features, num_clusters, hidden=16).double()
    batch.x = batch.x.double()
    check_against_reference(layer, batch)


def test_float32_link_loss_is_accurate(tu):
    """In float32 our link loss stays within 1e-5 (relative) of the float64 value. (PyG's
    float32 dense norm is 6e-5 off on this batch: it sums 20 * 336^2 squared entries.)"""
    dataset = tu("PROTEINS")
    batch = next(iter(DataLoader(dataset, batch_size=20, shuffle=False)))
    layer = sage_layer(dataset.num_features, 84, hidden=16)
    out32 = layer(batch.x, batch.edge_index, batch.batch)
    out64 = layer.double()(batch.x.double(), batch.edge_index, batch.batch)
    torch.testing.assert_close(
        out32.link_loss_per_graph.double(), out64.link_loss_per_graph, rtol=1e-5, atol=1e-7
    )


def test_edge_weight_matches_dense_reference():
    batch = random_batch([6, 10, 4], num_features=3)
    row, col = batch.edge_index
    weight = 0.5 + ((row + col) % 5).float() / 5  # symmetric, as GCN's two forms need
    layer = DiffPoolConv(GCNConv(3, 8), GCNConv(3, 4), 4)
    out = layer(batch.x, batch.edge_index, batch.batch, edge_weight=weight)
    emb, pool = DenseGCNConv(3, 8), DenseGCNConv(3, 4)
    tie_gcn(emb, layer.embed)
    tie_gcn(pool, layer.pool)
    x, mask = to_dense_batch(batch.x, batch.batch)
    adj = to_dense_adj(batch.edge_index, batch.batch, edge_attr=weight)
    x_ref, adj_ref, link_ref, _ = dense_diff_pool(
        emb(x, adj, mask), adj, pool(x, adj, mask), mask, normalize=False
    )
    torch.testing.assert_close(out.x, x_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.adj, adj_ref, atol=1e-5, rtol=1e-5)
    n = mask.sum(-1).float()
    torch.testing.assert_close(torch.sqrt(((out.link_loss_per_graph * n) ** 2).sum()), link_ref)


def test_awkward_graphs_match_reference():
    """One node, no edges, isolated nodes, self-loops and duplicate edges."""
    graphs = random_batch([1, 4, 6, 3], num_features=3).to_data_list()
    graphs[1].edge_index = torch.empty(2, 0, dtype=torch.long)  # no edges
    graphs[2].edge_index = torch.tensor([[0, 1, 1, 0, 2, 2], [1, 0, 0, 1, 2, 2]])  # dup + loop
    batch = Batch.from_data_list(graphs)  # node 3..5 of graph 2 isolated
    out = check_against_reference(sage_layer(3, 4), batch)
    assert torch.isfinite(out.aux_loss)
    out.aux_loss.backward()


def test_padding_rows_and_unused_slots_are_zero():
    batch = random_batch([3, 10, 5], num_features=4)
    out = sage_layer(4, 5, ratio=0.25)(batch.x, batch.edge_index, batch.batch)
    assert out.s.shape == (3, 10, 3)  # ceil(0.25 * 10) = 3 slots
    assert torch.equal(out.cluster_mask, torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0]]).bool())
    assert torch.all(out.s[~out.mask] == 0)
    slot_zero = ~out.cluster_mask
    assert torch.all(out.s.transpose(1, 2)[slot_zero] == 0)
    assert torch.all(out.x[slot_zero] == 0)
    assert torch.all(out.adj[slot_zero] == 0)
    assert torch.all(out.adj.transpose(1, 2)[slot_zero] == 0)
    # Every real node's assignment sums to one over its own graph's clusters.
    torch.testing.assert_close(out.s.sum(-1)[out.mask], torch.ones(18))


@pytest.mark.parametrize("ratio", [None, 0.25])
@pytest.mark.parametrize("link_loss", ["frobenius", "bce"])
def test_padding_invariance(ratio, link_loss):
    """A graph's outputs and losses do not change when larger graphs join its batch."""
    layer = sage_layer(4, 6, ratio=ratio, link_loss=link_loss)
    small = random_batch([7], seed=1)
    big = random_batch([25, 40], seed=2)
    alone = layer(small.x, small.edge_index, small.batch)
    mixed_batch = Batch.from_data_list(
        big.to_data_list()[:1] + small.to_data_list() + big.to_data_list()[1:]
    )
    mixed = layer(mixed_batch.x, mixed_batch.edge_index, mixed_batch.batch)
    k = alone.x.size(1)
    torch.testing.assert_close(mixed.x[1, :k], alone.x[0])
    assert torch.all(mixed.x[1, k:] == 0)
    torch.testing.assert_close(mixed.adj[1, :k, :k], alone.adj[0])
    torch.testing.assert_close(mixed.s[1, :7, :k], alone.s[0])
    torch.testing.assert_close(mixed.link_loss_per_graph[1], alone.link_loss)
    torch.testing.assert_close(mixed.entropy_loss_per_graph[1], alone.entropy_loss)


@pytest.mark.parametrize("ratio", [None, 0.3])
def test_permutation_invariance(ratio):
    layer = sage_layer(4, 5, ratio=ratio).eval()
    batch = random_batch([9, 14], seed=3)
    out = layer(batch.x, batch.edge_index, batch.batch)
    perm = torch.cat([torch.randperm(9), 9 + torch.randperm(14)])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    out_p = layer(batch.x[perm], inv[batch.edge_index], batch.batch)
    torch.testing.assert_close(out_p.x, out.x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_p.adj, out.adj, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_p.link_loss, out.link_loss)
    torch.testing.assert_close(out_p.entropy_loss, out.entropy_loss)


def test_loss_bounds():
    batch = random_batch([4, 12, 30], seed=4)
    for ratio in (None, 0.25):
        out = sage_layer(4, 8, ratio=ratio)(batch.x, batch.edge_index, batch.batch)
        # 0/1 adjacency and S S^T in [0, 1]: the per-entry RMS error lies in [0, 1].
        assert torch.all(out.link_loss_per_graph >= 0)
        assert torch.all(out.link_loss_per_graph <= 1)
        budgets = out.cluster_mask.sum(-1).double()
        assert torch.all(out.entropy_loss_per_graph >= 0)
        assert torch.all(out.entropy_loss_per_graph <= torch.log(budgets) + 1e-6)


def test_link_loss_zero_for_perfect_assignment():
    """Two disjoint cliques with self-loops and a one-hot S give A = S S^T exactly."""
    edge_index = torch.tensor(
        [(i, j) for i in range(3) for j in range(3)]
        + [(i, j) for i in range(3, 5) for j in range(3, 5)]
    ).t()
    x = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 2)
    layer = DiffPoolConv(SAGEConv(2, 4), _FixedLogits(x * 100), 2)
    out = layer(x, edge_index)
    assert out.link_loss.item() == pytest.approx(0.0, abs=1e-6)
    assert out.entropy_loss.item() == pytest.approx(0.0, abs=1e-6)
    layer.link_loss = "bce"
    assert layer(x, edge_index).link_loss.item() < 1e-5


@pytest.mark.parametrize("ratio", [None, 0.25])
def test_bce_matches_elementwise_reference_per_graph(ratio, monkeypatch):
    """The BCE link loss, evaluated per size bucket, equals the elementwise BCE over each
    graph's N_g x N_g pairs of the dense S and A, in value and gradient, with several buckets
    and with row blocks smaller than one graph."""
    import diffpool.functional.formulas as losses

    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 64)
    batch = random_batch([40, 3, 17, 9, 60, 1, 25], num_features=4, seed=21)
    layer = sage_layer(4, 12, ratio=ratio, link_loss="bce", entropy_loss=False).double()
    x = batch.x.double()
    out = layer(x, batch.edge_index, batch.batch)
    adj = to_dense_adj(batch.edge_index, batch.batch)
    reference = []
    for g, n in enumerate(out.mask.sum(-1).tolist()):
        p = (out.s[g, :n] @ out.s[g, :n].t()).clamp(max=1.0)
        a = adj[g, :n, :n].double()
        bce = -a * torch.log(p + 1e-7) - (1 - a) * torch.log(1 - p + 1e-7)
        reference.append(bce.sum() / n**2)
    reference = torch.stack(reference)
    torch.testing.assert_close(out.link_loss_per_graph, reference)
    grads = []
    for loss in (out.link_loss, reference.mean()):
        grads.append(torch.autograd.grad(loss, list(layer.pool.parameters()), retain_graph=True))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref)


class _FixedLogits(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x, edge_index):
        return self.logits


@pytest.mark.parametrize("link_loss,ratio", [("frobenius", None), ("bce", 0.5), ("frobenius", 0.5)])
def test_gradcheck(link_loss, ratio):
    batch = random_batch([3, 5], num_features=2, seed=5)
    layer = sage_layer(2, 3, hidden=3, ratio=ratio, link_loss=link_loss).double()
    x = batch.x.double().requires_grad_()

    def fn(x):
        out = layer(x, batch.edge_index, batch.batch)
        return out.x, out.adj, out.link_loss, out.entropy_loss

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)


def test_unbatched_call_equals_batch_of_one():
    batch = random_batch([11], seed=6)
    layer = sage_layer(4, 3)
    a = layer(batch.x, batch.edge_index)
    b = layer(batch.x, batch.edge_index, batch.batch)
    assert a.x.shape == (1, 3, 8)
    for left, right in zip(a, b):
        torch.testing.assert_close(left, right)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_torch_sparse_input(layout):
    batch = random_batch([5, 8], seed=7)
    layer = sage_layer(4, 3)
    ref = layer(batch.x, batch.edge_index, batch.batch)
    n = batch.num_nodes
    adj_t = torch.sparse_coo_tensor(
        batch.edge_index.flip(0), torch.ones(batch.edge_index.size(1)), (n, n)
    ).coalesce()
    if layout == "csr":
        adj_t = adj_t.to_sparse_csr()
    out = layer(batch.x, adj_t, batch.batch)
    torch.testing.assert_close(out.x, ref.x)
    torch.testing.assert_close(out.adj, ref.adj)
    torch.testing.assert_close(out.link_loss, ref.link_loss)


@pytest.mark.sparse
@pytest.mark.skipif(SparseTensor is None, reason="torch_sparse not installed")
def test_sparse_tensor_input():
    batch = random_batch([5, 8, 2], seed=8)
    # A directed edge checks the adj_t convention.
    batch.edge_index = torch.cat([batch.edge_index, torch.tensor([[0], [4]])], dim=1)
    layer = sage_layer(4, 3)
    ref = layer(batch.x, batch.edge_index, batch.batch)
    n = batch.num_nodes
    adj_t = SparseTensor(row=batch.edge_index[1], col=batch.edge_index[0], sparse_sizes=(n, n))
    out = layer(batch.x, adj_t, batch.batch)
    torch.testing.assert_close(out.x, ref.x)
    torch.testing.assert_close(out.adj, ref.adj)
    torch.testing.assert_close(out.link_loss, ref.link_loss)


def test_static_shapes():
    batch = random_batch([5, 8], seed=9)
    layer = sage_layer(4, 3, ratio=0.5)
    out = layer(batch.x, batch.edge_index, batch.batch, batch_size=2, max_num_nodes=12)
    assert out.s.shape == (2, 12, 3)
    ref = layer(batch.x, batch.edge_index, batch.batch)
    torch.testing.assert_close(out.x[:, : ref.x.size(1)], ref.x)
    torch.testing.assert_close(out.link_loss, ref.link_loss)


def test_float64_and_autocast():
    batch = random_batch([6, 9], seed=10)
    layer = sage_layer(4, 3)
    ref = layer(batch.x, batch.edge_index, batch.batch)
    out64 = layer.double()(batch.x.double(), batch.edge_index, batch.batch)
    assert out64.x.dtype == torch.float64
    torch.testing.assert_close(out64.x.float(), ref.x, atol=1e-5, rtol=1e-5)
    layer.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = layer(batch.x, batch.edge_index, batch.batch)
    assert torch.isfinite(out16.aux_loss)
    assert out16.link_loss.dtype == torch.float32
    torch.testing.assert_close(out16.link_loss, ref.link_loss, atol=2e-2, rtol=2e-2)


def test_no_nan_from_saturated_logits():
    batch = random_batch([4, 6], seed=11)
    layer = sage_layer(4, 3, ratio=0.5, link_loss="bce")
    with torch.no_grad():
        layer.pool.lin_l.weight.mul_(1e4)
    out = layer(batch.x * 100, batch.edge_index, batch.batch)
    out.aux_loss.backward()
    assert torch.isfinite(out.aux_loss)
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


def _largest_strided_tensor(fn):
    """Number of elements of the largest strided tensor any op returns while ``fn`` runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestTensor(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                    self.largest = max(self.largest, t.numel())
            return out

    with LargestTensor() as mode:
        fn()
    return mode.largest


def test_no_n_by_n_tensor(monkeypatch):
    """Forward and backward never allocate a dense tensor of B * N_max * N_max elements. The BCE
    loss evaluates pairs in row blocks of at most ``_CHUNK_ELEMENTS`` elements (4M by default;
    lowered here so that this small batch needs several blocks). The layouts that build no
    adjacency block (the planner takes the padded block for small or dense graphs only, where
    padding adds less than ``PADDED_EXTRA_MACS`` multiply-adds)."""
    import diffpool.functional.formulas as losses

    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 4 * 300 * 64)
    sizes = [300, 40, 60, 20]
    batch = random_batch(sizes, num_features=4, seed=12)
    for link_loss in ("frobenius", "bce"):
        layer = sage_layer(4, 10, link_loss=link_loss)

        def step(layer=layer):
            layer(batch.x, batch.edge_index, batch.batch, layout="sparse").aux_loss.backward()

        largest = _largest_strided_tensor(step)
        n_by_n = len(sizes) * 300 * 300
        assert largest < n_by_n // 4, (link_loss, largest)


class _WholeGNN(torch.nn.Module):
    """The pooling GNN and its head as one module, so that DiffPoolConv computes all C logits
    for every node (the path of a pooling GNN given without a head)."""

    def __init__(self, gnn, head):
        super().__init__()
        self.gnn, self.head = gnn, head

    def forward(self, x, edge_index, edge_weight=None):
        return self.head(self.gnn(x, edge_index, edge_weight))


@pytest.mark.parametrize("encoder", ["sage", "gcn"])
def test_per_graph_budgets_project_only_the_slots_they_use(encoder, monkeypatch):
    """With per-graph budgets, the layer's head computes only the first C_g rows of its map for
    each size bucket: the same outputs, losses and gradients as computing all C logits for
    every node."""
    from diffpool.functional._plan import Plan, bucket_graphs

    sizes = [40, 3, 17, 9, 60, 1, 25]
    # small graphs would share one bucket (one wide map): keep every size group apart, and
    # hold S per bucket
    plan = Plan("per_bucket", buckets=bucket_graphs(sizes))
    batch = random_batch(sizes, num_features=5, seed=3)
    weight = torch.rand(batch.edge_index.size(1), dtype=torch.float64) + 0.5
    layer = DiffPoolConv.from_encoder(
        encoder, 5, 8, 16, num_layers=2, concat=True, ratio=0.25, entropy_loss=True
    ).double()
    whole = DiffPoolConv(layer.embed, _WholeGNN(layer.pool, layer.head), 16, ratio=0.25).double()
    widths = []
    linear = torch.nn.functional.linear
    monkeypatch.setattr(
        torch.nn.functional,
        "linear",
        lambda x, w, b=None: widths.append(w.size(0)) or linear(x, w, b),
    )
    x = batch.x.double()
    calls = []
    layer.head.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    outputs = []
    for conv in (layer, whole):
        conv.zero_grad()
        out = conv(x, batch.edge_index, batch.batch, edge_weight=weight, layout=plan)
        loss = out.aux_loss + out.x.pow(2).sum() + out.adj.sum()
        loss.backward()
        outputs.append((out, [p.grad.clone() for p in layer.parameters()]))
    (narrow, narrow_grads), (full, full_grads) = outputs
    for name in ("x", "adj", "s", "link_loss", "entropy_loss", "aux_loss"):
        torch.testing.assert_close(getattr(narrow, name), getattr(full, name))
    for left, right in zip(narrow_grads, full_grads):
        torch.testing.assert_close(left, right)
    # the whole [N, C] map ran once, for the reference only; the buckets {60, 40}, {25, 17},
    # {9}, {3} and {1} used 15, 7, 3, 1 and 1 of its rows (the budgets of their largest graphs)
    assert calls == [torch.Size([batch.num_nodes, 16])]
    assert {15, 7, 3, 1} <= set(widths)


def test_torch_compile_matches_eager():
    """With a fixed node budget (``batch_size`` and ``max_num_nodes``), the layer compiles as
    one graph (``fullgraph=True``: no graph break; the ``"padded"`` layout)."""
    batch = random_batch([5, 8, 3], seed=13)
    layer = sage_layer(4, 3, ratio=0.5)
    eager = layer(batch.x, batch.edge_index, batch.batch, batch_size=3, max_num_nodes=8)
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(batch.x, batch.edge_index, batch.batch, batch_size=3, max_num_nodes=8)
    for left, right in zip(out, eager):
        torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)


def test_dense_level_after_sparse_level():
    batch = random_batch([10, 16, 7], seed=14)
    first = sage_layer(4, 6, ratio=0.25)
    second = DenseDiffPoolConv(DenseSAGEConv(8, 8), DenseSAGEConv(8, 2), 2, ratio=0.5)
    out1 = first(batch.x, batch.edge_index, batch.batch)
    out2 = second(out1.x, out1.adj, out1.cluster_mask)
    assert out2.x.shape == (3, 2, 8)
    # Graph 2 (7 nodes) has ceil(0.25 * 7) = 2 clusters, then ceil(0.5 * 2) = 1.
    assert out2.cluster_mask.sum(-1).tolist() == [2, 2, 1]
    (out1.aux_loss + out2.aux_loss).backward()
    assert torch.isfinite(out2.aux_loss)


def test_repr_and_reset_parameters():
    layer = DiffPoolConv.from_encoder("sage", 3, 16, 5, ratio=0.25)
    assert repr(layer) == (
        "DiffPoolConv(embed=GNNEncoder('sage', 3, 16, num_layers=2), "
        "pool=GNNEncoder('sage', 3, 5, num_layers=2), num_clusters=5, ratio=0.25, "
        "link_loss='frobenius')"
    )
    plain = sage_layer(3, 4, link_loss="none", entropy_loss=False)
    assert repr(plain) == (
        "DiffPoolConv(embed=SAGEConv(3, 8, aggr=mean), pool=SAGEConv(3, 4, aggr=mean), "
        "num_clusters=4, link_loss='none', entropy_loss=False)"
    )
    before = [p.clone() for p in layer.parameters()]
    layer.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, layer.parameters()))


@pytest.mark.parametrize("encoder", ["sage", "gcn", "gin", "gat", "sum"])
def test_from_encoder(encoder):
    batch = random_batch([5, 9], seed=15)
    layer = DiffPoolConv.from_encoder(encoder, 4, 16, 3)
    out = layer(batch.x, batch.edge_index, batch.batch)
    assert out.x.shape == (2, 3, 16)
    out.aux_loss.backward()


def test_losses_switched_off():
    batch = random_batch([5, 9], seed=16)
    layer = sage_layer(4, 3, link_loss="none", entropy_loss=False)
    out = layer(batch.x, batch.edge_index, batch.batch)
    assert out.link_loss.item() == 0 and out.entropy_loss.item() == 0
    assert out.aux_loss.item() == 0
    layer = sage_layer(4, 3, link_loss_coef=2.0, entropy_loss_coef=0.5)
    out = layer(batch.x, batch.edge_index, batch.batch)
    torch.testing.assert_close(out.aux_loss, 2 * out.link_loss + 0.5 * out.entropy_loss)


@pytest.mark.parametrize("link_loss", ["frobenius", "bce", "none"])
@pytest.mark.parametrize("ratio", [None, 0.5])
@pytest.mark.parametrize("fixed", [False, True])
def test_return_assignment_false_changes_nothing_but_s(link_loss, ratio, fixed):
    """Without the dense assignment the layer returns the same pooled graph, masks, losses
    and gradients; only ``s`` is None."""
    batch = random_batch([7, 3, 12, 5], num_features=4, seed=13)
    layer = sage_layer(4, 6, ratio=ratio, link_loss=link_loss)
    assignment = torch.randint(0, 2, (batch.num_nodes,)) if fixed else None
    outs, grads = [], []
    for return_assignment in (True, False):
        layer.zero_grad()
        out = layer(
            batch.x,
            batch.edge_index,
            batch.batch,
            assignment=assignment,
            return_assignment=return_assignment,
        )
        (out.x.sum() + out.adj.sum() + out.aux_loss).backward()
        outs.append(out)
        grads.append([None if p.grad is None else p.grad.clone() for p in layer.parameters()])
    full, lean = outs
    assert full.s is not None and lean.s is None
    for name in full._fields:
        if name != "s":
            torch.testing.assert_close(getattr(lean, name), getattr(full, name), msg=name)
    for g_full, g_lean in zip(*grads):
        assert (g_full is None) == (g_lean is None)
        if g_full is not None:
            torch.testing.assert_close(g_lean, g_full)


def test_without_the_assignment_no_padded_node_by_cluster_tensor(monkeypatch):
    """``return_assignment=False`` never builds a ``[B, N_max, C]`` tensor: with one large
    graph among small ones (as in a D&D batch) that dense S is by far the largest tensor of
    the step, the other graphs' rows of it being padding. (The large graph's own dense
    adjacency block, taken on graphs this small, is turned off to see it.)"""
    sizes = [300] + [20] * 10
    batch = random_batch(sizes, num_features=4, seed=14)
    num_clusters = 30
    padded = len(sizes) * max(sizes) * num_clusters

    def step(return_assignment, link_loss):
        layer = sage_layer(4, num_clusters, ratio=0.1, link_loss=link_loss)
        out = layer(
            batch.x,
            batch.edge_index,
            batch.batch,
            return_assignment=return_assignment,
            layout="sparse",
        )
        (out.x.sum() + out.aux_loss).backward()

    assert _largest_strided_tensor(lambda: step(True, "frobenius")) >= padded
    assert _largest_strided_tensor(lambda: step(False, "frobenius")) < padded // 2
    # The BCE evaluates pairs per size bucket: its largest block is the large graph's own
    # N_g x N_g pairs, not the B x N_max x N_max pairs (or the dense S) of the padded batch.
    assert _largest_strided_tensor(lambda: step(False, "bce")) <= max(sizes) ** 2


@pytest.mark.parametrize("int32", ["edge_index", "batch", "both"])
def test_int32_indices_give_the_int64_result(int32):
    """An int32 edge_index is valid in PyG but failed inside torch's scatter ("expected scalar
    type Long but found Int") once the GNNs' features were wide: the layer converts it (and
    ``batch``) to int64 before its GNNs, whatever they are."""
    from diffpool.nn import SumConv

    torch.manual_seed(0)
    batch = random_batch([6, 11, 4], seed=12)
    weight = torch.rand(batch.edge_index.size(1))
    edge_index = batch.edge_index.int() if int32 != "batch" else batch.edge_index
    graph = batch.batch.int() if int32 != "edge_index" else batch.batch
    layers = [
        DiffPoolConv(SumConv(4, 64), SumConv(4, 64), 64),
        DiffPoolConv.from_encoder("sum", 4, 64, 64, num_layers=3, concat=True, ratio=0.5),
    ]
    for layer in layers:
        ref = layer(batch.x, batch.edge_index, batch.batch, weight)
        out = layer(batch.x, edge_index, graph, weight)
        for name in ("x", "adj", "s", "mask", "cluster_mask", "aux_loss"):
            torch.testing.assert_close(getattr(out, name), getattr(ref, name), msg=name)


@pytest.mark.parametrize("ratio", [None, 0.25])
def test_mlp_assignment_is_a_linear_map_of_the_embeddings(ratio):
    """``pool_net="mlp"``: S = softmax(Z W^T + b) on the embedding GNN's output, no pooling
    GNN (torch-geometric-pool's DiffPool); the same as the function given those logits, also
    where the layer computes only the slots each size group uses."""
    from diffpool.functional import sparse_diff_pool

    batch = random_batch([40, 3, 17, 9, 60, 1, 25], num_features=5, seed=3)
    layer = DiffPoolConv.from_encoder("sage", 5, 8, 16, pool_net="mlp", ratio=ratio).double()
    assert isinstance(layer.pool, torch.nn.Linear) and layer.pool_on == "embedding"
    assert "pool_on='embedding'" in repr(layer)
    x = batch.x.double()
    for layout in ("auto", "per_bucket") if ratio else ("auto",):
        out = layer(x, batch.edge_index, batch.batch, layout=layout)
        z = layer.embed(x, batch.edge_index)
        ref = sparse_diff_pool(z, batch.edge_index, layer.pool(z), batch.batch, ratio=ratio)
        for name in ("x", "adj", "s", "link_loss", "entropy_loss"):
            torch.testing.assert_close(getattr(out, name), getattr(ref, name), msg=name)
    with pytest.raises(ValueError, match="pool_net must be one of"):
        DiffPoolConv.from_encoder("sage", 5, 8, 16, pool_net="gcn")
