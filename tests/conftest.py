import os

import pytest
import torch

# Under pytest-xdist each worker gets one intra-op thread, so two workers use the machine's two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _policy_cache(tmp_path_factory):
    """Measured policies and backend choices go to a fresh cache: the user's own must not steer the tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MOBILEZOO_CACHE_DIR", str(tmp_path_factory.mktemp("mobilezoo-cache")))
    yield
    mp.undo()
