import math

import pytest
import torch

from diffpool.functional import (
    bce_edge_correction,
    bce_link_loss_sum,
    cluster_budget,
    cluster_budgets,
    masked_assignment,
)
from diffpool.functional.losses import gram_squared_norm, safe_sqrt
from diffpool.functional.packing import PaddedBatch, SizeBuckets, bucket_graphs


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


def test_bucket_graphs():
    assert bucket_graphs([10, 3, 9, 4, 100, 70]) == [[4, 5], [0, 2], [3, 1]]
    assert bucket_graphs([5]) == [[0]]
    # Within a bucket the largest graph is at most 1.5x the smallest.
    counts = torch.randint(1, 500, (50,)).tolist()
    for graphs in bucket_graphs(counts):
        assert counts[graphs[0]] <= 1.5 * min(counts[g] for g in graphs)


def test_size_buckets_match_padded_products():
    counts = [7, 2, 30, 16, 1]
    ptr = torch.tensor([0] + counts).cumsum(0)
    batch = torch.repeat_interleave(torch.arange(5), torch.tensor(counts))
    a = torch.randn(sum(counts), 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(sum(counts), 4, dtype=torch.float64)
    packed = SizeBuckets(ptr, counts).transpose_matmul(a, b)
    padded = PaddedBatch(batch, 5, 30).transpose_matmul(a, b)
    torch.testing.assert_close(packed, padded)
    loops = torch.stack([a[s:e].t() @ b[s:e] for s, e in zip(ptr[:-1], ptr[1:])])
    torch.testing.assert_close(packed, loops)
    assert torch.autograd.gradcheck(lambda a: SizeBuckets(ptr, counts).transpose_matmul(a, b), (a,))


def test_gram_squared_norm_gradient():
    s = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(gram_squared_norm(s), (s.transpose(1, 2) @ s).pow(2).sum((1, 2)))
    assert torch.autograd.gradcheck(gram_squared_norm, (s,))


def test_size_buckets_with_widths():
    """Narrow buckets (columns beyond a bucket's width are zero) give the full product."""
    counts = [3, 12, 11, 2]
    ptr = torch.tensor([0] + counts).cumsum(0)
    buckets = SizeBuckets(ptr, counts)
    assert buckets.buckets == [[1, 2], [0, 3]]
    a = torch.randn(sum(counts), 5)
    a[:3, 2:] = 0  # graph 0 uses 2 slots
    a[26:, 2:] = 0  # graph 3 uses 2 slots
    z = torch.randn(sum(counts), 7)
    torch.testing.assert_close(
        buckets.transpose_matmul(a, a, [5, 2]), buckets.transpose_matmul(a, a)
    )
    torch.testing.assert_close(
        buckets.transpose_matmul(a, z, [5, 2]), buckets.transpose_matmul(a, z)
    )
