"""What a report measures: the models, backends, iteration counts and width/resolution sweeps, as one typed config.

Presets: :meth:`ReportConfig.quick` (``make demo``: one model per family, eager + ONNX Runtime (+int8), the MobileNet
V1 multipliers of the paper's Tables 6 and 7; a few minutes on two cores) and :meth:`ReportConfig.full` (every
registered model, every available backend, a width and a resolution sweep per family).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

SWEEP_KINDS = ("width", "resolution")


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: the multiplier (width alpha, or resolution rho = pixels / 224) and how to build it."""

    multiplier: float
    model: str
    resolution: int = 224
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    """A family's width-alpha or resolution-rho sweep (MobileNets §3.3-3.4: MAdds scale with alpha^2 and rho^2)."""

    family: str
    kind: str  # "width" or "resolution"
    points: tuple[SweepPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "kind": self.kind, "points": [asdict(p) for p in self.points]}


def width_sweep(family: str, models: dict[float, str | tuple[str, dict[str, Any]]]) -> SweepSpec:
    """``{alpha: registered name}`` (or ``{alpha: (name, builder kwargs)}``) at 224 px."""
    points = []
    for alpha, m in sorted(models.items()):
        name, kwargs = (m, {}) if isinstance(m, str) else m
        points.append(SweepPoint(alpha, name, 224, dict(kwargs)))
    return SweepSpec(family, "width", tuple(points))


def resolution_sweep(family: str, model: str, resolutions: tuple[int, ...]) -> SweepSpec:
    """One model at several input sizes; rho = resolution / 224."""
    return SweepSpec(family, "resolution", tuple(SweepPoint(r / 224, model, r) for r in sorted(resolutions)))


_RES = (128, 160, 192, 224)
_V1_WIDTHS = {0.25: "mobilenet_v1_x0_25", 0.5: "mobilenet_v1_x0_5", 0.75: "mobilenet_v1_x0_75", 1.0: "mobilenet_v1"}
QUICK_SWEEPS = (width_sweep("MobileNetV1", _V1_WIDTHS), resolution_sweep("MobileNetV1", "mobilenet_v1", _RES))
FULL_SWEEPS = (
    *QUICK_SWEEPS,
    width_sweep(
        "MobileNetV2",
        {
            0.35: "mobilenet_v2_x0_35",
            0.5: "mobilenet_v2_x0_5",
            0.75: "mobilenet_v2_x0_75",
            1.0: "mobilenet_v2",
            1.3: "mobilenet_v2_x1_3",
            1.4: "mobilenet_v2_x1_4",
        },
    ),
    resolution_sweep("MobileNetV2", "mobilenet_v2", (96, *_RES)),
    width_sweep(
        "MobileNetV3-Large",
        {a: ("mobilenet_v3_large", {"width_mult": a}) for a in (0.35, 0.5, 0.75, 1.0, 1.25)},
    ),
    resolution_sweep("MobileNetV3-Large", "mobilenet_v3_large", _RES),
    width_sweep(
        "ShuffleNetV1 (g=3)",
        {
            0.5: "shufflenet_v1_g3_x0_5",
            1.0: "shufflenet_v1_g3_x1_0",
            1.5: "shufflenet_v1_g3_x1_5",
            2.0: "shufflenet_v1_g3_x2_0",
        },
    ),
    resolution_sweep("ShuffleNetV1 (g=3)", "shufflenet_v1_g3_x1_0", _RES),
    width_sweep(
        "ShuffleNetV2",
        {0.5: "shufflenet_v2_x0_5", 1.0: "shufflenet_v2_x1_0", 1.5: "shufflenet_v2_x1_5", 2.0: "shufflenet_v2_x2_0"},
    ),
    resolution_sweep("ShuffleNetV2", "shufflenet_v2_x1_0", _RES),
)

# one model per family at roughly the 140-600M MAdds level of Table 5-10, plus V3-Small as the cheap end
QUICK_MODELS = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "shufflenet_v1_g3_x1_0",
    "shufflenet_v2_x1_0",
)
REFERENCE_MODELS = ("vgg16", "googlenet")  # Table 5-10's reference networks
# the rest of the chapter's timeline and the newer nets, counted (not timed) in the quick report's Pareto chart
TIMELINE_MODELS = ("squeezenet1_0", "nasnet_a_mobile", "mnasnet_a1_x1_0", "mnasnet_b1_x1_0", "mnasnet_small",
                   "ghostnet_x1_0", "efficientnet_lite0", "efficientnet_b0", "mobilenet_v4_conv_small")  # fmt: skip


