"""The training step's speed policies: its memory format, measured on the machine at hand, and the allocator's.

channels_last is not faster everywhere on CPU: on an Intel Xeon with AVX-512 and AMX a MobileNetV3-Small training step
(batch 32, 224 px) ran 1.29x faster in channels_last than in NCHW, while on an AMD EPYC (AVX2) channels_last inference
was 3-4x slower at 1 thread. :func:`choose_channels_last` times a few real steps of both layouts, interleaved, on a
copy of the model, and caches the answer per machine, model and input (``mobilezoo.policies``). On CUDA channels_last
is used without measuring (its convolutions are NHWC-native).

:func:`keep_freed_memory` stops glibc's malloc from handing a step's freed activations back to the kernel. By default
each buffer over its dynamic mmap threshold (at most 32 MiB) is mmap-ed, zero-filled page by page on first touch and
unmapped when freed, and free memory at the heap's top beyond the trim threshold is returned: every step maps its
activations afresh. A MobileNetV3-Small step (batch 32, 224 px) took ~60,000 minor page faults and spent 15-20% of
its CPU time in the kernel; with the memory kept it took almost none and ran ~1.1x faster (AMD EPYC Zen 4, glibc
2.36; ``benchmarks/train_speed.py``). The cost of page faults is the kernel's, not the CPU's vector units: the setting
follows from the platform (glibc on Linux, no allocator chosen by the user), not from a timing.
"""

from __future__ import annotations

import copy
import ctypes
import os
import platform
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mobilezoo.policies import Decision, MeasuredChoice, cached, measure_choice, store

_ASKED: dict[str, Decision] = {}


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the copy's weights stay what they were

    def run() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def choose_channels_last(
    model: nn.Module,
    batch_size: int,
    in_chans: int,
    img_size: int,
    device: torch.device,
    *,
    key: str | None = None,
    measure: Callable[..., MeasuredChoice] = measure_choice,
) -> Decision:
    """Whether a training step of ``model`` runs faster in channels_last than in NCHW here (a :class:`Decision`).

    ``key`` (e.g. the registered model name) enables the cache: the same question on the same machine and versions
    is answered from it. The measurement runs forward, backward and an optimizer step at the real batch size on a
    copy of ``model`` in train mode (BN statistics of the original are untouched), 2 calls per layout per round.
    """
    if device.type == "cuda":
        return Decision("train_channels_last", True, "default", "CUDA convolutions are NHWC-native")
    item = f"{key}|batch={batch_size}|in_chans={in_chans}|size={img_size}|threads={torch.get_num_threads()}"
    if key and item in _ASKED:  # one process gives one answer, measured or not (runs compared in it stay comparable)
        return _ASKED[item]
    hit = cached("train_channels_last", item) if key else None
    if hit is not None:
        return _ASKED.setdefault(item, Decision(**hit))
    num_classes = getattr(model, "num_classes", 10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, in_chans, img_size, img_size, generator=gen)
    y = torch.randint(0, max(1, num_classes), (batch_size,), generator=gen)
    nchw = copy.deepcopy(model).to(device).train()
    nhwc = copy.deepcopy(model).to(device, memory_format=torch.channels_last).train()
    runs = {
        "contiguous": _step(nchw, x.to(device), y.to(device)),
        "channels_last": _step(nhwc, x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)),
    }
    choice = measure(runs, calls=2, warmup=1, min_rounds=2, max_rounds=4, tie_margin=0.02)
    ratio = choice.ratios["contiguous"] / choice.ratios["channels_last"]
    decision = Decision(
        "train_channels_last",
        choice.best == "channels_last",
        "measured",
        f"training step, batch {batch_size}, {img_size} px: NCHW {choice.medians_ms['contiguous']:.1f} ms, "
        f"channels_last {choice.medians_ms['channels_last']:.1f} ms (NCHW / channels_last {ratio:.2f})"
        + ("" if choice.stable else "; not stable against the machine's noise"),
        choice.to_dict(),
    )
    if key:
        _ASKED[item] = decision
        if choice.stable:
            store("train_channels_last", item, decision.to_dict())
    return decision


