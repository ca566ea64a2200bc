"""The graph readouts: the max readout's own backward against PyG's global_max_pool."""

import pytest
import torch
from torch_geometric.nn import global_max_pool

from diffpool.models import build_model
from diffpool.models.readout import resolve_batch, sparse_readout


def _batch(counts):
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def test_max_readout_matches_pyg_outputs_and_gradients():
    torch.manual_seed(0)
    batch = _batch([5, 1, 7, 3])
    x = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(5, 6, dtype=torch.float64)  # a fifth graph without nodes
    expected = global_max_pool(x, batch, size=5)
    (want,) = torch.autograd.grad(expected, x, grad)
    out = sparse_readout("max", x, batch, 5)
    (got,) = torch.autograd.grad(out, x, grad)
    assert out.grad_fn is not None and "GlobalMaxPool" in type(out.grad_fn).__name__
    assert torch.equal(out, expected)  # the empty graph reads out zeros, as PyG's
    assert torch.equal(got, want)


@pytest.mark.parametrize("readout", ["max", "mean", "sum"])
def test_readouts_take_an_int32_batch(readout):
    """An int32 batch (valid in PyG) reads out and differentiates as an int64 one: the max
    readout's backward indexed with it and failed."""
    x = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)
    batch = _batch([5, 1, 7, 3])
    grads = []
    for index in (batch, batch.int()):
        out = sparse_readout(readout, x, index, 4)
        grads.append(torch.autograd.grad(out.square().sum(), x)[0])
    assert torch.equal(grads[0], grads[1])


def test_max_readout_splits_a_tie_evenly():
    """Nodes that share a graph's maximum share its gradient; a maximum of 0 too, where
    torch's ``scatter_reduce`` backward also counts the zeros the output starts from."""
    batch = _batch([3, 2])
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, 0.0], [2.0, -1.0], [-3.0, -1.0]])
    x.requires_grad_()
    out = sparse_readout("max", x, batch, 2)
    (got,) = torch.autograd.grad(out, x, torch.ones(2, 2))
    third = 1 / 3
    expected = [[0.5, third], [0.5, third], [0.0, third], [1.0, 0.5], [0.0, 0.5]]
    assert torch.allclose(got, torch.tensor(expected))
    assert torch.allclose(got.sum(0), torch.full((2,), 2.0))  # no gradient lost


def test_max_readout_keeps_a_nan():
    batch = _batch([2, 2])
    x = torch.tensor([[float("nan"), 1.0], [0.0, 2.0], [1.0, 3.0], [2.0, 4.0]])
    x.requires_grad_()
    out = sparse_readout("max", x, batch, 2)
    (got,) = torch.autograd.grad(out, x, torch.ones(2, 2))
    assert torch.isnan(out[0, 0]) and torch.isnan(got[:2, 0]).all()
    assert torch.equal(got[:, 1], torch.tensor([0.0, 1.0, 0.0, 1.0]))


@pytest.mark.parametrize("grad_mode", [False, True])
def test_max_readout_without_gradients_is_pygs(grad_mode):
    batch = _batch([2, 3])
    x = torch.randn(5, 4, requires_grad=grad_mode)
    with torch.set_grad_enabled(grad_mode):
        out = sparse_readout("max", x.detach() if not grad_mode else x, batch, 2)
    assert torch.equal(out.detach(), global_max_pool(x.detach(), batch, size=2))
    assert (out.grad_fn is not None) == grad_mode


def test_max_readout_is_differentiable_twice_as_pygs():
    """A gradient penalty or a Hessian-vector product through the max readout: the second
    derivative is PyG's (a once-differentiable backward gave no gradient through it, silently
    with ``torch.autograd.grad``), also with a graph without nodes."""
    torch.manual_seed(0)
    batch = _batch([3, 2])
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)

    def second(readout):
        (g,) = torch.autograd.grad(readout(x).pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(g.sum(), x)[0]

    expected = second(lambda v: global_max_pool(v, batch, size=3))
    assert torch.equal(second(lambda v: sparse_readout("max", v, batch, 3)), expected)
    assert torch.autograd.gradgradcheck(lambda v: sparse_readout("max", v, batch, 3), (x,))


def test_max_readout_under_torch_func_grad_is_pygs():
    """``torch.func.grad`` (functional training loops, meta-learning) through the max readout:
    an autograd.Function without ``setup_context`` is refused by torch.func's transforms."""
    batch = _batch([3, 2])
    x = torch.randn(5, 3, dtype=torch.float64)
    weight = torch.randn(3, 3, dtype=torch.float64)

    def loss(readout):
        return torch.func.grad(lambda v: (readout(v) * weight).sum())(x)

    got = loss(lambda v: sparse_readout("max", v, batch, 3))
    assert torch.equal(got, loss(lambda v: global_max_pool(v, batch, size=3)))


def test_a_batch_size_without_batch_is_not_dropped():
    """``model(x, edge_index, None, batch_size=3)`` gave one graph's logits, where the same
    call with ``batch`` given names the empty graphs."""
    x, edge_index = torch.randn(4, 2), torch.tensor([[0, 1, 2], [1, 2, 3]])
    assert resolve_batch(x, None, None)[1] == 1
    assert resolve_batch(x, None, 3)[1] == 3
    model = build_model("diffpool", 2, 2, 4).eval()
    with pytest.raises(ValueError, match="batch_size=3"):
        model(x, edge_index, None, batch_size=3)


def test_max_readout_under_hessian_and_per_sample_gradients_is_pygs():
    """``torch.func.hessian`` (forward over reverse), ``jvp`` of a gradient and ``vmap`` of a
    gradient (per-sample gradients) need jvp and vmap rules, which PyG's readout has: the
    model's max readout gave a RuntimeError or NotImplementedError there."""
    torch.manual_seed(0)
    batch = _batch([2, 3])
    x = torch.randn(5, 3, dtype=torch.float64)
    weight = torch.randn(2, 3, dtype=torch.float64)

    def transforms(readout):
        def loss(v):
            return (readout(v).pow(2) * weight).sum()

        grad = torch.func.grad(loss)
        return (torch.func.hessian(loss)(x),
                torch.func.jvp(grad, (x,), (torch.ones_like(x),))[1],
                torch.func.vmap(grad)(torch.stack([x, 2 * x])))  # fmt: skip

    got = transforms(lambda v: sparse_readout("max", v, batch, 2))
    for a, b in zip(got, transforms(lambda v: global_max_pool(v, batch, size=2))):
        assert torch.equal(a, b)
