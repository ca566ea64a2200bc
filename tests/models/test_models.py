"""The hierarchical classifier, its variants, the flat baselines and the Det clustering."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from diffpool.datasets import hierarchical_communities
from diffpool.functional import _plan as plan
from diffpool.functional._factored import CoarsenedAdjacency
from diffpool.functional._factored import CoarsenedAdjacency as Coarse
from diffpool.models import (
    VARIANTS,
    DiffPoolNet,
    GlobalPoolNet,
    build_model,
    classify,
    data_transform,
)
from diffpool.nn import ENCODERS
from diffpool.transforms import ClusterAssignment, partition
from helpers import random_batch


@pytest.fixture(scope="module")
def enzymes_batch(tu, tmp_path_factory):
    """20 ENZYMES graphs with Det clusters for two levels (synthetic when absent)."""
    transform = ClusterAssignment(ratio=0.25, num_levels=2)
    try:
        dataset = tu("ENZYMES")
        graphs = [transform(dataset[i].clone()) for i in range(20)]
        return Batch.from_data_list(graphs), 126, dataset.num_classes
    except pytest.skip.Exception:
        graphs = hierarchical_communities(20, seed=1)
        graphs = [transform(g) for g in graphs]
        return Batch.from_data_list(graphs), max(g.num_nodes for g in graphs), 2


def _forward(model, batch, return_assignments=True):
    """Every model of the package is called the same way: on the whole batch."""
    return classify(model, batch, return_assignments=return_assignments)


def _levels(variant: str) -> dict:
    """Two pooling levels, for the models that pool."""
    return {} if variant in ("base", "set2set", "sortpool") else {"num_levels": 2}


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_encoder_and_variant_trains(enzymes_batch, encoder, variant):
    batch, max_nodes, num_classes = enzymes_batch
    torch.manual_seed(0)
    edges = {}
    if ENCODERS[encoder].edge_required:  # GINE: the batch gets edge features
        batch = batch.clone()
        batch.edge_attr = torch.randn(batch.num_edges, 3)
        edges["edge_dim"] = 3
    model = build_model(
        variant,
        batch.num_features,
        num_classes,
        max_nodes,
        encoder=encoder,
        hidden_channels=16,
        **_levels(variant),
        **edges,
    )
    out = _forward(model, batch)
    assert out.logits.shape == (batch.num_graphs, num_classes)
    loss = torch.nn.functional.cross_entropy(out.logits, batch.y) + out.aux_loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if isinstance(model, DiffPoolNet):
        assert out.link_loss.shape == out.entropy_loss.shape == (2,)
        if variant == "diffpool":
            assert (out.link_loss > 0).all() and (out.entropy_loss > 0).all()
        if variant in ("nolp", "det"):
            assert (out.link_loss == 0).all()
    else:
        assert out.aux_loss == 0 and out.levels == ()


@pytest.mark.parametrize("budget", ["fixed", "per_graph"])
@pytest.mark.parametrize("num_levels", [1, 2])
def test_permutation_invariance(budget, num_levels):
    torch.manual_seed(0)
    batch = random_batch([5, 16, 9, 12], num_features=6)
    model = DiffPoolNet(6, 3, 16, num_levels=num_levels, budget=budget, hidden_channels=16)
    model.eval()
    perm = torch.cat(
        [torch.randperm(int(n)) + int(o) for n, o in zip(batch.ptr.diff(), batch.ptr[:-1])]
    )
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    out = model(batch.x, batch.edge_index, batch.batch).logits
    out_perm = model(batch.x[perm], inverse[batch.edge_index], batch.batch).logits
    torch.testing.assert_close(out, out_perm, rtol=1e-5, atol=1e-5)


def test_cluster_counts_follow_the_ratio():
    model = DiffPoolNet(4, 2, 126, num_levels=2, ratio=0.25)
    assert model.num_clusters == [32, 8]
    assert DiffPoolNet(4, 2, 30, ratio=0.1).num_clusters == [3]
    assert DiffPoolNet(4, 2, num_clusters=10, num_levels=2).num_clusters == [10, 3]
    with pytest.raises(ValueError, match="max_num_nodes"):
        DiffPoolNet(4, 2)
    with pytest.raises(ValueError, match="2 levels"):
        DiffPoolNet(4, 2, num_clusters=[5], num_levels=2)


def test_per_graph_budget_masks_the_next_level():
    torch.manual_seed(0)
    batch = random_batch([4, 40, 17], num_features=5)
    model = DiffPoolNet(5, 2, 40, num_levels=2, budget="per_graph", hidden_channels=8)
    out = model(batch.x, batch.edge_index, batch.batch)
    first, second = out.levels
    sizes = batch.ptr.diff()
    assert first.cluster_mask.sum(-1).tolist() == [min(10, -(-int(n) // 4)) for n in sizes]
    # the second level's node mask is the first level's cluster mask
    torch.testing.assert_close(second.mask, first.cluster_mask)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model variant"):
        build_model("diffpol", 3, 2, 10)
    with pytest.raises(ValueError, match="fixes"):
        build_model("nolp", 3, 2, 10, link_loss="bce")
    with pytest.raises(ValueError, match="budget"):
        DiffPoolNet(3, 2, 10, budget="each")
    with pytest.raises(ValueError, match="readout"):
        GlobalPoolNet(3, 2, readout="attention")
    model = build_model("det", 3, 2, 10)
    batch = random_batch([3, 10], num_features=3)
    with pytest.raises(ValueError, match="ClusterAssignment"):
        model(batch.x, batch.edge_index, batch.batch)
    with pytest.raises(ValueError, match=r"needs \['det_cluster0'\] in the batch: add "):
        classify(model, batch)


def test_a_model_takes_only_its_own_settings():
    """A setting the model does not have is an error that names it (not dropped silently)."""
    with pytest.raises(TypeError, match=r"model 'set2set' \(GlobalPoolNet\) takes no 'ratio'"):
        build_model("set2set", 3, 2, 10, ratio=0.1, hidden_channels=8)
    with pytest.raises(TypeError, match="takes no 'hiden_channels'"):
        build_model("diffpool", 3, 2, 10, hiden_channels=8)
    model = build_model("set2set", 3, 2, 10, set2set_steps=2, hidden_channels=8)
    assert isinstance(model, GlobalPoolNet) and model.readout == "set2set"


def test_the_data_transform_is_known_from_the_config_alone():
    assert data_transform({"variant": "diffpool", "ratio": 0.1}) is None
    assert data_transform({"variant": "base", "readout": "mean"}) is None
    det = data_transform({"_target_": "x", "variant": "det", "ratio": 0.5, "num_levels": 2})
    assert repr(det) == "ClusterAssignment(ratio=0.5, num_levels=2, method='metis')"
    capped = data_transform({"variant": "det", "num_clusters": 10, "num_levels": 2, "ratio": 0.5})
    assert capped.num_clusters == [10, 5]
    # the model's own transform is the same
    assert repr(build_model("det", 3, 2, 40, ratio=0.5, num_levels=2).data_transform()) == repr(det)


def test_a_plain_module_is_called_the_pyg_way():
    """classify() calls a module without forward_batch as model(x, edge_index, batch)."""
    from torch_geometric.nn import GCNConv, global_mean_pool

    class Plain(torch.nn.Module):
        def __init__(self, graph_level=True):
            super().__init__()
            self.conv, self.graph_level = GCNConv(3, 2), graph_level

        def forward(self, x, edge_index, batch):
            x = self.conv(x, edge_index)
            return global_mean_pool(x, batch) if self.graph_level else x

    batch = random_batch([3, 5, 4], num_features=3)
    out = classify(Plain(), batch)
    assert out.logits.shape == (3, 2) and out.aux_loss == 0 and out.levels == ()
    with pytest.raises(ValueError, match=r"returned \(12, 2\); a graph classifier returns"):
        classify(Plain(graph_level=False), batch)


# ------------------------------------------------------------------------ DiffPool-Det
def test_partition_is_deterministic_and_complete():
    graphs = hierarchical_communities(5, seed=3)
    for g in graphs:
        for parts in (1, 3, 7, 20, g.num_nodes, g.num_nodes + 5):
            a = partition(g.edge_index, g.num_nodes, parts)
            b = partition(g.edge_index, g.num_nodes, parts)
            assert torch.equal(a, b)
            assert a.shape == (g.num_nodes,)  # every node in exactly one cluster
            assert int(a.max()) + 1 <= parts  # no more clusters than asked
            assert torch.equal(torch.unique(a), torch.arange(int(a.max()) + 1))  # consecutive


def test_metis_recovers_planted_communities():
    g = hierarchical_communities(1, p_in=0.9, seed=0)[0]
    labels = partition(g.edge_index, g.num_nodes, 7)
    # each found cluster is (almost) one planted community
    purity = sum(
        torch.bincount(g.community[labels == c]).max().item() for c in range(int(labels.max()) + 1)
    )
    assert purity >= 0.9 * g.num_nodes


def test_partition_edge_cases():
    empty = torch.empty(2, 0, dtype=torch.long)
    assert partition(empty, 1, 1).tolist() == [0]
    assert partition(empty, 6, 2).tolist() == [0, 0, 0, 1, 1, 1]
    loops = torch.tensor([[0, 1, 2], [0, 1, 2]])  # self-loops only
    assert int(partition(loops, 3, 2).max()) == 1
    with pytest.raises(ValueError, match="unknown clusterer"):
        partition(empty, 3, 2, method="spectral")


def test_cluster_assignment_transform_is_cached_and_hierarchical():
    graphs = hierarchical_communities(4, seed=2)
    transform = ClusterAssignment(ratio=0.25, num_levels=2)
    first = [transform(g.clone()) for g in graphs]
    assert transform.computed == 4
    again = [transform(g.clone()) for g in graphs]
    assert transform.computed == 4  # served from the cache
    for a, b, g in zip(first, again, graphs):
        assert torch.equal(a.det_cluster0, b.det_cluster0)
        k0 = int(a.det_num_clusters0)
        assert a.det_cluster0.shape == (g.num_nodes,) and k0 <= -(-g.num_nodes // 4)
        # level 1 clusters the k0 coarse nodes of level 0
        assert a.det_cluster1.shape == (k0,) and int(a.det_num_clusters1) <= -(-k0 // 4)
    batch = Batch.from_data_list(first)
    assert batch.det_cluster0.shape == (batch.num_nodes,)
    assert int(batch.det_cluster0.max()) < max(int(g.det_num_clusters0) for g in first)
    assert repr(transform) == "ClusterAssignment(ratio=0.25, num_levels=2, method='metis')"


def test_det_model_uses_the_given_clusters():
    graphs = [ClusterAssignment(0.25, 2)(g) for g in hierarchical_communities(6, seed=4)]
    batch = Batch.from_data_list(graphs)
    model = build_model(
        "det", batch.num_features, 2, max(g.num_nodes for g in graphs), num_levels=2
    )
    out = _forward(model, batch)
    first = out.levels[0]
    hard = first.s.argmax(-1)[first.mask]
    assert torch.equal(hard, batch.det_cluster0)
    assert torch.equal(first.s.amax(-1)[first.mask], torch.ones(batch.num_nodes))
    assert first.cluster_mask.sum(-1).tolist() == batch.det_num_clusters0.tolist()
    assert out.levels[1].cluster_mask.sum(-1).tolist() == batch.det_num_clusters1.tolist()


# ------------------------------------------------------------------------ it learns
def _train(model, train, test, epochs, lr=0.005):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for b in DataLoader(train, batch_size=32, shuffle=True):
            opt.zero_grad()
            out = model(b.x, b.edge_index, b.batch, batch_size=b.num_graphs)
            loss = torch.nn.functional.cross_entropy(out.logits, b.y) + out.aux_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            opt.step()
    model.eval()
    with torch.no_grad():
        b = Batch.from_data_list(test)
        pred = model(b.x, b.edge_index, b.batch, batch_size=b.num_graphs).logits.argmax(-1)
    return (pred == b.y).float().mean().item()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_diffpool_learns_the_community_graph_and_a_flat_model_does_not(seed):
    """The synthetic task's class is whether the two hub communities are adjacent: the same
    degree sequence either way, one step apart only in the graph of communities.

    DiffPool with one cluster per community, the coarsened adjacency normalised
    (``coarse_adj="normalized"``) and a light entropy loss (coefficient 0.1) reaches at least
    90% test accuracy in 20 epochs (about 25 s on 2 CPU cores; 99-100% on data seeds 0-4),
    while the same encoder with a global mean readout (``base``) stays at chance.

    What it takes (measured with this test's setup, data seed 0 unless noted):

    * entropy coefficient 1.0 (the paper's): 50% with the paper's max readout and raw A',
      86% with mean readout and normalised A'. The entropy loss makes S hard (max
      probability 0.999) in the first epoch, before the link loss has found the communities.
      0.1: 100%; 0.3: 83%; 0.03 and 0: chance.
    * normalised A': with the raw S^T A S (its diagonal, each cluster's inner edges, drowns
      the edges between clusters) the same recipe stays at chance.
    * learning rate 0.002: with 0.005, data seed 1 stays at chance for 60 epochs.
    """
    graphs = hierarchical_communities(2000, seed=seed)
    train, test = graphs[:1600], graphs[1600:]
    torch.manual_seed(seed)
    diffpool = DiffPoolNet(
        graphs[0].num_features,
        2,
        num_clusters=7,
        hidden_channels=32,
        readout="mean",
        coarse_adj="normalized",
        entropy_loss_coef=0.1,
        dropout=0.3,
    )
    torch.manual_seed(seed)
    flat = GlobalPoolNet(graphs[0].num_features, 2, hidden_channels=32, dropout=0.3)
    acc_diffpool = _train(diffpool, train, test, epochs=20, lr=0.002)
    acc_flat = _train(flat, train, test, epochs=20, lr=0.002)
    print(f"test accuracy: DiffPool {acc_diffpool:.3f}, flat mean readout {acc_flat:.3f}")
    assert acc_diffpool >= 0.9
    assert acc_flat <= 0.6


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_return_assignments_false_drops_only_the_assignments(enzymes_batch, variant):
    batch, max_nodes, num_classes = enzymes_batch
    torch.manual_seed(0)
    model = build_model(
        variant, batch.num_features, num_classes, max_nodes, hidden_channels=16, **_levels(variant)
    )
    model.eval()
    full = _forward(model, batch)
    lean = _forward(model, batch, return_assignments=False)
    torch.testing.assert_close(lean.logits, full.logits)
    torch.testing.assert_close(lean.aux_loss, full.aux_loss)
    assert len(lean.levels) == len(full.levels)
    assert all(level.s is None for level in lean.levels)
    assert all(level.s is not None for level in full.levels)


def test_unbatch_levels_gives_each_graphs_nodes_and_clusters():
    from diffpool.models import unbatch_levels

    batch = random_batch([5, 9, 3], num_features=4)
    model = build_model("diffpool", 4, 2, 9, num_levels=2, ratio=0.5, budget="per_graph")
    model.eval()
    out = model(batch.x, batch.edge_index, batch.batch, batch_size=3)
    levels = unbatch_levels(out, 3)
    assert len(levels) == 2
    first = levels[0]
    assert [s.shape[0] for s in first["s"]] == [5, 9, 3]  # the graphs' own nodes
    assert [s.shape[1] for s in first["s"]] == [3, 5, 2]  # ceil(0.5 * N_g) clusters each
    for s, clusters, x in zip(first["s"], first["clusters"], first["x"]):
        torch.testing.assert_close(s.sum(-1), torch.ones(s.shape[0]))
        assert torch.equal(clusters, s.argmax(-1)) and x.shape[0] == s.shape[1]


@pytest.mark.parametrize("train", [True, False])
def test_grouped_dense_levels_equal_one_padded_batch(train):
    """With per-graph budgets, a batch of one large and several small graphs runs its dense
    levels group by group: the same logits, losses, level outputs and gradients as one
    padded batch (up to float rounding), batch norm statistics over all groups together."""
    sizes = [30, 1600, 40, 25, 300, 35, 120, 28]
    batch = random_batch(sizes, num_features=4, seed=1)
    model = build_model("diffpool", 4, 3, max(sizes), num_levels=3, ratio=0.25,
                        budget="per_graph", hidden_channels=16)  # fmt: skip
    model.train(train)

    def run(grouped: bool):
        model.group_dense_levels = grouped
        model.zero_grad()
        out = classify(model, batch)
        (out.logits.sum() + out.aux_loss).backward()
        return out, [p.grad.clone() for p in model.parameters()]

    one, one_grads = run(False)
    grouped, grouped_grads = run(True)
    groups = model._dense_groups(grouped.levels[0], model._dense_budgets(sizes))
    assert groups is not None and groups.num_groups >= 2  # the case runs grouped
    assert torch.allclose(one.logits, grouped.logits, atol=1e-4)
    for name in ("aux_loss", "link_loss", "entropy_loss"):
        assert torch.allclose(getattr(one, name), getattr(grouped, name), atol=1e-5), name
    for a, b in zip(one.levels, grouped.levels):
        for name in ("x", "adj", "s", "mask", "cluster_mask", "z", "link_loss_per_graph"):
            x, y = getattr(a, name), getattr(b, name)
            assert x.shape == y.shape, name
            assert torch.allclose(x.float(), y.float(), rtol=1e-4, atol=1e-3), name
    for a, b in zip(one_grads, grouped_grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("sizes", [[12, 30, 17, 25, 9, 21], [30, 1600, 40, 25, 300, 35]])
def test_per_graph_batch_norm_gathers_the_real_nodes(sizes, monkeypatch):
    """With per-graph budgets, the dense levels' batch norm is told each level's number of
    real nodes by the model (from the host's node counts): a training step then computes no
    masked statistics, as one padded batch and group by group (the second batch), with the
    same logits, losses, gradients and running statistics as the masked statistics."""
    from diffpool.nn.encoders import MaskedBatchNorm

    batch = random_batch(sizes, num_features=4, seed=2)
    model = build_model("diffpool", 4, 3, max(sizes), num_levels=3, ratio=0.25, norm="batch",
                        budget="per_graph", hidden_channels=16)  # fmt: skip
    start = {k: v.clone() for k, v in model.state_dict().items()}
    masked_calls = []
    statistics = MaskedBatchNorm._statistics

    def counted(self, *args):
        masked_calls.append(self)
        return statistics(self, *args)

    monkeypatch.setattr(MaskedBatchNorm, "_statistics", counted)

    def step():
        model.load_state_dict(start)
        model.zero_grad()
        out = classify(model, batch, return_assignments=False)
        (out.logits.sum() + out.aux_loss).backward()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        return out, [p.grad.clone() for p in model.parameters()], state

    gathered = step()
    assert masked_calls == []
    if max(sizes) > 1000:  # the dense levels ran group by group
        budgets = model._dense_budgets(sizes)
        assert model._dense_groups(gathered[0].levels[0], budgets) is not None
    forward_groups = MaskedBatchNorm.forward_groups
    monkeypatch.setattr(
        MaskedBatchNorm,
        "forward_groups",
        lambda self, xs, masks, rows=None: forward_groups(self, xs, masks),
    )
    masked = step()
    assert masked_calls  # the reference is the masked statistics
    torch.testing.assert_close(gathered[0].logits, masked[0].logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gathered[0].aux_loss, masked[0].aux_loss)
    for a, b in zip(gathered[1], masked[1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    for name, value in gathered[2].items():
        torch.testing.assert_close(value, masked[2][name], rtol=1e-4, atol=1e-6)


def test_fixed_budgets_and_similar_sizes_stay_one_batch(enzymes_batch):
    batch, max_nodes, num_classes = enzymes_batch
    fixed = build_model("diffpool", batch.num_features, num_classes, max_nodes, num_levels=2)
    counts = torch.bincount(batch.batch).tolist()
    assert (
        fixed._dense_groups(classify(fixed, batch).levels[0], fixed._dense_budgets(counts)) is None
    )
    similar = random_batch([30, 32, 28, 31], num_features=4)
    per_graph = build_model("diffpool", 4, 2, 32, num_levels=2, budget="per_graph")
    out = classify(per_graph, similar).levels[0]
    assert per_graph._dense_groups(out, per_graph._dense_budgets([30, 32, 28, 31])) is None


@pytest.mark.parametrize("train", [False, True])
def test_fixed_budgets_skip_the_all_true_masks_of_the_dense_levels(train, monkeypatch):
    """With learned assignments and fixed budgets every cluster slot is used: the dense levels
    run without a mask, with the same result as with the (all-true) cluster masks."""
    batch = random_batch([5, 9, 3, 7], num_features=4, seed=6)
    model = DiffPoolNet(4, 3, num_levels=2, max_num_nodes=9, ratio=0.5, norm="batch").double()
    model.train(train)
    x = batch.x.double()
    out = model(x, batch.edge_index, batch.batch)
    assert all(level.cluster_mask.all() for level in out.levels)
    monkeypatch.setattr(DiffPoolNet, "_node_mask", lambda self, mask: mask)
    ref = model(x, batch.edge_index, batch.batch)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.aux_loss, ref.aux_loss)


@pytest.mark.parametrize("encoder", ["sage", "sum", "gcn"])
def test_factored_coarse_adjacency_equals_the_dense_one(encoder, monkeypatch):
    """With fixed budgets, calls that return no levels (training steps) keep the first
    level's A' of small graphs as its factors (mixed with dense groups for the large ones):
    the same logits, losses and gradients of every parameter as the dense A' (float64, batch
    norm, two levels). No factored form leaves the model."""
    from diffpool.functional import diff_pool

    monkeypatch.setattr(plan, "FACTORED_MIN_SAVING", 1)  # any saving: small test graphs
    built = []

    class Spy(CoarsenedAdjacency):
        def __init__(self, *args):
            super().__init__(*args)
            built.append(self)

    monkeypatch.setattr(diff_pool, "CoarsenedAdjacency", Spy)
    sizes = [3, 5, 8, 12, 30, 60, 7, 4, 150, 190]
    batch = random_batch(sizes, num_features=6, seed=4)
    torch.manual_seed(0)
    model = build_model("diffpool", 6, 3, 400, num_levels=2, ratio=0.5, encoder=encoder,
                        hidden_channels=8, num_layers=2).double()  # fmt: skip
    model.train()
    results = []
    for keep in (False, True):
        model.factor_coarse_adj = keep
        built.clear()
        out = model(batch.x.double(), batch.edge_index, batch.batch, batch_size=len(sizes),
                    return_assignments=False, return_levels=False)  # fmt: skip
        assert out.levels == () and len(built) == keep
        if keep:
            assert 0 < built[0].num_factored < len(sizes)  # both kinds of group
        loss = out.logits.square().sum() + out.aux_loss
        results.append((out, torch.autograd.grad(loss, list(model.parameters()))))
    (dense, dense_grads), (kept, kept_grads) = results
    for name in ("logits", "aux_loss", "link_loss", "entropy_loss"):
        torch.testing.assert_close(getattr(kept, name), getattr(dense, name))
    for a, b in zip(dense_grads, kept_grads):
        torch.testing.assert_close(a, b)
    # calls that return their levels keep the dense tensor, with or without assignments
    for assignments in (True, False):
        out = model(batch.x.double(), batch.edge_index, batch.batch, batch_size=len(sizes),
                    return_assignments=assignments)  # fmt: skip
        assert all(type(level.adj) is torch.Tensor for level in out.levels)


@pytest.mark.parametrize("budget", ["fixed", "per_graph"])
def test_pyg_loss_normalization_gives_every_level_pygs_losses(budget, monkeypatch):
    """``loss_normalization="pyg"`` (a setting of ``build_model``): every level's losses are
    those of PyG's ``dense_diff_pool`` on that level's padded inputs, the first level padded
    to the batch's largest graph and the dense levels to their slots, and ``aux_loss``
    weighs them by the model's coefficients, so that a PyG model's coefficients carry over;
    also where the dense levels would run group by group (per-graph budgets: then one padded
    batch) or on the first level's factors (fixed budgets, training steps)."""
    from torch_geometric.utils import to_dense_adj

    monkeypatch.setattr(plan, "FACTORED_MIN_SAVING", 1)  # any saving: small test graphs
    sizes = [3, 5, 8, 12, 30, 60, 7, 4, 150, 190]
    batch = random_batch(sizes, num_features=6, seed=4)
    settings = dict(num_levels=2, ratio=0.5, budget=budget, hidden_channels=8, num_layers=2)
    torch.manual_seed(0)
    model = build_model("diffpool", 6, 3, 400, loss_normalization="pyg", link_loss_coef=3.0,
                        entropy_loss_coef=0.5, **settings).double().eval()  # fmt: skip
    x = batch.x.double()
    out = model(x, batch.edge_index, batch.batch, batch_size=len(sizes))
    adj = to_dense_adj(batch.edge_index, batch.batch).double()
    aux = 0.0
    for level in out.levels:
        s = level.s
        numel = s.size(0) * s.size(1) ** 2  # PyG's adj.numel()
        link = torch.linalg.vector_norm(adj - s @ s.transpose(1, 2)) / numel
        entropy = (-s * torch.log(s + 1e-15)).sum(-1).mean()
        torch.testing.assert_close(level.link_loss, link)
        torch.testing.assert_close(level.entropy_loss, entropy)
        aux = aux + 3.0 * link + 0.5 * entropy
        adj = level.adj
    torch.testing.assert_close(out.aux_loss, aux)
    if budget == "per_graph":  # the per-graph form runs this batch's dense levels grouped
        assert model._dense_groups(out.levels[0], model._dense_budgets(sizes)) is None
        torch.manual_seed(0)
        per_graph = build_model("diffpool", 6, 3, 400, **settings).double().eval()
        assert per_graph._dense_groups(
            per_graph(x, batch.edge_index, batch.batch).levels[0], per_graph._dense_budgets(sizes)
        )
    from diffpool.functional import diff_pool

    built = []
    monkeypatch.setattr(diff_pool, "CoarsenedAdjacency", lambda *a: built.append(1) or Coarse(*a))
    training = model(x, batch.edge_index, batch.batch, batch_size=len(sizes),
                     return_assignments=False, return_levels=False)  # fmt: skip
    assert len(built) == (budget == "fixed")  # merged group losses
    for name in ("logits", "aux_loss", "link_loss", "entropy_loss"):
        torch.testing.assert_close(getattr(training, name), getattr(out, name), msg=name)


