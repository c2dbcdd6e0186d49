import pytest
import torch


@pytest.fixture
def one_thread():
    """Runs compared bit-for-bit must use the same intra-op thread count (reductions are split per thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A tiny run: 32x32 digits, 192 training images in batches of 32 (6 steps an epoch), dropout on (RNG in play)
TINY = {
    "model": "mobilenet_v1_x0_25",
    "data": "builtin",
    "img_size": 32,
    "batch_size": 32,
    "epochs": 2,
    "train_subset": 192,
    "val_subset": 40,
    "drop_rate": 0.2,
    "bn_recalibrate": 2,
    "auto_augment": "none",
    "device": "cpu",
}
