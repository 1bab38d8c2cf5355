"""Server-made SVG charts of the web UI: intervals on one axis, as plain geometry.

`interval_chart` turns labelled (estimate, lower, upper) rows into coordinates that the
``_chart.html`` template draws as SVG (no script, no chart library): one row per interval, a
dot at the estimate, a bar from lower to upper, and a line at zero when zero is in range.
`time_chart` lays out series of values over time (a line through the points, a whisker for a
point's interval, an optional horizontal rule such as a test's decision boundary).
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone
from typing import Any

from kaizen_sdk.models import Rollout

__all__ = [
    "Chart", "ChartRow", "RolloutHistory", "TimeChart", "TimePoint", "TimeSeries",
    "interval_chart", "mean_over_time", "rollout_history", "sparkline", "time_chart",
]

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


_T_LEFT = 46
_T_TOP = 10
_T_HEIGHT = 170
_T_BOTTOM = 20


@dataclasses.dataclass(frozen=True)
class TimePoint:
    """One drawn point: its coordinates, its interval's y ends (``None``: none), its text."""

    x: float
    y: float
    y_lower: float | None
    y_upper: float | None
    text: str


@dataclasses.dataclass(frozen=True)
class TimeSeries:
    """One line of a time chart: its label, colour, the polyline's ``points`` and the points."""

    label: str
    color: str
    polyline: str
    points: list[TimePoint]


@dataclasses.dataclass(frozen=True)
class TimeChart:
    """An SVG chart of series over time: size, plot box, value range, series, the times at the
    axis ends, and an optional horizontal rule (its y and label)."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    low: float
    high: float
    series: list[TimeSeries]
    start: str
    end: str
    rule_y: float | None
    rule_label: str


_COLORS = ("#2b6cb0", "#c05621", "#2f855a")


def time_chart(
    series: list[tuple[str, list[tuple[datetime, float, float | None, float | None]]]],
    *,
    low: float | None = None,
    high: float | None = None,
    rule: float | None = None,
    rule_label: str = "",
    digits: int = 3,
) -> TimeChart:
    """Lay out *series* of ``(label, [(at, value, lower, upper), ...])`` over time.

    x is proportional to time from the earliest to the latest point (evenly spaced when they
    share one instant); y spans *low* to *high* when given, else the values, intervals and
    *rule*, padded. Values outside the range are drawn at its edge (their text is exact).
    """
    every = [pt for _, points in series for pt in points]
    values = [v for pt in every for v in pt[1:] if v is not None]
    if rule is not None:
        values.append(rule)
    lo = low if low is not None else min(values, default=0.0)
    hi = high if high is not None else max(values, default=1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    if low is None or high is None:
        pad = (hi - lo) * 0.08
        lo, hi = (lo - pad if low is None else lo), (hi + pad if high is None else hi)
    left, right = _T_LEFT, _WIDTH - _PAD
    top, bottom = _T_TOP, _T_TOP + _T_HEIGHT
    times = sorted({pt[0] for pt in every})
    span = (times[-1] - times[0]).total_seconds() if times else 0.0

    def x_of(at: datetime, index: int, count: int) -> float:
        if span > 0:
            share = (at - times[0]).total_seconds() / span
        else:
            share = index / (count - 1) if count > 1 else 0.5
        return round(left + share * (right - left), 1)

    def y_of(value: float | None) -> float | None:
        if value is None:
            return None
        clamped = min(max(value, lo), hi)
        return round(bottom - (clamped - lo) / (hi - lo) * (bottom - top), 1)

    drawn: list[TimeSeries] = []
    for number, (label, points) in enumerate(series):
        laid: list[TimePoint] = []
        for index, (at, value, lower, upper) in enumerate(points):
            text = f"{at:%Y-%m-%d %H:%M:%S} {value:.{digits}f}"
            if lower is not None and upper is not None:
                text += f" [{lower:.{digits}f}, {upper:.{digits}f}]"
            y = y_of(value)
            assert y is not None
            laid.append(TimePoint(x_of(at, index, len(points)), y, y_of(lower), y_of(upper), text))
        drawn.append(TimeSeries(label, _COLORS[number % len(_COLORS)],
                                " ".join(f"{p.x},{p.y}" for p in laid), laid))
    return TimeChart(
        _WIDTH, bottom + _T_BOTTOM, left, right, top, bottom, lo, hi, drawn,
        f"{times[0]:%H:%M:%S}" if times else "", f"{times[-1]:%H:%M:%S}" if times else "",
        y_of(rule), rule_label,
    )


@dataclasses.dataclass(frozen=True)
class RolloutHistory:
    """A rollout's figures over time: arm means, the difference with its always-valid
    interval, and the sequential test's evidence against its decision boundary."""

    means: TimeChart
    difference: TimeChart
    evidence: TimeChart
    points: int


