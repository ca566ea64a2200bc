"""Encoder stacks: options, the masked batch norm, registering an encoder."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import DenseGraphConv, GraphConv
from torch_geometric.utils import to_dense_adj, to_dense_batch

from diffpool import DenseDiffPoolConv, DiffPoolConv
from diffpool.functional import AssignmentHead
from diffpool.models import DiffPoolNet
from diffpool.nn import ENCODERS, DenseGNNEncoder, GNNEncoder, register_encoder
from diffpool.nn.encoders import MaskedBatchNorm
from helpers import random_batch


def test_masked_batch_norm_ignores_padding():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    padded = x.clone()
    padded[~mask] = 1e3  # garbage in the padding must not move the statistics
    norm = MaskedBatchNorm(4)
    out = norm(padded, mask)
    ref = torch.nn.BatchNorm1d(4)(x[mask])
    torch.testing.assert_close(out[mask], ref)
    assert (out[~mask] == 0).all()
    torch.testing.assert_close(norm.running_mean, 0.1 * x[mask].mean(0))


def test_concat_and_lin_widths():
    batch = random_batch([6, 9], num_features=3)
    enc = GNNEncoder("sage", 3, 8, 5, num_layers=3, concat=True, norm="batch")
    assert enc.out_channels == 8 + 8 + 5
    assert enc(batch.x, batch.edge_index).shape == (15, 21)
    head = GNNEncoder("sage", 3, 8, 5, num_layers=3, concat=True, lin=True, normalize=True)
    assert head(batch.x, batch.edge_index).shape == (15, 5)
    x, mask = to_dense_batch(batch.x, batch.batch)
    adj = to_dense_adj(batch.edge_index, batch.batch)
    dense = DenseGNNEncoder("sage", 3, 8, 5, num_layers=3, concat=True, norm="batch")
    out = dense(x, adj, mask)
    assert out.shape == (2, 9, 21) and (out[~mask] == 0).all()
    normalized = GNNEncoder("gcn", 3, 8, 5, normalize=True)(batch.x, batch.edge_index)
    torch.testing.assert_close(normalized.norm(dim=-1), torch.ones(15))
    with pytest.raises(ValueError, match="norm"):
        GNNEncoder("sage", 3, 8, 5, norm="layer")


def test_user_registered_encoder_works_everywhere():
    name = "graphconv_test"
    register_encoder(name, GraphConv, DenseGraphConv)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_encoder(name, GraphConv, DenseGraphConv)
        batch = random_batch([7, 12, 5], num_features=4)
        layer = DiffPoolConv.from_encoder(name, 4, 8, 3, concat=True, norm="batch")
        out = layer(batch.x, batch.edge_index, batch.batch)
        assert out.x.shape == (3, 3, 16)
        dense = DenseDiffPoolConv.from_encoder(name, 16, 8, 2)
        assert dense(out.x, out.adj).x.shape == (3, 2, 8)
        model = DiffPoolNet(4, 2, 12, encoder=name, num_levels=2, hidden_channels=8)
        assert model(batch.x, batch.edge_index, batch.batch).logits.shape == (3, 2)
    finally:
        ENCODERS.pop(name)


def test_layers_take_a_fixed_assignment():
    batch = random_batch([5, 8], num_features=3)
    layer = DiffPoolConv(GNNEncoder("sage", 3, 4, 4), None, num_clusters=3)
    assignment = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 0, 1, 1, 1, 0])
    out = layer(batch.x, batch.edge_index, batch.batch, assignment=assignment)
    assert torch.equal(out.s.argmax(-1)[out.mask], assignment)
    assert out.entropy_loss == 0
    with pytest.raises(ValueError, match="pool=None"):
        layer(batch.x, batch.edge_index, batch.batch)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        layer(batch.x, batch.edge_index, batch.batch, assignment=assignment + 1)
    with pytest.raises(TypeError, match="integer"):
        layer(batch.x, batch.edge_index, batch.batch, assignment=assignment.float())
    dense = DenseDiffPoolConv(DenseGNNEncoder("sage", 4, 4, 4), None, num_clusters=2)
    fixed = torch.tensor([[0, 1, 1], [1, 0, -7]])  # the padded entry is ignored
    mask = torch.tensor([[True, True, True], [True, True, False]])
    out2 = dense(out.x, out.adj, mask, assignment=fixed)
    assert out2.cluster_mask.tolist() == [[True, True], [True, True]]
    with pytest.raises(ValueError, match="shape"):
        dense(out.x, out.adj, mask, assignment=fixed[:, :2])


def test_a_registered_edge_encoder_gets_the_edge_features():
    """``register_encoder(edge=True)``: the sparse factory gets ``edge_dim``, the layer
    ``edge_attr`` (the first level only; the dense levels have none)."""
    from torch_geometric.nn import DenseGraphConv, TransformerConv

    name = "transformer_edges_test"
    register_encoder(
        name,
        lambda i, o, edge_dim=None: TransformerConv(i, o, edge_dim=edge_dim),
        DenseGraphConv,
        edge=True,
    )
    try:
        batch = random_batch([7, 12, 5], num_features=4)
        edge_attr = torch.randn(batch.num_edges, 3)
        model = DiffPoolNet(4, 2, 12, encoder=name, num_levels=2, hidden_channels=8, edge_dim=3)
        model.eval()
        first = model(batch.x, batch.edge_index, batch.batch, edge_attr=edge_attr).logits
        other = model(batch.x, batch.edge_index, batch.batch, edge_attr=edge_attr + 1).logits
        assert first.shape == (3, 2) and not torch.allclose(first, other)
        assert model.levels[0].embed.convs[0].lin_edge is not None  # built with edge_dim
        with pytest.raises(ValueError, match="got no edge_attr"):
            model(batch.x, batch.edge_index, batch.batch)
    finally:
        ENCODERS.pop(name)


@pytest.mark.parametrize("encoder", ["sage", "sum"])
@pytest.mark.parametrize("normalize", [False, True])
def test_fold_head_equals_the_map_of_the_output(encoder, normalize):
    torch.manual_seed(0)
    batch = random_batch([9, 14, 6], num_features=3)
    enc = GNNEncoder(
        encoder, 3, 8, 40, num_layers=3, concat=True, norm="batch", normalize=normalize
    ).double()
    weight = torch.randn(25, enc.out_channels, dtype=torch.float64, requires_grad=True)
    x, edge_weight = batch.x.double(), torch.rand(batch.edge_index.size(1), dtype=torch.float64)
    args = (x, batch.edge_index, edge_weight) if encoder == "sum" else (x, batch.edge_index)
    expected = enc(*args) @ weight.t()
    features, fold = enc.fold_head(*args)
    assert features.size(1) < enc.out_channels and fold.size(0) == 40
    folded = AssignmentHead(features, weight, fold=fold).narrow(25).weight
    torch.testing.assert_close(features @ folded.t(), expected)
    params = [weight, *enc.parameters()]
    probe = torch.randn_like(expected)
    want = torch.autograd.grad((expected * probe).sum(), params)
    got = torch.autograd.grad(((features @ folded.t()) * probe).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_fold_head_only_where_it_applies_and_pays():
    batch = random_batch([6, 9], num_features=3)
    args = (batch.x, batch.edge_index)
    assert GNNEncoder("gcn", 3, 8, 40, num_layers=3, concat=True).fold_head(*args) is None
    narrow = GNNEncoder("sage", 3, 8, 16, num_layers=3, concat=True)  # 17 inputs, 16 outputs
    assert narrow.fold_head(*args) is None
    assert GNNEncoder("sage", 3, 8, 40, num_layers=3).fold_head(*args) is None  # no concat
    assert GNNEncoder("sage", 3, 8, 40, num_layers=3, concat=True).fold_head(*args) is not None


def test_the_layer_folds_its_head_into_the_pooling_gnn():
    """Per-graph budgets with a head wider than the pooling GNN's inputs: the layer's output
    and gradients are those of the unfolded computation."""
    torch.manual_seed(0)
    batch = random_batch([12, 30, 7], num_features=3)
    layer = DiffPoolConv.from_encoder(
        "sage", 3, 8, 30, num_layers=3, concat=True, normalize=True, ratio=0.5
    ).double()
    x = batch.x.double()
    calls = []
    fold = layer.pool.fold_head
    layer.pool.fold_head = lambda *a, **k: calls.append(1) or fold(*a, **k)
    out = layer(x, batch.edge_index, batch.batch)
    layer.pool.fold_head = lambda *a, **k: None
    ref = layer(x, batch.edge_index, batch.batch)
    assert calls
    for name in ("x", "adj", "s", "aux_loss"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name))


@pytest.mark.parametrize("encoder", ["sum", "sage"])
def test_an_int32_edge_index_gives_the_int64_result(encoder):
    """int32 indices are valid in PyG; torch's scatter needs int64 on its vectorised path
    (wide features): the stack converts them, in ``forward`` and in ``fold_head``."""
    torch.manual_seed(0)
    batch = random_batch([9, 14, 6], num_features=3)
    enc = GNNEncoder(encoder, 3, 64, 200, num_layers=3, concat=True)
    torch.testing.assert_close(enc(batch.x, batch.edge_index.int()), enc(batch.x, batch.edge_index))
    features, fold = enc.fold_head(batch.x, batch.edge_index.int())
    expected, expected_fold = enc.fold_head(batch.x, batch.edge_index)
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(fold, expected_fold)


@pytest.mark.parametrize("counted", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_is_batch_norm_of_the_real_rows(momentum, counted):
    """Without a synchronisation, by masked statistics or (``counted``: the real rows'
    number given) a gather of the real rows: outputs, gradients and running statistics over
    several steps are BatchNorm1d's on the real rows, in training and in evaluation; a step
    of one real row uses the running statistics and leaves them as they are; several blocks
    normalise together."""

    def real(*masks):  # the number of real rows, where the test gives it
        return [int(m.sum()) for m in masks] if counted else None

    torch.manual_seed(0)
    ours, ref = MaskedBatchNorm(4, momentum=momentum), torch.nn.BatchNorm1d(4, momentum=momentum)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    for _ in range(3):
        x = torch.randn(3, 5, 4, requires_grad=True)
        mask = torch.rand(3, 5) < 0.6
        mask[:, 0] = True
        out = ours.forward_groups(
            [torch.where(mask[..., None], x, float("nan"))], [mask], real(mask)
        )[0]
        want = ref(x[mask])
        torch.testing.assert_close(out[mask], want)
        assert (out[~mask] == 0).all()
        grad = torch.autograd.grad(out[mask].pow(2).sum(), x)[0]
        torch.testing.assert_close(grad, torch.autograd.grad(want.pow(2).sum(), x)[0])
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    one = torch.zeros(1, 3, dtype=torch.bool)
    one[0, 0] = True
    before = ours.running_mean.clone()
    single = ours.forward_groups([torch.randn(1, 3, 4)], [one], real(one))[0]
    assert torch.isfinite(single).all() and torch.equal(ours.running_mean, before)
    xs, masks = [torch.randn(2, 3, 4), torch.randn(3, 6, 4)], [None, torch.rand(3, 6) < 0.7]
    masks[1][:, 0] = True
    joined = ours.forward_groups(xs, masks, real(torch.ones(2, 3), masks[1]))
    ref.train()
    rows = torch.cat([xs[0].flatten(0, 1), xs[1][masks[1]]])
    torch.testing.assert_close(torch.cat([joined[0].flatten(0, 1), joined[1][masks[1]]]), ref(rows))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    ours.eval(), ref.eval()
    x, everything = torch.randn(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)
    torch.testing.assert_close(
        ours.forward_groups([x], [everything], real(everything))[0],
        ref(x.flatten(0, 1)).view(2, 3, 4),
    )


def test_a_dense_encoder_given_the_number_of_real_nodes_checks_it(monkeypatch):
    """``num_nodes`` must be the mask's count: batch norm gathers that many rows; a device
    without ``nonzero_static`` (CUDA before torch 2.6) takes the masked statistics."""
    enc = DenseGNNEncoder("sage", 3, 8, 8, num_layers=2, norm="batch")
    x, adj = torch.randn(2, 4, 3), torch.rand(2, 4, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(enc(x, adj, mask, num_nodes=5), enc(x, adj, mask))
    for wrong in (4, 6):
        with pytest.raises(RuntimeError, match="num_nodes differs from the mask's count"):
            enc(x, adj, mask, num_nodes=wrong)
        with pytest.raises(RuntimeError, match="num_nodes differs from the mask's count"):
            enc.norms[0](torch.randn(2, 4, 8), mask, num_nodes=wrong)
    with pytest.raises(ValueError, match="num_nodes has 1 counts for 2 blocks"):
        enc.norms[0].forward_groups([x, x], [mask, mask], [5])

    def no_kernel(*args, **kwargs):
        raise NotImplementedError("Could not run 'aten::nonzero_static' with arguments")

    expected = enc(x, adj, mask)
    monkeypatch.setattr(torch, "nonzero_static", no_kernel)
    torch.testing.assert_close(enc(x, adj, mask, num_nodes=5), expected)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_without_padding_is_the_masked_path(momentum):
    """A block without a mask (every row real) takes torch's fused batch norm: the same
    outputs, gradients and running statistics as the masked statistics with an all-true
    mask, over several steps; a block of one row still keeps the running statistics."""
    torch.manual_seed(0)
    fused, masked = MaskedBatchNorm(4, momentum=momentum), MaskedBatchNorm(4, momentum=momentum)
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.uniform_(-1, 1)
    masked.load_state_dict(fused.state_dict())
    for shape in [(3, 5, 4), (7, 4), (2, 6, 4)]:
        x = torch.randn(*shape, requires_grad=True)
        everything = torch.ones(shape[:-1], dtype=torch.bool)
        out, want = fused(x), masked(x, everything)
        torch.testing.assert_close(out, want)
        grad = torch.autograd.grad(out.pow(3).sum(), x)[0]
        torch.testing.assert_close(grad, torch.autograd.grad(want.pow(3).sum(), x)[0])
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fused, name), getattr(masked, name))
    before = fused.running_mean.clone()
    assert torch.isfinite(fused(torch.randn(1, 1, 4))).all()
    assert torch.equal(fused.running_mean, before)
    fused.eval(), masked.eval()
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(fused(x), masked(x, torch.ones(2, 3, dtype=torch.bool)))


def test_one_backward_of_a_fused_and_a_masked_batch_norm_forward():
    """Two forwards of one module before one backward (two micro-batches summed, or a
    model's call with levels and one without): the fused route saves the running statistics
    for its backward, and the masked route's update of them must not invalidate it."""
    torch.manual_seed(0)
    norm = MaskedBatchNorm(8)
    x = torch.randn(2, 5, 8, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    both = norm(x).pow(2).sum() + norm(x, mask).pow(2).sum()
    (grad,) = torch.autograd.grad(both, x)
    alone = MaskedBatchNorm(8)
    expected = torch.autograd.grad(alone(x).pow(2).sum(), x)[0]
    expected += torch.autograd.grad(alone(x, mask).pow(2).sum(), x)[0]
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_batch_norm_statistics_of_half_inputs(dtype):
    """Half-precision rows (a ``.half()`` model, an encoder whose last op is a linear layer under
    autocast): the masked statistics are summed in float32, as torch's batch norm does. In
    float16 the sum of 2,000 rows near 30 overflowed to inf (a NaN output and running
    statistics inf from then on); in bfloat16 the running mean was 80x further off."""
    torch.manual_seed(0)
    x = torch.randn(64, 50, 8) * 2 + 30
    mask = torch.rand(64, 50) > 0.3
    ref = torch.nn.BatchNorm1d(8)
    want = ref(x[mask])
    ours, fused = MaskedBatchNorm(8), torch.nn.BatchNorm1d(8)
    out = ours(x.to(dtype), mask)
    fused_out = fused(x[mask].to(dtype))
    assert torch.isfinite(out).all() and (out[~mask] == 0).all()
    bound = (fused_out.float() - want).abs().max()
    assert (out[mask].float() - want).abs().max() <= bound
    for name in ("running_mean", "running_var"):
        bound = (getattr(fused, name) - getattr(ref, name)).abs().max()
        assert (getattr(ours, name) - getattr(ref, name)).abs().max() <= 2 * bound + 1e-6, name
