"""Model selection: the most accurate (model, width, resolution, backend) that meets a budget on this machine.

``select(Budget(latency_ms=5))`` walks the candidates with a published top-1 (:func:`candidates`), most accurate first,
measures as few as it can and returns a :class:`Selection` (the pick, the runner-up per family, the Pareto frontier,
what was skipped and why). ``mobilezoo select`` is its CLI.
"""

from mobilezoo.selection.candidates import Candidate, candidates
from mobilezoo.selection.search import Budget, Choice, Measurement, Selection, measure_candidate, select

__all__ = ["Budget", "Candidate", "Choice", "Measurement", "Selection", "candidates", "measure_candidate", "select"]
