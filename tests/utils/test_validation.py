"""Every bad input raises a clear error that names the problem."""

import itertools

import pytest
import torch
from torch_geometric.nn import DenseSAGEConv, SAGEConv

from diffpool import DenseDiffPoolConv, DiffPoolConv


@pytest.fixture
def layer():
    return DiffPoolConv(SAGEConv(3, 8), SAGEConv(3, 2), 2)


X = torch.randn(5, 3)
EI = torch.tensor([[0, 1, 3, 4], [1, 0, 4, 3]])  # inside graphs 0 and 1
BATCH = torch.tensor([0, 0, 0, 1, 1])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(edge_index=torch.tensor([[0, 1], [1, 5]])), ValueError, "edge_index out of range"),
        (dict(edge_index=torch.tensor([[0, -1], [1, 0]])), ValueError, "edge_index out of range"),
        (dict(edge_index=torch.tensor([0, 1, 2])), ValueError, r"shape \[2, num_edges\]"),
        (dict(edge_index=torch.zeros(3, 4, dtype=torch.long)), ValueError, r"\[2, num_edges\]"),
        (dict(edge_index=EI.float()), TypeError, "integer tensor"),
        (dict(edge_index=[[0, 1], [1, 0]]), TypeError, "edge_index must be"),
        (dict(batch=torch.tensor([0, 0, 1, 1])), ValueError, "batch has 4 entries but x has 5"),
        (dict(batch=torch.tensor([0, 1, 0, 1, 1])), ValueError, "sorted"),
        (dict(batch=torch.tensor([0, 0, 0, 2, 2])), ValueError, "graph 1 has no nodes"),
        (dict(batch=torch.tensor([1, 1, 1, 2, 2])), ValueError, "start at graph 0"),
        (dict(batch=BATCH.float()), ValueError, "integer tensor"),
        (
            dict(x=X.clone().index_fill_(0, torch.tensor([2]), float("nan"))),
            ValueError,
            "x contains NaN",
        ),
        (
            dict(x=X.clone().index_fill_(0, torch.tensor([2]), float("inf"))),
            ValueError,
            "x contains NaN or infinite",
        ),
        (dict(x=X.long()), TypeError, "floating-point"),
        (dict(x=X[0]), ValueError, r"x must have shape \[num_nodes, num_features\]"),
        (
            dict(
                x=torch.empty(0, 3),
                batch=torch.empty(0, dtype=torch.long),
                edge_index=torch.empty(2, 0, dtype=torch.long),
            ),
            ValueError,
            "empty batch",
        ),
        (dict(edge_weight=torch.ones(3)), ValueError, "one weight per edge"),
        (
            dict(edge_weight=torch.tensor([1.0, float("nan"), 1.0, 1.0])),
            ValueError,
            "edge_weight contains NaN",
        ),
        (dict(batch_size=3), ValueError, r"batch_size=3 .* graph 2 would have no nodes"),
        (dict(batch_size=4), ValueError, r"batch_size=4 .* graphs 2..3 would have no nodes"),
        (dict(batch_size=1), ValueError, "batch_size=1 .* must count every graph"),
        (dict(batch_size=0), ValueError, "batch_size must be positive"),
        (dict(batch_size=-1), ValueError, "batch_size must be positive"),
        (dict(batch_size=2.0), TypeError, "batch_size must be an int"),
        (dict(max_num_nodes=2), ValueError, "max_num_nodes=2 is smaller"),
        (dict(max_num_nodes=3.0), TypeError, "max_num_nodes must be an int"),
        (dict(max_num_nodes=0), ValueError, "max_num_nodes must be positive"),
        (
            dict(edge_index=torch.sparse_coo_tensor(EI.flip(0), torch.full((4,), float("nan")))),
            ValueError,
            "sparse adjacency's values contain NaN",
        ),
        (
            dict(
                edge_index=torch.sparse_coo_tensor(EI.flip(0), torch.ones(4)).to_sparse_csr()
                * float("inf")
            ),
            ValueError,
            "sparse adjacency's values contain NaN or infinite",
        ),
        (
            dict(
                edge_index=torch.sparse_coo_tensor(torch.tensor([[0], [1]]), torch.ones(1), (4, 4))
            ),
            ValueError,
            "sparse adjacency has size",
        ),
    ],
)
def test_sparse_layer_rejects(layer, kwargs, error, match):
    args = dict(x=X, edge_index=EI, batch=BATCH)
    args.update(kwargs)
    extra = {k: args.pop(k) for k in ("edge_weight", "batch_size", "max_num_nodes") if k in args}
    with pytest.raises(error, match=match):
        layer(args["x"], args["edge_index"], args["batch"], **extra)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(num_clusters=0), ValueError, "num_clusters must be positive"),
        (dict(num_clusters=-3), ValueError, "num_clusters must be positive"),
        (dict(num_clusters=2.5), TypeError, "num_clusters must be an int"),
        (dict(ratio=0.0), ValueError, r"ratio must be in \(0, 1\]"),
        (dict(ratio=1.5), ValueError, r"ratio must be in \(0, 1\]"),
        (dict(link_loss="l2"), ValueError, "link_loss must be one of"),
        (dict(link_loss_coef=-1.0), ValueError, "link_loss_coef must be finite and non-negative"),
        (dict(entropy_loss_coef=float("nan")), ValueError, "entropy_loss_coef"),
        (dict(embed="sage"), TypeError, "embed must be a torch.nn.Module"),
    ],
)
def test_constructor_rejects(kwargs, error, match):
    args = dict(embed=SAGEConv(3, 8), pool=SAGEConv(3, 2), num_clusters=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        DiffPoolConv(**args)


def test_sizes_given_as_numpy_or_0_dim_torch_integers_work(layer):
    import numpy as np

    for size in (torch.tensor(3), np.int64(3)):
        assert layer(X, EI, BATCH, batch_size=torch.tensor(2), max_num_nodes=size).s.shape == (
            2, 3, 2,
        )  # fmt: skip


def test_from_encoder_names_a_bad_num_clusters_before_building_the_encoders():
    with pytest.raises(TypeError, match="num_clusters must be an int"):
        DiffPoolConv.from_encoder("gcn", 3, 8, 2.0)


@pytest.mark.parametrize("encoder", ["gine", "gat"])
def test_edge_features_need_one_row_per_edge(encoder):
    layer = DiffPoolConv.from_encoder(encoder, 3, 8, 2, edge_dim=2)
    with pytest.raises(ValueError, match=r"edge_attr must have shape \[4, edge_dim\]"):
        layer(X, EI, BATCH, edge_attr=torch.randn(3, 2))
    assert layer(X, EI, BATCH, edge_attr=torch.randn(4, 2)).x.shape == (2, 2, 8)


def test_pool_width_must_match_num_clusters():
    layer = DiffPoolConv(SAGEConv(3, 8), SAGEConv(3, 4), 2)
    with pytest.raises(ValueError, match="returns 4 channels per node but num_clusters=2"):
        layer(X, EI, BATCH)


def test_unknown_encoder():
    with pytest.raises(ValueError, match="unknown encoder 'foo'"):
        DiffPoolConv.from_encoder("foo", 3, 8, 2)


@pytest.mark.parametrize(
    "x,adj,mask,error,match",
    [
        (torch.randn(2, 4, 3), torch.rand(2, 4, 5), None, ValueError, r"adj must have shape"),
        (
            torch.randn(2, 4, 3),
            torch.rand(2, 4, 4),
            torch.ones(2, 3, dtype=torch.bool),
            ValueError,
            "mask must have shape",
        ),
        (torch.randn(2, 4, 3), torch.rand(2, 4, 4), torch.ones(2, 4), TypeError, "bool"),
        (
            torch.randn(2, 4, 3),
            torch.rand(2, 4, 4),
            torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool(),
            ValueError,
            "without nodes",
        ),
        (torch.full((2, 4, 3), float("nan")), torch.rand(2, 4, 4), None, ValueError, "NaN"),
        (
            torch.randn(2, 4, 3),
            torch.full((2, 4, 4), float("inf")),
            None,
            ValueError,
            "adj contains NaN",
        ),
        (torch.randn(2, 4, 3), torch.rand(2, 4, 4).to_sparse(), None, TypeError, "dense tensor"),
    ],
)
def test_dense_layer_rejects(x, adj, mask, error, match):
    layer = DenseDiffPoolConv(DenseSAGEConv(3, 8), DenseSAGEConv(3, 2), 2)
    with pytest.raises(error, match=match):
        layer(x, adj, mask)


def test_validation_can_be_switched_off():
    layer = DiffPoolConv(SAGEConv(3, 8), SAGEConv(3, 2), 2, validate=False)
    out = layer(X, EI, BATCH, batch_size=2, max_num_nodes=3)
    assert out.x.shape == (2, 2, 8)


def test_the_dtype_and_width_of_x_are_named():
    """x of another dtype than the layer's parameters, or of another width than the encoder
    takes: an error that says which, not torch's ``mat1 and mat2``."""
    from diffpool.models import build_model

    layer = DiffPoolConv(SAGEConv(3, 8), SAGEConv(3, 2), 2).double()
    with pytest.raises(TypeError, match=r"x is torch.float32 but the parameters of DiffPoolConv"):
        layer(X, EI, BATCH)
    with pytest.raises(ValueError, match="x has 4 features per node but DiffPoolConv takes "):
        layer(torch.randn(5, 4, dtype=torch.float64), EI, BATCH)
    # in a model, the encoder that takes x names it
    model = build_model("diffpool", 3, 2, 5)
    with pytest.raises(ValueError, match="x has 4 features per node but GNNEncoder takes "):
        model(torch.randn(5, 4), EI, BATCH)
    with pytest.raises(TypeError, match="x is torch.float64 but the parameters of GNNEncoder"):
        model(X.double(), EI, BATCH)
    flat = build_model("base", 3, 2)
    with pytest.raises(ValueError, match="in_channels=3"):
        flat(torch.randn(5, 4), EI, BATCH)


@pytest.mark.parametrize("variant", ["diffpool", "base"])
def test_an_int32_batch_works_in_the_models(variant):
    from diffpool.models import build_model

    model = build_model(variant, 3, 2, 5).eval()
    expected = model(X, EI, BATCH).logits
    torch.testing.assert_close(model(X, EI, BATCH.int()).logits, expected)
    with pytest.raises(TypeError, match="batch must be an integer tensor"):
        model(X, EI, BATCH.float())


def test_a_training_batch_with_a_single_node_row_trains():
    """Batch norm has no batch statistics for one row (a batch of one 1-node graph, or one
    cluster at a deeper level): the step normalises with the running ones instead of failing
    inside torch."""
    from diffpool.models import build_model

    for budget in ("fixed", "per_graph"):
        model = build_model("diffpool", 3, 2, 40, num_levels=2, budget=budget, ratio=0.1).train()
        out = model(torch.randn(1, 3), torch.empty(2, 0, dtype=torch.long))
        (out.logits.sum() + out.aux_loss).backward()
        assert torch.isfinite(out.logits).all()
    # per-graph budgets: 8 nodes -> one cluster at the first level -> a one-row second level
    model = build_model("diffpool", 3, 2, 40, num_levels=2, budget="per_graph", ratio=0.1)
    out = model(torch.randn(8, 3), torch.tensor([[0, 1, 2], [1, 2, 3]]))
    assert out.levels[0].cluster_mask.sum() == 1
    out.logits.sum().backward()


@pytest.mark.parametrize("variant", ["diffpool", "base"])
def test_an_int32_edge_index_works_in_the_models(variant):
    """int32 indices are valid in PyG; they failed inside torch's scatter ("expected scalar
    type Long but found Int") in the models' GNNs."""
    from diffpool.models import build_model

    model = build_model(variant, 3, 2, 5).eval()
    expected = model(X, EI, BATCH).logits
    torch.testing.assert_close(model(X, EI.int(), BATCH).logits, expected)
    torch.testing.assert_close(model(X, EI.int(), BATCH.int()).logits, expected)


def test_as_int64_index_converts_integer_indices_only():
    from diffpool.utils.validation import as_int64_index

    assert as_int64_index(EI.int()).dtype == torch.int64
    assert as_int64_index(EI.to(torch.int16)).dtype == torch.int64
    for kept in (EI, EI.float(), EI.bool(), [[0, 1], [1, 0]]):
        assert as_int64_index(kept) is kept  # int64 as it is; the rest for the checks to refuse
    sparse = torch.sparse_coo_tensor(EI, torch.ones(4), (5, 5))
    assert as_int64_index(sparse) is sparse


def test_dense_checks_name_the_first_bad_value():
    """The adjacency's values are checked on their own (``finite_adj``: what the functional
    does, leaving the embeddings to the caller); x before adj before the mask."""
    from diffpool.utils.validation import check_dense_inputs

    x, adj = torch.randn(2, 4, 3), torch.rand(2, 4, 4)
    bad_x, bad_adj = x.clone(), adj.clone()
    bad_x[0, 1, 2] = float("nan")
    bad_adj[1, 2, 3] = float("inf")
    empty = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool()
    with pytest.raises(ValueError, match="x contains NaN"):
        check_dense_inputs(bad_x, bad_adj, empty)
    with pytest.raises(ValueError, match="adj contains NaN"):
        check_dense_inputs(x, bad_adj, empty)
    with pytest.raises(ValueError, match="adj contains NaN"):
        check_dense_inputs(bad_x, bad_adj, empty, finite=False, finite_adj=True)
    with pytest.raises(ValueError, match="without nodes"):
        check_dense_inputs(bad_x, bad_adj, empty, finite=False)
    check_dense_inputs(bad_x, bad_adj, None, finite=False)
    check_dense_inputs(x, adj, torch.ones(2, 4, dtype=torch.bool))


def test_dense_value_checks_read_the_device_once(monkeypatch):
    """The value checks of a dense batch (x, adj, mask) share one synchronisation, so that
    the functional's own check of adj adds none to the layer's path."""
    from diffpool.utils import validation

    reads = []
    for name in ("__bool__", "__int__", "__float__", "item", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name):
            reads.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    x, adj = torch.randn(2, 4, 3), torch.rand(2, 4, 4)
    validation.check_dense_inputs(x, adj, torch.ones(2, 4, dtype=torch.bool))
    assert len(reads) == 1
    reads.clear()
    validation.check_dense_inputs(x, adj, None, finite=False)
    assert reads == []


def test_finite_values_whose_sum_overflows_pass_and_a_nan_among_them_does_not():
    """The finiteness checks test a sum; finite values whose sum overflows (to inf) are told
    apart on the host, and a NaN or an infinity is still named, in every dtype."""
    from diffpool.utils.validation import check_dense_inputs, check_features

    for dtype, sign in itertools.product(
        (torch.float16, torch.bfloat16, torch.float32, torch.float64), (1, -1)
    ):
        # negative sums too: the host reads the sum's bits, a negative int64
        big = torch.full((3, 4), sign * torch.finfo(dtype).max, dtype=dtype)
        check_features(big, dim=2)
        check_dense_inputs(big[None], big[None, :, :3].expand(1, 3, 3).clone(), None)
        for bad in (float("nan"), float("inf"), -float("inf")):
            x = big.clone()
            x[1, 2] = bad
            with pytest.raises(ValueError, match="x contains NaN or infinite"):
                check_features(x, dim=2)
    # +inf and -inf sum to NaN: still named
    x = torch.zeros(2, 2)
    x[0, 0], x[1, 1] = float("inf"), -float("inf")
    with pytest.raises(ValueError, match="x contains NaN or infinite"):
        check_features(x, dim=2)


def test_edges_within_graphs_takes_int32_indices():
    """An int32 edge_index (valid in PyG) is checked as an int64 one: an edge across graphs
    is named, one inside its graph passes."""
    from diffpool.utils.validation import check_edges_within_graphs

    batch = torch.tensor([0, 0, 1, 1])
    check_edges_within_graphs(torch.tensor([[0, 2], [1, 3]], dtype=torch.int32), batch)
    across = torch.tensor([[0, 1], [1, 2]], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"1 edge\(s\) .* node 1 of graph 0 and node 2 of graph 1"):
        check_edges_within_graphs(across, batch)
