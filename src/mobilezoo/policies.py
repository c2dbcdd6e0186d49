"""Deployment policies decided for the machine at hand, by measuring it or by its CPU's features.

A default that was measured on one CPU is a guess on the next: ONNX Runtime's thread spinning cost 1% on an AMD EPYC
(AVX2, no VNNI) and 50% on an Intel Xeon with AVX-512, VNNI and AMX. Each policy here is a :class:`Decision` that says
its value, how it was reached (``measured`` on this machine, or from the ``cpu-features``, or the ``default`` when
nothing was measured) and why. ``mobilezoo tune`` (:func:`mobilezoo.benchmark.tune.tune`) measures the measurable
ones and caches them per :func:`~mobilezoo.machine.machine_key` (CPU model, features, runtime and mobilezoo versions) in
``policies.json`` under :func:`cache_dir`; the deploy functions read the cache.

:func:`measure_choice` is the measurement every policy uses: candidates timed in interleaved rounds, each round a block
of consecutive calls per candidate (so no candidate's idle threads sit between another's calls), repeated until the
winner is stable against the machine's noise. :func:`measure_pair` answers "how much faster is one than the
other" head to head, with a sign test that calls a tie a tie.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mobilezoo.machine import CpuInfo, cpu_info, machine_key

# ONNX Runtime intra-op thread spinning: never; only while a run is in progress (``session.force_spinning_stop``:
# spinning stops when run() returns); always (ONNX Runtime's default: idle threads keep spinning after a run)
SPIN_MODES = ("off", "during-run", "always")
# the side-by-side measurement mode: an idle session must not spin on the cores of the one being timed
FAIR_SPIN = "during-run"


@dataclass(frozen=True)
class Decision:
    """One policy's value on this machine, how it was reached and why (with the figures when measured)."""

    policy: str
    value: Any
    how: str
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MeasuredChoice:
    """The fastest of several candidates, measured interleaved.

    ``medians_ms``: each candidate's median over rounds of its per-round median; ``ratios``: median / the best's;
    ``stable``: every other candidate lost to the best in each of the last ``min_rounds`` rounds, or is within the tie
    margin (then either choice is as fast).
    """

    best: str
    medians_ms: dict[str, float]
    ratios: dict[str, float]
    rounds: int
    stable: bool
    per_round_ms: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "medians_ms": {k: round(v, 4) for k, v in self.medians_ms.items()},
            "ratios": {k: round(v, 4) for k, v in self.ratios.items()},
            "rounds": self.rounds,
            "stable": self.stable,
            "per_round_ms": {k: [round(t, 4) for t in v] for k, v in self.per_round_ms.items()},
        }


