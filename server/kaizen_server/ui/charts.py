"""Server-made SVG charts of the web UI: intervals on one axis, as plain geometry.

`interval_chart` turns labelled (estimate, lower, upper) rows into coordinates that the
``_chart.html`` template draws as SVG (no script, no chart library): one row per interval, a
dot at the estimate, a bar from lower to upper, and a line at zero when zero is in range.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Chart", "ChartRow", "interval_chart", "sparkline"]

_WIDTH = 480
_LABEL = 150
_ROW = 26
_PAD = 12


@dataclasses.dataclass(frozen=True)
class ChartRow:
    """One drawn interval: its label, text, and x coordinates (``None``: not known)."""

    label: str
    text: str
    y: int
    x: float | None
    x_lower: float | None
    x_upper: float | None


@dataclasses.dataclass(frozen=True)
class Chart:
    """An SVG chart's size, rows, axis ends and the x of zero (``None``: not in range)."""

    width: int
    height: int
    rows: list[ChartRow]
    left: int
    right: int
    low: float
    high: float
    x_zero: float | None


def interval_chart(
    rows: list[tuple[str, float | None, float | None, float | None]],
    *,
    low: float | None = None,
    high: float | None = None,
) -> Chart:
    """Lay out *rows* of ``(label, estimate, lower, upper)`` on one axis.

    The axis spans *low* to *high* when given, else the rows' values and zero, padded.
    """
    values = [v for _, *vals in rows for v in vals if v is not None]
    lo = low if low is not None else min([0.0, *values])
    hi = high if high is not None else max([0.0, *values])
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    if low is None or high is None:
        pad = (hi - lo) * 0.08
        lo, hi = (lo - pad if low is None else lo), (hi + pad if high is None else hi)
    left, right = _LABEL, _WIDTH - _PAD

    def x_of(value: float | None) -> float | None:
        if value is None:
            return None
        clamped = min(max(value, lo), hi)
        return round(left + (clamped - lo) / (hi - lo) * (right - left), 1)

    drawn: list[ChartRow] = []
    for index, (label, estimate, lower, upper) in enumerate(rows):
        if estimate is None:
            text = "no data"
        else:
            text = f"{estimate:+.3f}" if lo < 0 else f"{estimate:.3f}"
        if lower is not None and upper is not None:
            text += f" [{lower:.3f}, {upper:.3f}]"
        drawn.append(ChartRow(label, text, _PAD + index * _ROW + _ROW // 2,
                              x_of(estimate), x_of(lower), x_of(upper)))
    height = _PAD * 2 + _ROW * max(1, len(rows)) + 14
    return Chart(_WIDTH, height, drawn, left, right, lo, hi, x_of(0.0) if lo <= 0 <= hi else None)


def sparkline(values: list[float], *, width: int = 120, height: int = 24) -> str:
    """The ``points`` of an SVG polyline of *values* (scores in [0, 1]), oldest first; empty
    with fewer than two values."""
    if len(values) < 2:
        return ""
    step = (width - 2) / (len(values) - 1)
    return " ".join(f"{1 + i * step:.1f},{1 + (1 - min(max(v, 0.0), 1.0)) * (height - 2):.1f}"
                    for i, v in enumerate(values))
