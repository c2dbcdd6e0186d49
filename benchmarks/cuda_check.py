"""GPU check of the harness (CUDA events, allocator peak): mobilezoo vs torchvision, interleaved, on one GPU.

python benchmarks/cuda_check.py [--out benchmarks/results/cuda.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from mobilezoo.benchmark import compare

MODELS = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x1_0")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "cuda.json"))
    p.add_argument("--backends", default="eager,channels_last")
    p.add_argument("--batch-sizes", default="1,256")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here")
        return 1
    torch.backends.cudnn.benchmark = True  # as the ShuffleNet V2 paper's GPU runs: fastest algorithm per conv
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        for backend in args.backends.split(","):
            for model in MODELS:
                c = compare(model, backend=backend, batch_size=batch, device="cuda", warmup=10, iters=50)
                rows.append(c.to_dict())
                print(
                    f"{model:20s} {backend:14s} batch {batch:4d}: ours {c.ours.median_ms:8.3f} ms "
                    f"tv {c.reference.median_ms:8.3f} ms ratio {c.median_ratio:.3f} "
                    f"peak {c.ours.peak_memory_bytes / 2**20:.0f} MiB ({c.ours.throughput:.0f} img/s)",
                    flush=True,
                )
    Path(args.out).write_text(json.dumps({"cudnn_benchmark": True, "comparisons": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
