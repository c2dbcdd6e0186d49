"""The CPU at hand: its name and the instruction-set features that decide how fast each runtime's kernels are.

Performance policies depend on these (``mobilezoo.policies``): int8 dot-product instructions (AVX-512 VNNI, AVX-VNNI,
AMX-INT8) decide whether 8-bit weights can be used without the int16 saturation of ``vpmaddubsw``, and bf16 ones
(AVX-512 BF16, AMX-BF16) make OpenVINO compute in bf16 unless told otherwise. Every benchmark result records them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

# the flags (as /proc/cpuinfo names them) that any policy or result reads; others are not recorded
FEATURES = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
# strongest first: what ONNX Runtime's and OpenVINO's int8 GEMMs use when present
INT8_DOT_FEATURES = ("amx_int8", "avx512_vnni", "avx_vnni")
BF16_FEATURES = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class CpuInfo:
    """A CPU's vendor, model name and the :data:`FEATURES` it has."""

    vendor: str
    model: str
    features: frozenset[str]

    @property
    def int8_dot(self) -> str | None:
        """The strongest int8 dot-product feature (``amx_int8``, ``avx512_vnni``, ``avx_vnni``), or None."""
        return next((f for f in INT8_DOT_FEATURES if f in self.features), None)

    @property
    def bf16(self) -> str | None:
        """The strongest bf16 arithmetic feature (``amx_bf16``, ``avx512_bf16``), or None."""
        return next((f for f in BF16_FEATURES if f in self.features), None)

    def summary(self) -> str:
        """One line: the model name, then the int8 / bf16 features or their absence."""
        isa = "AVX-512" if "avx512f" in self.features else "AVX2" if "avx2" in self.features else "no AVX2"
        int8 = self.int8_dot or "no int8 dot product"
        bf16 = self.bf16 or "no bf16"
        return f"{self.model} ({isa}, {int8}, {bf16})"

    def kind(self) -> str:
        """A file-name-safe tag of the CPU kind a result was measured on: ``amd_avx512_vnni``, ``intel_amx_int8``,
        ``amd_avx2`` (vendor, then the int8 dot product, else the widest of AVX2 / none)."""
        vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(self.vendor, self.vendor.lower() or "cpu")
        vendor = "".join(c if c.isalnum() else "_" for c in vendor)
        return f"{vendor}_{self.int8_dot or ('avx2' if 'avx2' in self.features else 'noavx2')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "model": self.model,
            "features": sorted(self.features),
            "int8_dot": self.int8_dot,
            "bf16": self.bf16,
        }


def parse_cpuinfo(text: str) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (the first processor's entry)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return CpuInfo(
        vendor=fields.get("vendor_id", "unknown"),
        model=fields.get("model name", platform.processor() or platform.machine()),
        features=frozenset(f for f in FEATURES if f in flags),
    )


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU, read from ``/proc/cpuinfo`` (elsewhere: the platform's name and no known features)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return CpuInfo("unknown", platform.processor() or platform.machine(), frozenset())


RUNTIMES = ("torch", "onnxruntime", "openvino", "mobilezoo")


@functools.cache
def runtime_versions() -> dict[str, str | None]:
    """The installed versions of the runtimes whose speed the policies depend on, and mobilezoo's (the cache's format
    and its exports), read once a process; None: not installed."""
    out: dict[str, str | None] = {}
    for name in RUNTIMES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine_key(cpu: CpuInfo | None = None, versions: dict[str, str | None] | None = None) -> str:
    """A short key for caching measured policies: the CPU model and features, the runtime versions and mobilezoo's.

    A measurement made under one key says nothing about another (another CPU, or a runtime upgrade).
    """
    cpu = cpu or cpu_info()
    versions = versions if versions is not None else runtime_versions()
    blob = json.dumps([cpu.model, sorted(cpu.features), sorted(versions.items())], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
