import math

import pytest
import torch

from diffpool.functional import (
    bce_edge_correction,
    bce_link_loss_sum,
    cluster_budget,
    cluster_budgets,
    coarsen,
    masked_assignment,
)
from diffpool.functional._layouts import PaddedBatch, SizeBuckets, pad_slots, sparse_products
from diffpool.functional._plan import bucket_graphs
from diffpool.functional.formulas import (
    frobenius_link_loss,
    gram_squared_norm,
    link_terms,
    residual_link_loss,
    safe_sqrt,
)
from diffpool.utils.connectivity import to_coo_adjacency


@pytest.mark.parametrize(
    "n,ratio,expected",
    [
        (30, 0.1, 3),
        (31, 0.1, 4),
        (4, 0.25, 1),
        (1, 0.1, 1),
        (284, 0.25, 71),
        (5748, 0.25, 1437),
        (7, 0.3, 3),
    ],
)
def test_cluster_budget_rounding(n, ratio, expected):
    # 0.1 * 30 is 3.0000000000000004 in floating point: a naive ceil gives 4.
    assert cluster_budget(n, ratio) == expected
    assert cluster_budgets(torch.tensor([n]), ratio, 10**6).item() == expected


def test_the_host_budget_is_the_device_budget():
    """The model plans on the host with cluster_budget what the layers mask on the device
    with cluster_budgets: equal for every size and ratio, half-points of the rounding
    included (n=4, ratio=0.500000125: Python's round(x, 6) gave 3 where torch gives 2)."""
    gen = torch.Generator().manual_seed(0)
    ratios = torch.cat([torch.rand(2000, generator=gen, dtype=torch.float64),
                        torch.tensor([0.1, 0.25, 0.5, 0.500000125, 1 / 3, 0.7, 1.0],
                                     dtype=torch.float64)])  # fmt: skip
    sizes = torch.arange(1, 400)
    for ratio in ratios.tolist():
        device = cluster_budgets(sizes, ratio, 10**9).tolist()
        assert device == [cluster_budget(n, ratio) for n in sizes.tolist()], ratio


def test_cluster_budgets_cap():
    assert cluster_budgets(torch.tensor([1, 10, 100]), 0.25, 5).tolist() == [1, 3, 5]


def test_masked_assignment_zero_slots_and_finite_entropy():
    logits = torch.tensor([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    s, ent = masked_assignment(logits, mask)
    assert torch.equal(s[~mask], torch.zeros(3))
    torch.testing.assert_close(s.sum(-1), torch.ones(2))
    assert torch.isfinite(ent).all() and ent.min() >= 0
    (s.sum() + ent.sum()).backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~mask] == 0)


def test_uniform_entropy_is_log_budget():
    s, ent = masked_assignment(torch.zeros(2, 4), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool())
    torch.testing.assert_close(ent, torch.tensor([math.log(3), math.log(4)]))


def test_safe_sqrt_gradient_at_zero():
    v = torch.tensor([0.0, 4.0, -1e-9], requires_grad=True)
    out = safe_sqrt(v)
    out.sum().backward()
    assert out.tolist() == [0.0, 2.0, 0.0]
    assert torch.isfinite(v.grad).all()


def test_bce_decomposition_matches_elementwise():
    torch.manual_seed(0)
    s = torch.softmax(torch.randn(2, 6, 3), -1)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2]).bool()
    s = s * mask.unsqueeze(-1)
    adj = (torch.rand(2, 6, 6) < 0.4).float() * (mask.unsqueeze(-1) & mask.unsqueeze(-2))
    dense = bce_link_loss_sum(s, mask, adj)
    # Sparse form: A = 0 everywhere, then add the edges.
    flat = s[mask]
    offsets = torch.tensor([0, 6])
    b, i, j = adj.nonzero(as_tuple=True)
    index = torch.stack([offsets[b] + i, offsets[b] + j])
    batch = torch.tensor([0] * 6 + [1] * 4)
    sparse = bce_link_loss_sum(s, mask) + bce_edge_correction(flat, index, adj[b, i, j], batch, 2)
    torch.testing.assert_close(sparse, dense)
    p = (s @ s.transpose(1, 2)).clamp(max=1)
    ref = -(adj * torch.log(p + 1e-7) + (1 - adj) * torch.log(1 - p + 1e-7))
    ref = (ref * (mask.unsqueeze(-1) & mask.unsqueeze(-2))).sum((1, 2))
    torch.testing.assert_close(dense, ref)


