"""Complexity analysis: a profiler that states its conventions, the textbook's cost formulas, and its tables.

``profile`` counts params, multiply-adds, other ops, memory access cost and activation memory per layer;
``formulas`` holds the textbook's closed forms (standard vs depthwise-separable conv, width/resolution multipliers,
ShuffleNet V2's MAC); ``textbook_tables`` regenerates the textbook's Tables 5-2, 5-3, 5-10, 5-11 and 5-12,
``timeline`` its timeline of the family (Fig. 5-2) with the papers' figures and the counts.
"""

from mobilezoo.complexity import formulas
from mobilezoo.complexity.profiler import profile
from mobilezoo.complexity.results import CONVENTIONS, LayerProfile, Profile
from mobilezoo.complexity.tables import TableResult, TableRow, textbook_tables
from mobilezoo.complexity.timeline import Timeline, TimelineRow, timeline

__all__ = [
    "CONVENTIONS",
    "LayerProfile",
    "Profile",
    "TableResult",
    "TableRow",
    "Timeline",
    "TimelineRow",
    "formulas",
    "profile",
    "textbook_tables",
    "timeline",
]
