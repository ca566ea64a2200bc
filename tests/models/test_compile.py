"""torch.compile of the whole model: one graph with a fixed node budget."""

import pytest
import torch

from diffpool.models import build_model
from helpers import random_batch


@pytest.mark.slow
@pytest.mark.parametrize("budget", ["fixed", "per_graph"])
def test_model_compiles_as_one_graph(budget):
    """``torch.compile(model, fullgraph=True)`` on a model built with ``max_num_nodes`` (the
    first level pads every batch to it): no graph break in a training step (masked batch norm
    included), the logits, losses and gradients of eager."""
    torch.manual_seed(0)
    batch = random_batch([12, 30, 18, 25, 7, 40], num_features=5, seed=0)
    model = build_model("diffpool", 5, 3, 40, budget=budget, num_levels=2).double()

    def step(module):
        out = module(batch.x.double(), batch.edge_index, batch.batch, batch_size=6,
                     return_assignments=False, return_levels=False)  # fmt: skip
        loss = out.logits.square().sum() + out.aux_loss
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    eager_loss, eager_grads = step(model)
    compiled_loss, compiled_grads = step(torch.compile(model, fullgraph=True))
    torch.testing.assert_close(compiled_loss, eager_loss)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want)


def test_compiled_pyg_normalization_keeps_eagers_losses():
    """PyG's normalisation divides by the padded size: under compile the model keeps eager's
    padding (the batch's largest graph), not the dataset's, so that compiling changes the
    speed, not the objective."""
    torch.manual_seed(0)
    batch = random_batch([5, 7, 3, 8], num_features=4, seed=1)
    model = build_model("diffpool", 4, 2, 30, num_levels=2, loss_normalization="pyg").eval()

    def losses(module):
        out = module(batch.x, batch.edge_index, batch.batch, batch_size=4)
        return out.link_loss, out.entropy_loss

    for got, want in zip(losses(torch.compile(model, backend="eager")), losses(model)):
        torch.testing.assert_close(got, want)
