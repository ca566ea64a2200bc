"""The coarsened adjacency kept as its factors (diffpool.functional._factored)."""

import pytest
import torch
from torch_geometric.nn import DenseGCNConv, DenseGINConv, DenseSAGEConv
from torch_geometric.utils import to_dense_adj

from diffpool.functional import _plan as plan
from diffpool.functional import padded_diff_pool, sparse_diff_pool
from diffpool.functional._factored import CoarsenedAdjacency, FactoredAdjacency
from diffpool.functional._layouts import SizeBuckets
from diffpool.functional._plan import factored_pays
from diffpool.functional.diff_pool import PoolOptions, SparseCall, pool_sparse
from diffpool.nn import DenseSumConv
from diffpool.utils.connectivity import to_coo_adjacency
from helpers import random_batch


def factors(b=3, n=5, c=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(b, n, c, generator=gen, dtype=torch.float64).softmax(-1)
    s[0, 3:] = 0  # a shorter graph: zero rows as padding
    adj = (torch.rand(b, n, n, generator=gen, dtype=torch.float64) < 0.4).double()
    adj[0, 3:], adj[0, :, 3:] = 0, 0
    return FactoredAdjacency(s.requires_grad_(), adj), gen


def test_factored_operations_equal_the_dense_product():
    f, gen = factors()
    dense = f.to_dense()
    assert f.shape == dense.shape == (3, 8, 8) and f.dim() == 3 and f.size(-1) == 8
    torch.testing.assert_close(dense, f.s.transpose(1, 2) @ f.adj @ f.s)
    x = torch.rand(3, 8, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.matmul(f, x), dense @ x)
    torch.testing.assert_close(f.sum(-1, keepdim=True), dense.sum(-1, keepdim=True))
    torch.testing.assert_close(f.sum(dim=-1), dense.sum(-1))
    t = torch.rand(3, 8, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(f.congruence(t), t.transpose(1, 2) @ dense @ t)
    torch.testing.assert_close(f.squared_norm(), dense.pow(2).sum((-2, -1)))
    # a directed adjacency too (the squared norm uses A G and G A, not their transposes)
    assert not torch.equal(f.adj, f.adj.transpose(1, 2))


def test_factored_refuses_what_it_cannot_do():
    f, _ = factors()
    with pytest.raises(TypeError):
        torch.relu(f)
    with pytest.raises(TypeError, match="rows only"):
        f.sum(dim=1)
    with pytest.raises(ValueError, match=r"adj \[b, n, n\]"):
        FactoredAdjacency(f.s, f.adj[:, :4])


@pytest.mark.parametrize(
    "layer",
    [
        lambda: DenseSAGEConv(4, 3),
        lambda: DenseSAGEConv(4, 3, normalize=True),
        lambda: DenseGINConv(torch.nn.Linear(4, 3)),
        lambda: DenseSumConv(4, 3),
    ],
    ids=["sage", "sage-normalize", "gin", "sum"],
)
def test_dense_layers_run_on_the_factors(layer):
    torch.manual_seed(0)
    conv = layer().double()
    f, gen = factors()
    x = torch.rand(3, 8, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(conv(x, f), conv(x, f.to_dense()))


def test_layers_outside_the_list_get_the_dense_tensor():
    from diffpool.nn.encoders import FACTORED_LAYERS, DenseGNNEncoder

    assert DenseGCNConv not in FACTORED_LAYERS
    f, gen = factors()
    x = torch.rand(3, 8, 4, generator=gen, dtype=torch.float64)
    for encoder in ("gcn", "sage"):
        torch.manual_seed(0)
        stack = DenseGNNEncoder(encoder, 4, 6, 6, num_layers=2).double()
        torch.testing.assert_close(stack(x, f), stack(x, f.to_dense()))


@pytest.mark.parametrize("link_loss", ["frobenius", "bce"])
def test_dense_pool_of_factors_equals_the_dense_pool(link_loss):
    """The next level's pooling through the factors: A'' = (S T)^T A (S T), the link loss
    from ||S^T A S||^2 and tr(T^T A' T); values and gradients as on the dense A'."""
    f, gen = factors()
    z = torch.rand(3, 8, 4, generator=gen, dtype=torch.float64)
    logits = torch.rand(3, 8, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    outs = []
    for adj in (f, f.to_dense()):
        out = padded_diff_pool(z, adj, logits, link_loss=link_loss)
        loss = out.adj.sum() + out.aux_loss + out.x.sum()
        outs.append((out, torch.autograd.grad(loss, [f.s, logits])))
    (a, ga), (b, gb) = outs
    for name in ("x", "adj", "link_loss", "entropy_loss"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


def test_dense_adjacency_blocks_of_size_buckets():
    batch = random_batch([3, 9, 4, 20, 8], num_features=2, seed=2)
    counts = torch.bincount(batch.batch)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    groups = [[3], [1, 4], [2, 0]]
    heads = [max(counts[g].item() for g in graphs) for graphs in groups]
    buckets = SizeBuckets(ptr, counts.tolist(), groups, heads)
    # some edges twice, not coalesced: the blocks add both weights
    edge_index = torch.cat([batch.edge_index, batch.edge_index[:, ::3]], dim=1)
    weight = torch.rand(edge_index.size(1), dtype=torch.float64)
    dense = to_dense_adj(edge_index, batch.batch, weight)
    for coalesced in (True, False):
        adj = to_coo_adjacency(edge_index, weight, batch.num_nodes, torch.float64, coalesced)
        every = list(range(buckets.num_blocks))
        for which in (every, every[::-2]):  # all of them, or some in any order
            blocks = buckets.dense_adjacency(adj, batch.batch, which)
            assert len(blocks) == len(which)
            for k, block in zip(which, blocks):
                head = buckets.heads[k]
                torch.testing.assert_close(block, dense[buckets.buckets[k], :head, :head])


def test_factored_pays_where_it_saves_enough():
    assert factored_pays(300, 1437, 10) and not factored_pays(700, 1437, 10)  # n < 0.41 C
    assert not factored_pays(40, 155, 10)  # saves too little for an extra group (PROTEINS)


def test_sparse_pool_keeps_small_graphs_factored(monkeypatch):
    """With fixed budgets and ``factored``, the buckets of graphs small against C keep
    their A' as factors and the large ones dense; to_dense() is the dense output. The public
    function never returns a factored form."""
    monkeypatch.setattr(plan, "FACTORED_MIN_SAVING", 1)  # any saving: small test graphs
    sizes = [3, 5, 4, 6, 90, 100]
    batch = random_batch(sizes, num_features=4, seed=3)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(batch.num_nodes, 4, generator=gen, dtype=torch.float64)
    logits = torch.randn(batch.num_nodes, 60, generator=gen, dtype=torch.float64)
    plain = sparse_diff_pool(z, batch.edge_index, logits, batch.batch)
    assert type(plain.adj) is torch.Tensor
    run = SparseCall(layout="sparse", factored=True)
    kept = pool_sparse(z, batch.edge_index, logits, batch.batch, None, PoolOptions(), run)
    assert isinstance(kept.adj, CoarsenedAdjacency)
    assert kept.adj.num_factored == 4  # 3-6 nodes: factored; 90-100 against C = 60: dense
    assert factored_pays(6, 60, 4) and not factored_pays(90, 60, 1)
    torch.testing.assert_close(kept.adj.to_dense(), plain.adj)
    for name in ("x", "link_loss", "entropy_loss"):
        torch.testing.assert_close(getattr(kept, name), getattr(plain, name))
    # per-graph budgets never factor (their graphs are never small against their budget)
    options = PoolOptions(ratio=0.25)
    per_graph = pool_sparse(z, batch.edge_index, logits, batch.batch, None, options, run)
    assert isinstance(per_graph.adj, torch.Tensor)


def test_gram_is_shared_and_its_gradient_exact():
    f, _ = factors()
    assert f.gram is f.gram  # computed once for the link-loss term and the squared norm
    s = f.s.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda s: FactoredAdjacency(s, f.adj).squared_norm(), (s,))
    assert torch.autograd.gradcheck(lambda s: FactoredAdjacency(s, f.adj).sum(-1), (s,))


def test_factored_adjacency_passes_the_dense_input_checks():
    from diffpool.nn import DenseDiffPoolConv

    f, gen = factors()
    conv = DenseDiffPoolConv.from_encoder("sage", 4, 6, 3).double()
    x = torch.rand(3, 8, 4, generator=gen, dtype=torch.float64)
    out = conv(x, f)  # validation on: the factors are checked by shape
    torch.testing.assert_close(out.adj, conv(x, f.to_dense()).adj)
    with pytest.raises(ValueError, match="adj must have shape"):
        conv(x[:, :7], f)


def test_the_product_of_a_shared_input_is_computed_once():
    """Two layers on the same input (a level's embedding and pooling GNNs) share A' x; a new
    input, or the same one changed in place, gets its own."""
    f, gen = factors()
    x = torch.rand(3, 8, 4, generator=gen, dtype=torch.float64)
    first = f.matmul(x)
    assert f.matmul(x) is first
    y = x.clone()
    torch.testing.assert_close(f.matmul(y), first)
    assert f.matmul(y) is not first
    y.mul_(2)
    torch.testing.assert_close(f.matmul(y), 2 * first)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pooling_factors_computes_one_congruence(monkeypatch, dtype):
    """Pooling a factored A' builds S^T A' S once: the link loss reads tr(S^T A' S) from the
    coarsened adjacency (D&D's second level with fixed C spent 15% of its step on a second
    one); float32 included, whose losses may be recomputed in float64 only on cancellation."""
    f, gen = factors()
    f = FactoredAdjacency(f.s.detach().to(dtype), f.adj.to(dtype))
    z = torch.rand(3, 8, 4, generator=gen, dtype=dtype)
    logits = torch.rand(3, 8, 3, generator=gen, dtype=dtype)
    calls = []
    congruence = FactoredAdjacency.congruence
    monkeypatch.setattr(
        FactoredAdjacency, "congruence", lambda self, s: calls.append(s) or congruence(self, s)
    )
    out = padded_diff_pool(z, f, logits)
    assert len(calls) == 1
    want = padded_diff_pool(z, f.to_dense(), logits)
    torch.testing.assert_close(out.link_loss, want.link_loss)