@pytest.mark.parametrize("chunk_elements", [1 << 22, 20])
def test_no_edge_bce_gradient_matches_elementwise_reference(chunk_elements, monkeypatch):
    # The A = 0 part (the sparse level's pairs) against autograd through the plain elementwise
    # formula, with padded rows, pairs where S S^T exceeds 1 (clamped: no gradient through
    # them) and, with a tiny chunk, several checkpointed blocks of rows.
    monkeypatch.setattr("diffpool.functional.formulas._CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(1)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).bool()
    s = torch.rand(2, 7, 3, dtype=torch.float64) * 0.6
    s[0, 0] = torch.tensor([1.2, 0.0, 0.0], dtype=torch.float64)  # P_00 = 1.44 > 1
    s = (s * mask.unsqueeze(-1)).requires_grad_()
    weights = torch.tensor([0.7, -1.3], dtype=torch.float64)
    (bce_link_loss_sum(s, mask) * weights).sum().backward()
    ours = s.grad.clone()
    s.grad = None
    p = (s @ s.transpose(1, 2)).clamp(max=1)
    pairs = mask.unsqueeze(-1) & mask.unsqueeze(-2)
    ref = torch.where(pairs, -torch.log(1 - p + 1e-7), 0.0).sum((1, 2))
    torch.testing.assert_close(bce_link_loss_sum(s, mask), ref)
    (ref * weights).sum().backward()
    torch.testing.assert_close(ours, s.grad)
    assert torch.all(ours[~mask] == 0)
    assert (p == 1).any()  # the clamped pairs were exercised


def test_bucket_graphs():
    assert bucket_graphs([10, 3, 9, 4, 100, 70]) == [[4, 5], [0, 2], [3, 1]]
    assert bucket_graphs([5]) == [[0]]
    # Within a bucket the largest graph is at most 1.5x the smallest.
    counts = torch.randint(1, 500, (50,)).tolist()
    for graphs in bucket_graphs(counts):
        assert counts[graphs[0]] <= 1.5 * min(counts[g] for g in graphs)


def _loop_products(s, z, adj_s, ptr):
    pairs = [(s[a:b].t() @ z[a:b], s[a:b].t() @ adj_s[a:b]) for a, b in zip(ptr[:-1], ptr[1:])]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def _size_buckets(counts, buckets=None):
    ptr = torch.tensor([0] + counts).cumsum(0)
    buckets = buckets or bucket_graphs(counts)
    return SizeBuckets(ptr, counts, buckets, [max(counts[g] for g in b) for b in buckets])


def _adjacency(counts, seed=0):
    """A random weighted adjacency with every edge inside a graph, coalesced."""
    gen = torch.Generator().manual_seed(seed)
    edges, start = [], 0
    for n in counts:
        pairs = torch.randint(0, n, (2, 3 * n), generator=gen) + start
        edges.append(pairs)
        start += n
    index = torch.cat(edges, 1)
    weight = torch.rand(index.size(1), generator=gen, dtype=torch.float64) + 0.5
    return to_coo_adjacency(index, weight, sum(counts), torch.float64)


def _pool(blocks, adj, s, z, widths=None):
    """X' and A' of the batch through a layout's blocks and the one formula."""
    widths = widths or [s.size(-1)] * blocks.num_blocks
    products = sparse_products(blocks, adj, s, z, widths)
    pooled = [coarsen(block, rhs, z.size(-1)) for block, rhs in zip(products.s, products.rhs)]
    xs, adjs = [p[0] for p in pooled], [p[1] for p in pooled]
    x, adj = pad_slots(blocks.reassemble(xs), blocks.reassemble(adjs), s.size(-1))
    return x, adj, products.s


def test_layouts_give_the_per_graph_products():
    """Size buckets and the one padded block hold every graph's rows once (padding rows
    zero, the masks marking exactly the real rows), and give S_g^T Z_g and S_g^T A_g S_g."""
    counts = [7, 2, 30, 16, 1]
    ptr = torch.tensor([0] + counts).cumsum(0)
    batch = torch.repeat_interleave(torch.arange(5), torch.tensor(counts))
    s = torch.randn(sum(counts), 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(sum(counts), 4, dtype=torch.float64)
    adj = _adjacency(counts)
    dense = torch.zeros(sum(counts), sum(counts), dtype=torch.float64)
    dense.index_put_(tuple(adj.index), adj.value, accumulate=True)
    x_ref, adj_ref = _loop_products(s, z, dense @ s, ptr)
    mask = torch.arange(30) < torch.tensor(counts)[:, None]
    padded = PaddedBatch(batch, torch.tensor(counts), 30, mask)
    for blocks in (_size_buckets(counts), padded):
        x, a, s_blocks = _pool(blocks, adj, s, z)
        torch.testing.assert_close(x, x_ref)
        torch.testing.assert_close(a, adj_ref)
        assert sum(b.ne(0).any(-1).sum().item() for b in s_blocks) == sum(counts)
        for block, block_mask in zip(s_blocks, blocks.masks()):
            assert torch.equal(block.ne(0).any(-1), block_mask)
    # the dense adjacency blocks of both layouts are the graphs' own
    for blocks in (_size_buckets(counts), padded):
        for block, graphs in zip(blocks.dense_adjacency(adj, batch), blocks.buckets):
            for row, g in zip(block, graphs):
                n, first = counts[g], int(ptr[g])
                torch.testing.assert_close(row[:n, :n], dense[first : first + n, first : first + n])
                assert not row[n:].any() and not row[:, n:].any()
    blocks = _size_buckets(counts)
    assert torch.autograd.gradcheck(lambda s: _pool(blocks, adj, s, z)[:2], (s,))


def test_bucket_merging_follows_the_cost_model():
    counts = [100, 60, 30, 12, 5]
    assert len(bucket_graphs(counts)) == 5
    # Cheap rows: padding everything to 100 nodes costs less than one more bucket.
    assert bucket_graphs(counts, row_cost=lambda n: 10, overhead=10_000) == [[0, 1, 2, 3, 4]]
    # Expensive rows: nothing is merged.
    assert len(bucket_graphs(counts, row_cost=lambda n: 10**6, overhead=10_000)) == 5
    # Merging also counts the wider rows that the merged graphs then get.
    # 12 into 30: padding 18 * 3000 + wider rows 12 * (3000 - 1200) = 75,600 <= 100,000;
    # 30 into 60: 30 * 6000 + 30 * 3000 = 270,000 > 100,000.
    merged = bucket_graphs(counts, row_cost=lambda n: n * 100, overhead=100_000)
    assert merged == [[0], [1], [2, 3, 4]]


@pytest.mark.parametrize("shape", [(3, 5, 4), (3, 4, 7)], ids=["nodes>clusters", "nodes<clusters"])
def test_gram_squared_norm_gradient(shape):
    """Both Gram matrices (S^T S where N >= C, S S^T where N < C) give ||S^T S||^2 and its
    gradient."""
    s = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(gram_squared_norm(s), (s.transpose(1, 2) @ s).pow(2).sum((1, 2)))
    assert torch.autograd.gradcheck(gram_squared_norm, (s,))
    # its backward is differentiable again (a once-differentiable one dropped the second
    # derivative silently where torch.autograd.grad was asked for it)
    assert torch.autograd.gradgradcheck(gram_squared_norm, (s,))


def test_residual_link_loss_is_the_identity():
    """The residual form of a padded block equals the three-term identity, value and gradient
    (padded rows zero in S and A), in the dtype of the divisors."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.arange(6) < torch.tensor([6, 4, 1])[:, None]
    s = torch.rand(3, 6, 3, generator=gen).softmax(-1) * mask[..., None]
    adj = (torch.rand(3, 6, 6, generator=gen) < 0.5).float() * (mask[:, :, None] & mask[:, None])
    divisor = mask.sum(-1).float()

    def identity(s):
        return frobenius_link_loss(*link_terms(s, adj.double() @ s, adj.double()), divisor)

    s64, div64 = s.double().requires_grad_(), divisor.double()
    loss = residual_link_loss(s, adj, divisor)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), identity(s64).detach())
    assert torch.autograd.gradcheck(lambda t: residual_link_loss(t, adj, div64), (s64,))
    (grad,) = torch.autograd.grad(residual_link_loss(s64, adj, div64).sum(), s64)
    torch.testing.assert_close(grad, torch.autograd.grad(identity(s64).sum(), s64)[0])


def test_size_buckets_with_widths():
    """Narrow buckets (columns beyond a bucket's width are zero) give the full product."""
    counts = [3, 12, 11, 2]
    buckets = _size_buckets(counts)
    assert buckets.buckets == [[1, 2], [0, 3]]
    s = torch.randn(sum(counts), 5, dtype=torch.float64)
    s[:3, 2:] = 0  # graph 0 uses 2 slots
    s[26:, 2:] = 0  # graph 3 uses 2 slots
    z = torch.randn(sum(counts), 7, dtype=torch.float64)
    adj = _adjacency(counts, seed=3)
    narrow, full = _pool(buckets, adj, s, z, [5, 2]), _pool(buckets, adj, s, z)
    torch.testing.assert_close(narrow[0], full[0])
    torch.testing.assert_close(narrow[1], full[1])
    assert [b.size(-1) for b in narrow[2]] == [5, 2]