@pytest.mark.parametrize("budget", ["fixed", "per_graph"])
def test_mlp_assignment_model_runs_every_path(budget, monkeypatch):
    """``pool_net="mlp"`` (a config key of the model): no pooling GNN at any level, fewer
    parameters than the paper's; the training path (factored or grouped dense levels, no
    levels returned) gives the logits and losses of the inspection path."""
    monkeypatch.setattr(plan, "FACTORED_MIN_SAVING", 1)
    sizes = [3, 5, 8, 12, 30, 60, 7, 4, 150, 190]
    batch = random_batch(sizes, num_features=6, seed=4)
    torch.manual_seed(0)
    settings = dict(num_levels=2, ratio=0.5, budget=budget, hidden_channels=8, num_layers=2)
    model = build_model("diffpool", 6, 3, 400, pool_net="mlp", **settings).double().eval()
    paper = build_model("diffpool", 6, 3, 400, **settings)
    assert all(isinstance(level.pool, torch.nn.Linear) for level in model.levels)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in paper.parameters())
    x = batch.x.double()
    full = model(x, batch.edge_index, batch.batch, batch_size=len(sizes))
    lean = model(x, batch.edge_index, batch.batch, batch_size=len(sizes),
                 return_assignments=False, return_levels=False)  # fmt: skip
    for name in ("logits", "aux_loss", "link_loss", "entropy_loss"):
        torch.testing.assert_close(getattr(lean, name), getattr(full, name), msg=name)
