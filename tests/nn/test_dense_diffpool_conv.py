import pytest
import torch
from torch_geometric.nn import DenseGCNConv, DenseSAGEConv, dense_diff_pool
from torch_geometric.utils import to_dense_adj, to_dense_batch

from diffpool import DenseDiffPoolConv, DiffPoolConv
from helpers import random_batch, tie_sage


def dense_layer(in_channels=4, num_clusters=3, **kwargs):
    return DenseDiffPoolConv(
        DenseSAGEConv(in_channels, 8),
        DenseSAGEConv(in_channels, num_clusters),
        num_clusters,
        **kwargs,
    )


def dense_inputs(sizes, seed=0):
    batch = random_batch(sizes, seed=seed)
    x, mask = to_dense_batch(batch.x, batch.batch)
    return batch, x, to_dense_adj(batch.edge_index, batch.batch), mask


def test_matches_pyg_dense_diff_pool():
    _, x, adj, mask = dense_inputs([5, 11, 2])
    layer = dense_layer()
    out = layer(x, adj, mask)
    z, s = layer.embed(x, adj, mask), layer.pool(x, adj, mask)
    x_ref, adj_ref, link_ref, ent_ref = dense_diff_pool(z, adj, s, mask, normalize=False)
    torch.testing.assert_close(out.x, x_ref)
    torch.testing.assert_close(out.adj, adj_ref)
    n = mask.sum(-1).float()
    torch.testing.assert_close(torch.sqrt(((out.link_loss_per_graph * n) ** 2).sum()), link_ref)
    torch.testing.assert_close((out.entropy_loss_per_graph * n).sum(), ent_ref * mask.numel())
    assert torch.all(out.s[~mask] == 0)


@pytest.mark.parametrize("normalization, normalize", [("pyg", True), ("pyg_unnormalized", False)])
def test_pyg_loss_normalization_matches_pyg_dense_diff_pool(normalization, normalize):
    """With ``loss_normalization="pyg"`` the dense layer's losses are PyG's on the same padded
    inputs (``"pyg_unnormalized"``: its ``normalize=False``), and so are the sparse layer's."""
    batch, x, adj, mask = dense_inputs([5, 11, 2])
    layer = dense_layer(loss_normalization=normalization, entropy_loss_coef=0.5)
    out = layer(x, adj, mask)
    z, s = layer.embed(x, adj, mask), layer.pool(x, adj, mask)
    _, _, link_ref, ent_ref = dense_diff_pool(z, adj, s, mask, normalize=normalize)
    torch.testing.assert_close(out.link_loss, link_ref)
    torch.testing.assert_close(out.entropy_loss, ent_ref)
    torch.testing.assert_close(out.aux_loss, link_ref + 0.5 * ent_ref)
    sparse = DiffPoolConv.from_encoder("sage", 4, 8, 3, num_layers=1,
                                       loss_normalization=normalization)  # fmt: skip
    dense = DenseDiffPoolConv.from_encoder("sage", 4, 8, 3, num_layers=1,
                                           loss_normalization=normalization)  # fmt: skip
    tie_sage(dense.embed.convs[0], sparse.embed.convs[0])
    tie_sage(dense.pool.convs[0], sparse.pool.convs[0])
    a, b = sparse(batch.x, batch.edge_index, batch.batch), dense(x, adj, mask)
    for name in ("link_loss", "entropy_loss", "link_loss_per_graph", "entropy_loss_per_graph"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), msg=name)


@pytest.mark.parametrize("ratio", [None, 0.25])
@pytest.mark.parametrize("link_loss", ["frobenius", "bce"])
def test_sparse_and_dense_levels_agree(ratio, link_loss):
    batch, x, adj, mask = dense_inputs([6, 13, 4], seed=1)
    sparse = DiffPoolConv.from_encoder(
        "sage", 4, 8, 5, num_layers=1, ratio=ratio, link_loss=link_loss
    )
    dense = DenseDiffPoolConv.from_encoder(
        "sage", 4, 8, 5, num_layers=1, ratio=ratio, link_loss=link_loss
    )
    tie_sage(dense.embed.convs[0], sparse.embed.convs[0])
    tie_sage(dense.pool.convs[0], sparse.pool.convs[0])
    a = sparse(batch.x, batch.edge_index, batch.batch)
    b = dense(x, adj, mask)
    for name in ("x", "adj", "s", "cluster_mask", "link_loss_per_graph", "entropy_loss_per_graph"):
        torch.testing.assert_close(
            getattr(a, name), getattr(b, name), atol=1e-5, rtol=1e-5, msg=name
        )