@dataclass(frozen=True)
class ReportConfig:
    """Everything a report measures. ``complexity_only`` models get counted MAdds/params and paper top-1, no latency."""

    models: tuple[str, ...]
    complexity_only: tuple[str, ...] = ()
    backends: tuple[str, ...] = ("eager",)
    sweep_backends: tuple[str, ...] = ("eager",)
    sweeps: tuple[SweepSpec, ...] = ()
    tables: tuple[str, ...] | None = None  # textbook table ids; None: all of them
    batch_size: int = 1
    threads: int | None = None  # None: the CPUs this process may use
    warmup: int = 3
    iters: int = 15
    mode: str = "custom"
    budgets_ms: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0)  # the "best model per budget" table (latency per call)
    # Table 5-13: the committed results file (None: the repository's benchmarks/results/detection_table.json) and the
    # complexity levels whose detection speed (Light-Head R-CNN, 800x1200, batch 4) is re-measured in this run
    detection_results: str | None = None
    detection_speed_levels: tuple[str, ...] = ()
    detection_speed_iters: int = 3

    @classmethod
    def quick(cls) -> ReportConfig:
        """``make demo``: a few minutes on two cores, model building included (OpenVINO's fp32 and int8 paths when
        it is installed: on a CPU with AMX or VNNI they are the fastest)."""
        from mobilezoo.benchmark import available_backends

        openvino = tuple(b for b in ("openvino", "openvino-int8") if b in available_backends())
        return cls(
            models=QUICK_MODELS,
            complexity_only=(*REFERENCE_MODELS, *TIMELINE_MODELS),
            backends=("eager", "onnxruntime", "onnxruntime-int8", *openvino),
            sweep_backends=("eager",),
            sweeps=QUICK_SWEEPS,
            warmup=3,
            iters=15,
            mode="quick",
            detection_speed_levels=("40M",),
        )

    @classmethod
    def full(cls) -> ReportConfig:
        """Every registered model on every available backend, and a width and resolution sweep per family."""
        from mobilezoo.benchmark import available_backends
        from mobilezoo.registry import list_models

        return cls(
            models=tuple(list_models()),
            backends=available_backends(),
            sweep_backends=("eager", "onnxruntime"),
            sweeps=FULL_SWEEPS,
            warmup=5,
            iters=30,
            mode="full",
            detection_speed_levels=("40M", "140M", "300M", "500M"),
            detection_speed_iters=5,
        )

    def with_models(self, models: list[str] | tuple[str, ...]) -> ReportConfig:
        """The same settings for other models (the reference nets stay as complexity-only points unless measured)."""
        models = tuple(dict.fromkeys(models))
        return replace(self, models=models, complexity_only=tuple(m for m in self.complexity_only if m not in models))

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before anything is built or measured."""
        from mobilezoo.benchmark import BACKENDS, available_backends
        from mobilezoo.complexity.tables import table_ids
        from mobilezoo.registry import list_models

        known = set(list_models())
        if not self.models:
            raise ValueError("no models to report on; expected at least one registered name (see `mobilezoo list`)")
        names = [*self.models, *self.complexity_only, *(p.model for s in self.sweeps for p in s.points)]
        for name in names:
            if name not in known:
                from mobilezoo.registry import model_card

                model_card(name)  # raises "unknown model ... did you mean"
        for what, backends in (("backends", self.backends), ("sweep_backends", self.sweep_backends)):
            if not backends:
                raise ValueError(f"{what} is empty; expected some of {', '.join(BACKENDS)}")
            for b in backends:
                if b not in BACKENDS:
                    raise ValueError(f"unknown backend {b!r} in {what}; expected one of {', '.join(BACKENDS)}")
                if b not in available_backends():
                    raise ValueError(
                        f"backend {b!r} is not available here; available: {', '.join(available_backends())}"
                    )
        if self.tables is not None:
            bad = [t for t in self.tables if t not in table_ids()]
            if bad:
                raise ValueError(f"unknown table(s) {bad}; expected some of {table_ids()}")
        for s in self.sweeps:
            if s.kind not in SWEEP_KINDS:
                raise ValueError(f"sweep kind {s.kind!r} of {s.family}; expected one of {SWEEP_KINDS}")
            if len(s.points) < 2:
                raise ValueError(f"the {s.family} {s.kind} sweep has {len(s.points)} point(s); expected at least 2")
        from mobilezoo.detection.table import LEVELS

        for level in self.detection_speed_levels:
            if level not in LEVELS:
                raise ValueError(
                    f"unknown detection level {level!r} in detection_speed_levels; expected some of {LEVELS}"
                )
        for ms in self.budgets_ms:
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not ms > 0:
                raise ValueError(f"budgets_ms must hold positive numbers (ms), got {ms!r}")
        for what, value, low in (
            ("batch_size", self.batch_size, 1),
            ("warmup", self.warmup, 1),
            ("iters", self.iters, 1),
            ("detection_speed_iters", self.detection_speed_iters, 1),
            ("threads", self.threads if self.threads is not None else 1, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sweeps"] = [s.to_dict() for s in self.sweeps]
        return out
