"""What a task's calls cost, as ``kaizen tasks costs`` prints it: the window's totals, then one
row per prompt version (calls, priced calls, total and per call), newest version first.

`costs_report` formats a `TaskCosts` from the wire alone.
"""

from __future__ import annotations

from kaizen_sdk.models import TaskCosts

__all__ = ["costs_report", "usd"]


def usd(value: float | None) -> str:
    """US dollars with enough digits for a per-call cost (``-`` for none)."""
    if value is None:
        return "-"
    return f"${value:.6f}" if value < 1 else f"${value:,.2f}"


def costs_report(costs: TaskCosts, *, task: str) -> str:
    """The cost report of *task*: totals over the window and a per-version table."""
    days = f"{costs.days:g} day" + ("" if costs.days == 1 else "s")
    lines = [
        f"{task}: {usd(costs.cost_usd)} over the last {days}, {costs.calls} calls"
        f" ({costs.priced_calls} priced), {usd(costs.cost_per_call_usd)} per call",
    ]
    if not costs.complete:
        lines.append(f"(the newest {costs.scanned} traces only: older ones in the window were"
                     " not read)")
    if costs.calls > costs.priced_calls:
        lines.append(f"{costs.calls - costs.priced_calls} calls have no cost: their model is"
                     " not priced or they carry no tokens (see `kaizen status`)")
    if not costs.versions:
        return "\n".join(lines)
    rows = [("version", "calls", "priced", "total", "per call")] + [
        ("-" if v.version_number is None else f"v{v.version_number}", str(v.calls),
         str(v.priced_calls), usd(v.cost_usd), usd(v.cost_per_call_usd))
        for v in costs.versions
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    return "\n".join(lines)
