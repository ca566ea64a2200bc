import pytest
import torch

from helpers import tu_dataset


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(12345)


@pytest.fixture(scope="session")
def tu(tmp_path_factory):
    """``tu("ENZYMES")`` gives the real dataset (cached for the session), or skips."""
    root = tmp_path_factory.mktemp("tu")
    cache = {}

    def load(name: str):
        if name not in cache:
            cache[name] = tu_dataset(name, root)
        return cache[name]

    return load