# glibc's mallopt parameters (malloc.h) and the environment through which a user sets them or another allocator
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BYTES = 1 << 30  # glibc >= 2.35 takes any size; older ones refuse more than 32 MiB (then 32 MiB is used)
_FALLBACK_MMAP_BYTES = 32 << 20
_USER_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
_KEPT: list[Decision] = []  # the decision that changed this process's allocator, once made


def keep_freed_memory(*, environ: Mapping[str, str] | None = None, libc: Any = None) -> Decision:
    """Make glibc keep the memory a training step frees for the next one, for the rest of this process.

    Sets malloc's mmap threshold to 1 GiB (32 MiB where glibc refuses more) and turns heap trimming off (``mallopt``),
    so activations are carved from memory already mapped instead of fresh zero-filled pages (the module docstring
    gives the figures). The process's resident memory then stays near its peak until it exits. Applied once per
    process; nothing is changed where the C library is not glibc, where the user chose malloc's thresholds
    (``MALLOC_*_`` variables, ``glibc.malloc`` tunables in ``GLIBC_TUNABLES``) or preloads another allocator
    (jemalloc, tcmalloc, mimalloc in ``LD_PRELOAD``), or where ``mallopt`` refuses. Returns a :class:`Decision`
    (policy ``train_keep_freed_memory``, value: whether the setting is in force, ``how`` ``platform``).
    ``environ`` and ``libc`` (an object with ``mallopt(int, int) -> int``) stand in for the real ones in tests.
    """
    if _KEPT:
        return _KEPT[0]
    env = os.environ if environ is None else environ

    def unchanged(reason: str) -> Decision:
        return Decision("train_keep_freed_memory", False, "platform", reason)

    user_set = [k for k in _USER_MALLOC_ENV if k in env]
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        user_set.append("GLIBC_TUNABLES")
    if user_set:
        return unchanged(f"malloc's thresholds set by the user ({', '.join(user_set)}): left as they are")
    preload = env.get("LD_PRELOAD", "")
    other = [name for name in _OTHER_ALLOCATORS if name in preload]
    if other:
        return unchanged(f"another allocator is preloaded ({other[0]} in LD_PRELOAD): left as it is")
    if libc is None:
        lib_name, lib_version = platform.libc_ver()
        if lib_name != "glibc":
            return unchanged(f"the C library is {lib_name or 'not glibc'}: mallopt's thresholds are glibc's")
        libc, lib = ctypes.CDLL(None), f"glibc {lib_version}"
    else:
        lib = "the given C library"
    mmap_bytes = _KEEP_BYTES
    if not libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes):
        mmap_bytes = _FALLBACK_MMAP_BYTES
        if not libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes):
            return unchanged(f"{lib} refused an mmap threshold of {mmap_bytes >> 20} MiB")
    if not libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES):
        return unchanged(  # glibc always accepts one; the mmap threshold set above stays
            f"{lib} refused a trim threshold of {_KEEP_BYTES >> 20} MiB (the mmap threshold is now "
            f"{mmap_bytes >> 20} MiB)"
        )
    decision = Decision(
        "train_keep_freed_memory",
        True,
        "platform",
        f"{lib}: buffers up to {mmap_bytes >> 20} MiB come from the heap and freed memory stays mapped "
        f"(trim threshold {_KEEP_BYTES >> 20} MiB), so each step reuses the last one's pages",
        {"mmap_threshold_bytes": mmap_bytes, "trim_threshold_bytes": _KEEP_BYTES},
    )
    _KEPT.append(decision)
    return decision


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` changed this process's allocator (it stays changed until the process ends)."""
    return bool(_KEPT)
