"""The comparison report (the textbook's Tables 5-10 to 5-13 and more, for real): ``mobilezoo report``.

:func:`build_report` recomputes the textbook's tables from the code (the same function as ``mobilezoo tables``), puts
the papers' figures beside them, measures each model's latency per backend on this machine, sweeps the MobileNet
width and resolution multipliers, and writes ``report.md``, a self-contained ``report.html``, ``report.json`` and the
PNG plots (Pareto charts of paper top-1 against MAdds and against latency, latency per backend, sweeps).
"""

from mobilezoo.report.build import Latency, ModelEntry, ReportData, ReportResult, SweepResult, SweepRow, build_report
from mobilezoo.report.config import ReportConfig, SweepPoint, SweepSpec, resolution_sweep, width_sweep
from mobilezoo.report.plots import pareto_frontier

__all__ = [
    "Latency",
    "ModelEntry",
    "ReportConfig",
    "ReportData",
    "ReportResult",
    "SweepPoint",
    "SweepResult",
    "SweepRow",
    "SweepSpec",
    "build_report",
    "pareto_frontier",
    "resolution_sweep",
    "width_sweep",
]
