"""The UI's SVG geometry: intervals on one axis, score sparklines."""

from __future__ import annotations

import pytest

from kaizen_server.ui.charts import interval_chart, sparkline

pytestmark = pytest.mark.unit


def test_an_interval_chart_spans_zero_and_the_values_padded() -> None:
    chart = interval_chart([("d", 0.125, 0.05, 0.2), ("none", None, None, None)])
    assert (round(chart.low, 3), round(chart.high, 3)) == (-0.016, 0.216)
    first, missing = chart.rows
    assert (first.x_lower, first.x, first.x_upper) == (240.5, 343.3, 446.1)
    assert first.text == "+0.125 [0.050, 0.200]"
    assert chart.x_zero == 171.9
    assert (missing.x, missing.text) == (None, "no data")


def test_fixed_bounds_clamp_and_a_flat_axis_is_widened() -> None:
    chart = interval_chart([("a", 1.5, None, None)], low=0.0, high=1.0)
    assert chart.rows[0].x == chart.right  # clamped to the axis
    assert chart.rows[0].text == "1.500"
    flat = interval_chart([("a", 0.0, 0.0, 0.0)])
    assert flat.high - flat.low > 1.0


def test_a_sparkline_needs_two_scores_and_maps_one_to_the_top() -> None:
    assert sparkline([]) == "" and sparkline([0.5]) == ""
    assert sparkline([0.0, 1.0, 0.5]) == "1.0,23.0 60.0,1.0 119.0,12.0"
