"""Number formatting shared by the CLI tables and the report, so both print the same figures the same way."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """``-`` for None, thousands separators for ints, ``digits`` decimals for floats, ``str`` otherwise."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