class _Linear(torch.nn.Module):
    """A dense 'GNN' that ignores adj, so that only the pooling sees the adjacency."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.lin = torch.nn.Linear(in_channels, out_channels)

    def forward(self, x, adj, mask=None):
        return self.lin(x)


@pytest.mark.parametrize("link_loss", ["frobenius", "bce"])
def test_padding_entries_of_adj_are_ignored(link_loss):
    _, x, adj, mask = dense_inputs([5, 9], seed=2)
    layer = DenseDiffPoolConv(_Linear(4, 8), _Linear(4, 3), 3, link_loss=link_loss)
    ref = layer(x, adj, mask)
    noisy = adj.clone()
    noisy[0, 5:, :] = 7.0
    noisy[0, :, 5:] = 7.0
    out = layer(x, noisy, mask)
    for left, right in zip(out, ref):
        torch.testing.assert_close(left, right)


def test_unbatched_call():
    _, x, adj, _ = dense_inputs([7], seed=3)
    layer = dense_layer()
    a = layer(x[0], adj[0])
    b = layer(x, adj)
    assert a.x.shape == (1, 3, 8)
    torch.testing.assert_close(a.x, b.x)
    torch.testing.assert_close(a.link_loss, b.link_loss)


def test_per_graph_budgets_and_gcn():
    _, x, adj, mask = dense_inputs([3, 12, 8], seed=4)
    layer = DenseDiffPoolConv(DenseGCNConv(4, 8), DenseGCNConv(4, 6), 6, ratio=0.25)
    out = layer(x, adj, mask)
    assert out.s.shape == (3, 12, 3)
    assert out.cluster_mask.sum(-1).tolist() == [1, 3, 2]
    assert torch.all(out.x[~out.cluster_mask] == 0)
    out.aux_loss.backward()


def test_gradcheck_dense():
    _, x, adj, mask = dense_inputs([3, 4], seed=5)
    layer = dense_layer(num_clusters=2, ratio=0.5, link_loss="bce").double()
    x = x.double().requires_grad_()
    # Weights in [0.5, 1.5) keep every real degree above DenseSAGEConv's clamp at 1.
    pair = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    adj = ((torch.rand(adj.shape, dtype=torch.float64) + 0.5) * pair).requires_grad_()

    def fn(x, adj):
        out = layer(x, adj, mask)
        return out.x, out.adj, out.link_loss, out.entropy_loss

    assert torch.autograd.gradcheck(fn, (x, adj), eps=1e-6, atol=1e-5)


def test_repr():
    assert repr(dense_layer()) == (
        "DenseDiffPoolConv(embed=DenseSAGEConv(4, 8), pool=DenseSAGEConv(4, 3), "
        "num_clusters=3, link_loss='frobenius')"
    )


class _WholeDenseGNN(torch.nn.Module):
    """The same dense pooling GNN behind another type: all its outputs are computed."""

    def __init__(self, gnn, head):
        super().__init__()
        self.gnn, self.head = gnn, head

    def forward(self, x, adj, mask=None):
        return self.head(self.gnn(x, adj, mask))


def test_per_graph_budgets_project_only_the_slots_the_batch_uses():
    """A batch whose largest graph has 9 nodes uses ceil(0.25 * 9) = 3 of C = 12 slots: the
    layer's head computes those 3 only, with the same outputs and gradients
    as computing all 12."""
    _, x, adj, mask = dense_inputs([9, 4, 7, 2], seed=5)
    x, adj = x.double(), adj.double()
    layer = DenseDiffPoolConv.from_encoder("sage", 4, 8, 12, concat=True, ratio=0.25).double()
    whole = DenseDiffPoolConv(layer.embed, _WholeDenseGNN(layer.pool, layer.head), 12, ratio=0.25)
    shapes = []
    layer.head.register_forward_hook(lambda module, args, out: shapes.append(out.shape))
    results = []
    for conv in (layer, whole):
        layer.zero_grad()
        out = conv(x, adj, mask)
        (out.aux_loss + out.x.pow(2).sum() + out.adj.sum()).backward()
        results.append((out, [p.grad.clone() for p in layer.parameters()]))
    (narrow, narrow_grads), (full, full_grads) = results
    assert narrow.s.shape == (4, 9, 3)
    for name in ("x", "adj", "s", "link_loss", "entropy_loss", "aux_loss"):
        torch.testing.assert_close(getattr(narrow, name), getattr(full, name))
    for left, right in zip(narrow_grads, full_grads):
        torch.testing.assert_close(left, right)
    assert shapes == [torch.Size([4, 9, 12])]  # the whole map ran for the reference only


def test_return_assignment_false_returns_no_s():
    torch.manual_seed(0)
    x, adj = torch.randn(2, 6, 3), (torch.rand(2, 6, 6) > 0.5).float()
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    layer = DenseDiffPoolConv(DenseSAGEConv(3, 5), DenseSAGEConv(3, 2), 2)
    full = layer(x, adj, mask)
    lean = layer(x, adj, mask, return_assignment=False)
    assert full.s is not None and lean.s is None
    for name in full._fields:
        if name != "s":
            torch.testing.assert_close(getattr(lean, name), getattr(full, name), msg=name)
