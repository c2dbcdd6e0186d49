"""``mobilezoo.select`` on this machine: the pick for a few batch-1 latency budgets, how many candidates it measured,
and the wall time of the search cold (an empty cache) and asked again (from the cache).

    .venv/bin/python benchmarks/model_selection.py                 # 5 and 20 ms budgets: results/select.json
    .venv/bin/python benchmarks/model_selection.py --budgets 2 5 10 20 --int8

Each budget's cold search runs with ``MOBILEZOO_CACHE_DIR`` pointing at a new empty folder, so nothing measured before
is used (the candidates' counts are cached there too: the cold time includes counting every candidate once).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets", type=float, nargs="+", default=[5.0, 20.0], help="ms per image at batch 1")
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "select.json"))
    args = ap.parse_args()
    from mobilezoo.benchmark.environment import environment
    from mobilezoo.machine import cpu_info
    from mobilezoo.selection import Budget, candidates, select

    runs = []
    for ms in args.budgets:
        os.environ["MOBILEZOO_CACHE_DIR"] = tempfile.mkdtemp(prefix="mobilezoo-select-")  # cold: nothing cached
        for attempt in ("cold", "cached"):
            t0 = time.perf_counter()
            s = select(Budget(latency_ms=ms), candidates_=candidates(), int8=args.int8,
                       progress=lambda m: print(f"  {m}", file=sys.stderr))  # fmt: skip
            wall = time.perf_counter() - t0
            print(f"{ms:g} ms {attempt}: {s.message} | measured {s.n_measured} of {s.n_candidates} "
                  f"({s.n_cached} cached) in {wall:.1f} s", file=sys.stderr)  # fmt: skip
            runs.append({"budget_ms": ms, "attempt": attempt, "wall_s": round(wall, 2), **s.to_dict()})
    data = {
        "environment": {**environment(), "cpu_summary": cpu_info().summary(), "cpu_features": cpu_info().to_dict()},
        "note": "cold: an empty cache; cached: the same question asked again in the same process",
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(data, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
