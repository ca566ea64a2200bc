import os

# One intra-op thread, here and in the subprocesses the tests start: the tests' graphs are small
# and gain nothing from more, and on a shared 2-core machine more threads only contend.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import tu_dataset  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


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