_Point = tuple[datetime, float, float | None, float | None]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _evidence(p_value: float) -> float:
    """The mixture SPRT's log likelihood ratio recovered from its p-value (p = 1/LR, capped at
    1: a ratio below one reads as zero)."""
    return -math.log(max(p_value, 1e-300))


def rollout_history(rollout: Rollout, *, now: datetime | None = None) -> RolloutHistory:
    """The charts of *rollout* over time, from the statistics its events carry (ramp steps,
    recommendations, decisions: ``stats`` with each arm's n and mean, the difference, its
    always-valid interval and the p-value) and, while it runs, its live figures *now*.

    The events carry no per-arm interval, so only the live point's arm means have one; a stop
    by request logs the arm means and p-value only, so its difference has no interval.
    """
    arms: dict[str, list[_Point]] = {"active": [], "candidate": []}
    diff: list[_Point] = []
    evidence: list[_Point] = []
    for event in rollout.audit:
        stats = event.stats or {}
        if event.at is None:
            continue
        means: dict[str, float] = {}
        for arm, points in arms.items():
            figures = stats.get(arm)
            if not isinstance(figures, dict):
                continue
            mean = _number(figures.get("mean"))
            if mean is not None and figures.get("n"):
                points.append((event.at, mean, None, None))
                means[arm] = mean
        estimate = _number(stats.get("difference"))
        if estimate is None and len(means) == 2:  # a stop by request logs the means only
            diff.append((event.at, means["candidate"] - means["active"], None, None))
        elif estimate is not None:
            diff.append((event.at, estimate, _number(stats.get("lower")),
                         _number(stats.get("upper"))))
        p_value = _number(stats.get("p_value"))
        if p_value is not None:
            evidence.append((event.at, _evidence(p_value), None, None))
    if rollout.state == "running":
        at = now or datetime.now(timezone.utc)
        last = next((e.at for e in reversed(rollout.audit) if e.at is not None), None)
        if last is not None and last.tzinfo is None:
            at = at.astimezone(timezone.utc).replace(tzinfo=None)
        if last is not None and at < last:
            at = last
        for arm, figures in (("active", rollout.active), ("candidate", rollout.candidate)):
            if figures.mean is not None and figures.n:
                arms[arm].append((at, figures.mean, figures.lower, figures.upper))
        d = rollout.difference
        if d.estimate is not None and d.lower is not None:
            diff.append((at, d.estimate, d.lower, d.upper))
        if rollout.active.n >= 2 and rollout.candidate.n >= 2:
            evidence.append((at, _evidence(d.p_value), None, None))
    boundary = -math.log(rollout.alpha) if rollout.alpha else None
    top = max([boundary or 1.0, *(v for _, v, _, _ in evidence)])
    if boundary is not None:
        top = min(top, 3 * boundary)
    return RolloutHistory(
        means=time_chart([("active", arms["active"]), ("candidate", arms["candidate"])],
                         low=0.0, high=1.0),
        difference=time_chart([("candidate minus active", diff)], rule=0.0,
                              rule_label="zero: no difference"),
        evidence=time_chart(
            [("evidence ln(1/p)", evidence)], low=0.0, high=top * 1.08, rule=boundary,
            rule_label="" if boundary is None else
            f"decision boundary ln(1/alpha) = {boundary:.2f} (alpha = {rollout.alpha})", digits=2),
        points=len(arms["active"]) + len(arms["candidate"]) + len(diff) + len(evidence),
    )


def mean_over_time(
    scores: list[tuple[datetime, float]], *, groups: int
) -> list[tuple[datetime, float]]:
    """The mean of *scores* (``(at, score)``, oldest first) in at most *groups* consecutive
    groups of equal size (the last may be smaller): ``(the group's newest time, its mean)``."""
    if not scores or groups < 1:
        return []
    size = math.ceil(len(scores) / groups)
    chunks = [scores[i:i + size] for i in range(0, len(scores), size)]
    return [(chunk[-1][0], sum(v for _, v in chunk) / len(chunk)) for chunk in chunks]
