"""Distributed data parallel helpers: the same script runs alone or under ``torchrun --nproc_per_node N``.

torchrun sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; the process group uses NCCL on CUDA and gloo on CPU. SyncBatchNorm
is used on CUDA only (PyTorch has no CPU implementation), so on CPU each rank's BatchNorm normalises its own share of the
batch: the single-process equivalent is gradient accumulation over ``world_size`` micro-batches (``accum_steps``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(world, rank, local)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: object, info: DistInfo) -> object:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["DistInfo", "all_reduce_sum", "barrier", "broadcast_object", "setup"]
