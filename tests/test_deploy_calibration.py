"""int8 calibration batches read image folders as training does (:func:`mobilezoo.data.load_image`)."""

import numpy as np
import torch
from PIL import Image

from mobilezoo.deploy.calibration import image_batches


def test_calibration_folder_reads_16_bit_scans_as_a_viewer_shows_them(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for root in ("hi", "lo"):
            (tmp_path / root / c).mkdir(parents=True)
        for i in range(3):
            arr = (rng.random((36, 40)) * 65535).astype(np.uint16)
            Image.fromarray(arr).save(tmp_path / "hi" / c / f"{i}.png")  # 16-bit grayscale ("I;16")
            Image.fromarray(np.rint(arr / 257.0).astype(np.uint8)).save(tmp_path / "lo" / c / f"{i}.png")
    for in_chans in (1, 3):
        kw = {"in_chans": in_chans, "resolution": 32, "num_images": None, "batch_size": 4}
        hi, lo = list(image_batches(tmp_path / "hi", **kw)), list(image_batches(tmp_path / "lo", **kw))
        assert [b[0].shape[0] for b in hi] == [4, 2] and hi[0][0].shape[1] == in_chans
        for (xa, ya, sa), (xb, yb, sb) in zip(hi, lo):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and sa == sb == 0
