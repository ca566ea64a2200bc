"""How often a training step makes the host wait for the device, counted on the CPU.

On a GPU every call below is a synchronisation (a copy to the host, or an output whose size
depends on the data); on the CPU nothing waits, so the test counts the calls themselves, from
Python, with a ``TorchFunctionMode``."""

import collections

import pytest
import torch
from torch.overrides import TorchFunctionMode, resolve_name

from diffpool.models import build_model
from helpers import random_batch

#: calls that read the device from the host
READS = {"torch.Tensor.item", "torch.Tensor.tolist", "torch.Tensor.__int__",
         "torch.Tensor.__float__", "torch.Tensor.__index__", "torch.Tensor.__bool__"}  # fmt: skip
#: calls whose output size depends on the data
DATA_SIZED = {"torch.nonzero", "torch.Tensor.nonzero", "torch.masked_select",
              "torch.Tensor.masked_select", "torch.unique", "torch.Tensor.unique",
              "torch.bincount", "torch.Tensor.bincount"}  # fmt: skip


class CountSyncs(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = resolve_name(func) or ""
        on_device = [a for a in args if isinstance(a, torch.Tensor)]
        if name in READS | DATA_SIZED:
            self.calls[name] += 1
        elif name in ("torch.Tensor.__getitem__", "torch.Tensor.__setitem__") and len(on_device):
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                self.calls["boolean mask " + name] += 1
        return func(*args, **kwargs)


@pytest.mark.parametrize("pool_net", ["gnn", "mlp"])
@pytest.mark.parametrize("budget", ["fixed", "per_graph"])
def test_a_training_step_reads_the_device_once_per_batch(budget, pool_net):
    """The inputs' checks and the batch's sizes come in one read; no output of the step has a
    data-dependent size (no boolean-mask indexing, nonzero, unique, bincount), and on small
    graphs the link loss of every level comes from the residual (no check for cancellation).
    (On large graphs the sparse layout's coalesce and the identity's check for cancellation
    read the device too: one each per level.)"""
    torch.manual_seed(0)
    small = random_batch([12, 30, 18, 25, 7, 40], num_features=5, seed=0)
    model = build_model("diffpool", 5, 3, 40, budget=budget, num_levels=2, pool_net=pool_net)

    def step():
        out = model.forward_batch(small, return_assignments=False, return_levels=False)
        (out.logits.sum() + out.aux_loss).backward()

    step()
    with CountSyncs() as mode:
        step()
    assert dict(mode.calls) == {"torch.Tensor.tolist": 1}, mode.calls  # the batch's one read


def test_on_large_graphs_the_sparse_level_reads_twice_more():
    """Graphs too large for one dense block take the sparse layout: its coalesce checks for
    duplicate edges and the identity's terms are checked for cancellation, one read each;
    the dense level after it is small and takes the residual (no read)."""
    torch.manual_seed(0)
    large = random_batch([300, 280, 250, 310], num_features=5, seed=1)
    model = build_model("diffpool", 5, 3, 310, budget="fixed", num_levels=2)
    out = model.forward_batch(large, return_assignments=False, return_levels=False)
    (out.logits.sum() + out.aux_loss).backward()
    with CountSyncs() as mode:
        out = model.forward_batch(large, return_assignments=False, return_levels=False)
        (out.logits.sum() + out.aux_loss).backward()
    assert dict(mode.calls) == {"torch.Tensor.tolist": 1, "torch.Tensor.__bool__": 2}, mode.calls
