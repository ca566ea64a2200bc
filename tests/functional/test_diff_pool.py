"""diffpool.functional.sparse_diff_pool / dense_diff_pool: pooling embeddings one already has."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import SAGEConv
from torch_geometric.nn.dense import dense_diff_pool as pyg_dense_diff_pool
from torch_geometric.utils import to_dense_adj, to_dense_batch

from diffpool import DiffPoolConv
from diffpool.functional import AssignmentHead, dense_diff_pool, sparse_diff_pool
from helpers import random_batch

FIELDS = ("x", "adj", "s", "mask", "cluster_mask", "link_loss", "entropy_loss", "aux_loss")


def _inputs(sizes, clusters=4, features=5, seed=0):
    batch = random_batch(sizes, num_features=features, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(batch.num_nodes, 6, generator=gen, dtype=torch.float64)
    logits = torch.randn(batch.num_nodes, clusters, generator=gen, dtype=torch.float64)
    return batch, z, logits


@pytest.mark.parametrize("ratio", [None, 0.3])
@pytest.mark.parametrize("link_loss", ["frobenius", "bce"])
def test_sparse_and_dense_functions_agree(ratio, link_loss):
    """The sparse function on the flat batch and the dense one on its padded form give the
    same pooled tensors and losses, whatever the padding."""
    batch, z, logits = _inputs([7, 2, 11, 4])
    sparse = sparse_diff_pool(
        z, batch.edge_index, logits, batch.batch, ratio=ratio, link_loss=link_loss
    )
    dense_z, mask = to_dense_batch(z, batch.batch)
    dense_logits, _ = to_dense_batch(logits, batch.batch)
    adj = to_dense_adj(batch.edge_index, batch.batch).double()
    dense = dense_diff_pool(dense_z, adj, dense_logits, mask, ratio=ratio, link_loss=link_loss)
    for name in FIELDS:
        torch.testing.assert_close(getattr(sparse, name), getattr(dense, name), msg=name)
    assert sparse.z is z


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
            out = dense_diff_pool(dz, adj, ds, mask, ratio=0.25)
        else:
            out = sparse_diff_pool(z, batch.edge_index, s, batch.batch, ratio=0.25)
        (out.aux_loss + out.x.sum()).backward()
        results.append((out, head.weight.grad.clone()))
    (narrow, narrow_grad), (full, full_grad) = results
    for name in FIELDS:
        torch.testing.assert_close(getattr(narrow, name), getattr(full, name), msg=name)
    torch.testing.assert_close(narrow_grad, full_grad)


def test_dense_function_matches_pyg_on_a_batch_without_padding():
    """With graphs of one size PyG's dense_diff_pool and ours agree: the same X' and A', the
    same entropy, and PyG's link loss is ours divided by N (it divides by N^2, we by N)."""
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(3, 6, 4, generator=gen)
    adj = (torch.rand(3, 6, 6, generator=gen) > 0.5).float()
    s = torch.randn(3, 6, 2, generator=gen)
    ours = dense_diff_pool(z, adj, s)
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
        dense_diff_pool(z[:4], torch.eye(4), logits[:4], ratio=2.0)
