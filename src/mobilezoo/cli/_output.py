"""Shared output helpers for the subcommands: rich tables and JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from mobilezoo.formatting import fmt

# writes to whatever sys.stdout is at print time; piped output gets a wide console so tables are not truncated
console = Console(width=None if sys.stdout.isatty() else 200)


def print_table(rows: Sequence[Sequence[Any]], columns: Sequence[str], title: str | None = None) -> None:
    table = Table(title=title, header_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    console.print(table)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