def _check_counts(**counts: object) -> None:
    """Raise ValueError naming the first count that is not an integer >= 1."""
    for name, value in counts.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _time_block(
    fn: Callable[[], object],
    warmup: int,
    calls: int,
    pause_s: float,
    timer: Callable[[], float],
    sleep: Callable[[float], None],
) -> float:
    """One block: ``warmup`` untimed calls, the median of ``calls`` timed ones in ms, then ``pause_s`` of sleep."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(calls):
        t0 = timer()
        fn()
        samples.append((timer() - t0) * 1e3)
    if pause_s:
        sleep(pause_s)
    return statistics.median(samples)


def measure_choice(
    candidates: Mapping[str, Callable[[], object]],
    *,
    calls: int = 10,
    warmup: int = 2,
    min_rounds: int = 3,
    max_rounds: int = 9,
    tie_margin: float = 0.03,
    pause_s: float = 0.0,
    timer: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> MeasuredChoice:
    """Time ``candidates`` (name -> a call to time) in interleaved rounds and return the fastest.

    Each round runs, for every candidate in turn (the order rotated each round), ``warmup`` untimed calls then
    ``calls`` timed ones, and records their median in ms. After ``min_rounds`` rounds it stops as soon as the choice is
    stable (see :class:`MeasuredChoice`), else after ``max_rounds`` with ``stable=False``. ``pause_s`` sleeps between
    blocks, so that a runtime whose idle threads spin briefly after a call settles before the next one is timed.
    ``timer`` and ``sleep`` are injectable for tests. Raises ValueError for fewer than two candidates or bad counts.
    """
    if len(candidates) < 2:
        raise ValueError(f"measure_choice needs at least two candidates, got {list(candidates)}")
    _check_counts(calls=calls, min_rounds=min_rounds, max_rounds=max_rounds)
    if max_rounds < min_rounds:
        raise ValueError(f"max_rounds ({max_rounds}) must be >= min_rounds ({min_rounds})")
    names = list(candidates)
    per_round: dict[str, list[float]] = {n: [] for n in names}
    stable, best = False, names[0]
    for r in range(max_rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            per_round[name].append(_time_block(candidates[name], warmup, calls, pause_s, timer, sleep))
        medians = {n: statistics.median(v) for n, v in per_round.items()}
        best = min(medians, key=medians.__getitem__)
        if r + 1 >= min_rounds:
            stable = all(
                medians[n] <= medians[best] * (1 + tie_margin)
                or all(b < o for b, o in zip(per_round[best][-min_rounds:], per_round[n][-min_rounds:]))
                for n in names
                if n != best
            )
            if stable:
                break
    medians = {n: statistics.median(v) for n, v in per_round.items()}
    ratios = {n: medians[n] / medians[best] for n in names}
    return MeasuredChoice(best, medians, ratios, len(per_round[best]), stable, per_round)


@dataclass(frozen=True)
class PairedRatio:
    """How much faster ``a`` is than ``b``, measured head to head in adjacent blocks.

    ``ratios``: per round, ``b``'s median call time / ``a``'s (above 1: ``a`` faster), the two blocks timed within
    a fraction of a second of each other, so a load burst that lasts longer than that hits both; ``median``,
    ``q1``, ``q3``: of those ratios; ``a_faster``: the rounds ``a`` won; ``p_value``: the two-sided sign test of
    "either is as likely to win a round" (rounds with equal times count for neither); ``verdict``: ``"faster"`` /
    ``"slower"`` (``a`` against ``b``) where that test rejects at ``alpha``, else ``"tie"``.
    """

    a: str
    b: str
    ratios: list[float]
    median: float
    q1: float
    q3: float
    a_faster: int
    p_value: float
    verdict: str

    @classmethod
    def from_ratios(cls, a: str, b: str, ratios: list[float], alpha: float = 0.05) -> PairedRatio:
        """The summary of per-round ratios (``b``'s time / ``a``'s) measured by any means; ValueError if none."""
        if not ratios:
            raise ValueError("ratios must hold at least one round, got none")
        n = len(ratios)
        q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if n > 1 else ratios * 3
        wins, losses = sum(r > 1 for r in ratios), sum(r < 1 for r in ratios)  # an exact tie counts for neither
        p = sign_test(wins, wins + losses) if wins + losses else 1.0
        verdict = "tie" if p >= alpha else ("faster" if wins > losses else "slower")
        return cls(a, b, list(ratios), median, q1, q3, wins, p, verdict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratios"] = [round(r, 4) for r in self.ratios]
        return d


def sign_test(wins: int, n: int) -> float:
    """Two-sided exact binomial p-value of ``wins`` out of ``n`` rounds when each side wins a round with p = 1/2."""
    if not 0 <= wins <= n or n < 1:
        raise ValueError(f"wins must be in [0, n] with n >= 1, got wins={wins}, n={n}")
    k = min(wins, n - wins)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def measure_pair(
    a: tuple[str, Callable[[], object]],
    b: tuple[str, Callable[[], object]],
    *,
    rounds: int = 40,
    calls: int = 10,
    warmup: int = 1,
    pause_s: float = 0.1,
    alpha: float = 0.05,
    timer: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> PairedRatio:
    """Time two candidates (name, call) head to head: ``rounds`` rounds of a block each, in alternating order.

    Each block is ``warmup`` untimed calls then ``calls`` timed ones (their median is the block's time), followed by
    ``pause_s`` of sleep (ONNX Runtime's idle threads spin for about 50 ms after a block by default: the pause keeps
    them off the other candidate's block). On a shared machine whose load changes from second to second (per-round
    medians of one candidate ranging 1.5-2x), the ratio of adjacent blocks is far steadier than either time: this is
    the measurement for "is ``a`` faster than ``b``", where :func:`measure_choice` picks among many. Raises ValueError
    for bad counts or ``alpha`` outside (0, 1).
    """
    _check_counts(rounds=rounds, calls=calls)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if a[0] == b[0]:
        raise ValueError(f"the two candidates need different names, got {a[0]!r} twice")
    ratios = []
    for r in range(rounds):
        block = {}
        for name, fn in (a, b) if r % 2 == 0 else (b, a):
            block[name] = _time_block(fn, warmup, calls, pause_s, timer, sleep)
        ratios.append(block[b[0]] / block[a[0]])
    return PairedRatio.from_ratios(a[0], b[0], ratios, alpha)


# ---------------------------------------------------------------- the cache of measured decisions


def cache_dir() -> Path:
    """``$MOBILEZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/mobilezoo``, else ``~/.cache/mobilezoo``."""
    if os.environ.get("MOBILEZOO_CACHE_DIR"):
        return Path(os.environ["MOBILEZOO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mobilezoo"


def _cache_file() -> Path:
    return cache_dir() / "policies.json"


def _bad_cache(path: Path, why: str) -> ValueError:
    return ValueError(f"policy cache {str(path)!r} {why}; delete it and run `mobilezoo tune`")


def _read_cache() -> dict[str, Any]:
    path = _cache_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise _bad_cache(path, f"is unreadable ({e})") from None
    if not isinstance(data, dict):
        raise _bad_cache(path, "is not a JSON object")
    return data


def _write_cache(data: dict[str, Any]) -> Path:
    path = _cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".policies-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cached(section: str, item: str, key: str | None = None) -> Any:
    """The value stored under ``section``/``item`` for this machine (``key``: its machine key), or None."""
    return _read_cache().get(key or machine_key(), {}).get(section, {}).get(item)


def store(section: str, item: str, value: Any, key: str | None = None) -> Path:
    """Store a JSON-serialisable ``value`` under ``section``/``item`` for this machine (atomically); returns the file."""
    data = _read_cache()
    entry = data.setdefault(key or machine_key(), {"cpu": cpu_info().to_dict()})
    entry.setdefault(section, {})[item] = value
    return _write_cache(data)


def measured_decisions(key: str | None = None) -> dict[str, Decision]:
    """The decisions measured on this machine (``key``: :func:`~mobilezoo.machine.machine_key`), by policy name."""
    entry = _read_cache().get(key or machine_key(), {})
    try:
        return {name: Decision(**d) for name, d in entry.get("decisions", {}).items()}
    except TypeError:  # written by another version of mobilezoo
        raise _bad_cache(_cache_file(), "holds decisions this version cannot read") from None


def save_decisions(decisions: list[Decision], key: str | None = None) -> Path:
    """Add measured ``decisions`` to the cache under this machine's key (atomically); returns the cache file."""
    path = _cache_file()
    for d in decisions:
        path = store("decisions", d.policy, d.to_dict(), key)
    return path


# ---------------------------------------------------------------- the policies


def ort_spin(threads: int | None = None, measured: Mapping[str, Decision] | None = None) -> Decision:
    """ONNX Runtime's thread spinning for a deployed session with ``threads`` intra-op threads (None: all cores).

    One of :data:`SPIN_MODES`. Measured by ``mobilezoo tune`` per thread count (each mode alone, in blocks). Unmeasured: ``during-run``, which spins while a run
    is in progress and stops when it returns. On an Intel Xeon (AVX-512, VNNI, AMX; 2 threads, batch 1) it was within
    10% of always spinning alone and 1.35-1.5x faster than no spinning (MobileNetV3-Small 1.42 / 1.29 / 2.09 ms,
    MobileNetV2 3.46 / 3.41 / 4.67 ms for during-run / always / off), and unlike ``always`` it leaves idle cores to
    whatever runs next. On an AMD EPYC (AVX2) spinning was worth 1%.
    """
    measured = measured_decisions() if measured is None else measured
    name = spin_policy_name(threads)
    if name in measured:
        return measured[name]
    return Decision(name, "during-run", "default", "not measured on this machine (`mobilezoo tune`); "
                    "during-run is within 10% of the fastest mode on both CPU kinds measured and fair to other work")  # fmt: skip


def spin_policy_name(threads: int | None) -> str:
    """``ort_spin/threads=N``: spinning pays differently with another number of threads per core."""
    return f"ort_spin/threads={threads or os.cpu_count() or 1}"


def int8_weight_bits(cpu: CpuInfo | None = None) -> Decision:
    """The int8 weight range for ONNX Runtime's quantizer: 8 bits with an int8 dot product, else 7 (``reduce_range``).

    Without VNNI, uint8 x int8 products are summed in pairs into int16 (``vpmaddubsw``), which saturates with 8-bit
    weights: on an AMD EPYC (AVX2) 8-bit weights cost ShuffleNet V2 4.1 points of top-1 on the built-in digits and
    ShuffleNet V1 8.3. VNNI and AMX sum into int32 and cannot saturate, so the full range is kept.
    """
    cpu = cpu or cpu_info()
    if cpu.int8_dot:
        return Decision("int8_weight_bits", 8, "cpu-features", f"{cpu.int8_dot}: int8 products summed in int32")
    return Decision("int8_weight_bits", 7, "cpu-features",
                    "no VNNI/AMX: vpmaddubsw sums pairs of products in int16, which 8-bit weights saturate")  # fmt: skip


# MobileNetV3's float stem was measured faster in int8 ONNX Runtime on both CPU kinds: AMD EPYC (AVX2) int8/fp32
# 1.11-1.18 with it against 1.00-1.04 without (V3-Small, batch 1); Intel Xeon (AMX) 1.14x (mobilezoo tune). On that
# Xeon OpenVINO ran the all-int8 graph 1.04x faster: `mobilezoo tune` measures it per runtime.
STEM_FLOAT_BY_DEFAULT = ("MobileNetV3",)


def float_stem(architecture: str | None, runtime: str = "onnxruntime",
               measured: Mapping[str, Decision] | None = None) -> Decision:  # fmt: skip
    """Whether ``quantize`` keeps ``architecture``'s stem in float for ``runtime`` (True/False).

    Measured by ``mobilezoo tune`` per runtime; unmeasured, True for :data:`STEM_FLOAT_BY_DEFAULT` (MobileNetV3).
    """
    measured = measured_decisions() if measured is None else measured
    name = f"float_stem/{runtime}/{architecture}"
    if name in measured:
        return measured[name]
    on = architecture in STEM_FLOAT_BY_DEFAULT
    if not on:
        why = "no float stem defined or measured for it"
    elif runtime == "onnxruntime":
        why = "measured faster with ONNX Runtime on an AMD EPYC and an Intel Xeon"
    else:
        why = f"measured faster with ONNX Runtime; with {runtime} it was 1.04x slower on an Intel Xeon"
    return Decision(name, on, "default", f"not measured on this machine (`mobilezoo tune`); {why}")


def current(threads: int | None = None, architectures: tuple[str, ...] = STEM_FLOAT_BY_DEFAULT) -> list[Decision]:
    """Every policy's decision on this machine, spinning for ``threads`` (what ``mobilezoo tune --show`` prints)."""
    measured = measured_decisions()
    out = [ort_spin(threads, measured), int8_weight_bits()]
    out += [float_stem(a, rt, measured) for a in architectures for rt in ("onnxruntime", "openvino")]
    return out
