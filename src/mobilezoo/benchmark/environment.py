"""The machine, versions and peak memory a measurement is reported with."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def package_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    """Machine, versions and load: what a speed figure is meaningless without."""
    dev = torch.device(device)
    env: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "onnxruntime": package_version("onnxruntime"),
        "openvino": package_version("openvino"),
    }
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


# ---------------------------------------------------------------- peak memory


class PeakMemory:
    """Peak memory over a stretch of code: CUDA's allocator peak on a GPU, else the process's peak resident set.

    On Linux the process peak (``VmHWM``) is reset by writing 5 to ``/proc/self/clear_refs``; where that is not possible
    the figure is ``ru_maxrss``, the peak since the process started, and says so.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = ""
        self.before: int | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = int(torch.cuda.memory_allocated(self.device))
            self.kind = "torch.cuda.max_memory_allocated during warm-up (tensors on the GPU only)"
            return
        self.before = _proc_status("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.kind = "process peak resident set (VmHWM) during warm-up, reset before it; includes Python and torch"
        except OSError:
            self.kind = "process peak resident set since process start (ru_maxrss; could not reset VmHWM)"

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        peak = _proc_status("VmHWM")
        if peak is None:
            import resource

            peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        # the resident set can shrink between reading it and resetting VmHWM; the stretch's peak is at least `before`
        return max(peak, self.before or 0)


def _proc_status(field: str) -> int | None:
    """A memory figure of this process from ``/proc/self/status``, in bytes; None off Linux."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None
