"""The DiffPool authors' graph convolution (SumConv / DenseSumConv) against its matrix form."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.typing import WITH_TORCH_SPARSE, SparseTensor
from torch_geometric.utils import to_dense_adj, to_dense_batch

from diffpool.nn import DenseGNNEncoder, DenseSumConv, GNNEncoder, SumConv
from helpers import random_batch


def _reference(conv, x, adj):
    """A X W^T + b, written out."""
    return adj @ (x @ conv.lin.weight.T) + conv.bias


def test_sum_conv_is_the_raw_adjacency_product():
    torch.manual_seed(0)
    batch = random_batch([6, 9, 4], num_features=5, seed=3)
    conv = SumConv(5, 7)
    torch.nn.init.normal_(conv.bias)  # a zero bias would hide a missing one
    adj = to_dense_adj(batch.edge_index, max_num_nodes=batch.num_nodes)[0]
    out = conv(batch.x, batch.edge_index)
    torch.testing.assert_close(out, _reference(conv, batch.x, adj))
    # no self term: a node without neighbours gets the bias only
    isolated = torch.zeros(2, 0, dtype=torch.long)
    torch.testing.assert_close(conv(batch.x[:3], isolated), conv.bias.expand(3, 7))
    # edge weights scale the messages: x'_i sums e_{j,i} x_j, the transposed [src, dst] matrix
    weight = torch.rand(batch.edge_index.size(1))
    n = batch.num_nodes
    weighted = to_dense_adj(batch.edge_index, edge_attr=weight, max_num_nodes=n)[0]
    torch.testing.assert_close(
        conv(batch.x, batch.edge_index, weight), _reference(conv, batch.x, weighted.T)
    )


@pytest.mark.sparse
@pytest.mark.skipif(not WITH_TORCH_SPARSE, reason="torch-sparse is not installed")
def test_sum_conv_takes_a_sparse_adjacency():
    batch = random_batch([8, 5], num_features=3, seed=4)
    conv = SumConv(3, 4)
    n = batch.num_nodes
    adj_t = SparseTensor.from_edge_index(batch.edge_index, sparse_sizes=(n, n)).t()
    torch.testing.assert_close(conv(batch.x, adj_t), conv(batch.x, batch.edge_index))


def test_dense_sum_conv_matches_the_sparse_layer_per_graph():
    torch.manual_seed(1)
    batch = random_batch([6, 9, 4], num_features=5, seed=5)
    sparse = SumConv(5, 7)
    torch.nn.init.normal_(sparse.bias)
    dense = DenseSumConv(5, 7)
    dense.load_state_dict(sparse.state_dict())
    x, mask = to_dense_batch(batch.x, batch.batch)
    adj = to_dense_adj(batch.edge_index, batch.batch)
    out = dense(x, adj, mask)
    torch.testing.assert_close(out[mask], sparse(batch.x, batch.edge_index))
    assert (out[~mask] == 0).all()
    # one graph without the batch dimension, and no mask
    torch.testing.assert_close(dense(x[1], adj[1]), out[1:2])
    with pytest.raises(ValueError, match=r"adj must be \[B, N, N\]"):
        dense(x, adj[:, :, :4])


def test_sum_conv_reset_repr_and_encoder_stacks():
    conv = DenseSumConv(3, 4)
    before = conv.lin.weight.clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.lin.weight)
    assert repr(conv) == "DenseSumConv(3, 4)"
    assert repr(SumConv(3, 4)) == "SumConv(3, 4)"
    assert DenseSumConv(3, 4, bias=False).bias is None
    batch = random_batch([6, 9], num_features=3, seed=6)
    enc = GNNEncoder("sum", 3, 8, 5, num_layers=3, concat=True, norm="batch", normalize=True)
    dense = DenseGNNEncoder("sum", 3, 8, 5, num_layers=3, concat=True, norm="batch")
    assert enc(batch.x, batch.edge_index).shape == (15, 21)
    x, mask = to_dense_batch(batch.x, batch.batch)
    assert dense(x, to_dense_adj(batch.edge_index, batch.batch), mask).shape == (2, 9, 21)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sum_conv_takes_a_torch_sparse_adjacency(layout):
    batch = random_batch([8, 5], num_features=3, seed=7)
    # a directed edge checks PyG's adj_t convention (row = target)
    edge_index = torch.cat([batch.edge_index, torch.tensor([[0], [4]])], dim=1)
    conv = SumConv(3, 4)
    n = batch.num_nodes
    adj_t = torch.sparse_coo_tensor(edge_index.flip(0), torch.ones(edge_index.size(1)), (n, n))
    adj_t = adj_t.coalesce()
    if layout == "csr":
        adj_t = adj_t.to_sparse_csr()
    torch.testing.assert_close(conv(batch.x, adj_t), conv(batch.x, edge_index))
