import os

import pytest
import torch

# Under pytest-xdist each worker gets one intra-op thread, so two workers use the machine's two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
