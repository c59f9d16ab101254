"""Geometry of the dashboard's SVG charts; the templates draw them.

Templates cannot do arithmetic, so the coordinates are computed here from the figures
`jobcenter.queries.dashboard` selects. No JavaScript and no chart library: the SVG is plain
markup with a <title>, a <desc> and a data table beside it for screen readers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from jobcenter.queries.dashboard import DayCount, KindFailureRate, ProviderStatusRow


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten that is >= value (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    steps = (1, 2, 2.5, 5, 10) if power >= 10 else (1, 2, 5, 10)
    for step in steps:
        if step * power >= value:
            return int(step * power)
    return 10 * power


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: str
    title: str


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class DailyChart:
    width: int
    height: int
    plot_left: int
    plot_top: int
    plot_right: int
    plot_bottom: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total_created: int
    total_failed: int
    busiest: DayCount | None


def daily_chart(days: Sequence[DayCount], width: int = 720, height: int = 240) -> DailyChart:
    """Grouped bars per day: jobs created (solid) beside jobs failed (hatched)."""
    left, top, right, bottom = 48, 12, width - 8, height - 28
    top_value = nice_ceiling(max([d.created for d in days] + [d.failed for d in days] + [1]))
    group = (right - left) / max(1, len(days))
    bar = max(1.0, group * 0.38)

    def y_of(value: int) -> float:
        return bottom - (bottom - top) * value / top_value

    bars: list[Bar] = []
    for i, day in enumerate(days):
        x = left + i * group + group * 0.1
        label = day.day.strftime("%a %d %b")
        for offset, series, value, word in (
            (0.0, "created", day.created, "created"),
            (bar, "failed", day.failed, "failed or partly failed"),
        ):
            y = y_of(value)
            bars.append(
                Bar(
                    round(x + offset, 2),
                    round(y, 2),
                    round(bar, 2),
                    round(bottom - y, 2),
                    series,
                    f"{label}: {value:,} {word}",
                )
            )
    parts = 5 if top_value % 5 == 0 and top_value >= 5 else 2 if top_value % 2 == 0 else 1
    y_ticks = [
        Tick(round(y_of(top_value * k // parts), 2), f"{top_value * k // parts:,}")
        for k in range(parts + 1)
    ]
    x_ticks = [
        Tick(round(left + i * group + group / 2, 2), day.day.strftime("%d %b"))
        for i, day in enumerate(days)
        if (len(days) - 1 - i) % 7 == 0
    ]
    busiest = max(days, key=lambda d: d.created) if days and any(d.created for d in days) else None
    return DailyChart(
        width=width,
        height=height,
        plot_left=left,
        plot_top=top,
        plot_right=right,
        plot_bottom=bottom,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        total_created=sum(d.created for d in days),
        total_failed=sum(d.failed for d in days),
        busiest=busiest,
    )


@dataclass(frozen=True)
class RateRow:
    y: float
    width: float
    label: str
    value_text: str
    rate: KindFailureRate


@dataclass(frozen=True)
class RateChart:
    width: int
    height: int
    label_width: int
    bar_left: int
    bar_max: int
    row_height: int
    rows: list[RateRow]


def failure_rate_chart(
    rates: Sequence[KindFailureRate], width: int = 720, row_height: int = 24
) -> RateChart:
    """Horizontal bars, one per kind, each with its percentage and counts in words."""
    label_width = 300
    bar_left = label_width + 8
    bar_max = width - bar_left - 170
    rows = [
        RateRow(
            y=i * row_height,
            width=round(bar_max * r.rate, 2),
            label=r.kind,
            value_text=f"{r.rate:.0%} ({r.failed:,} of {r.ended:,})",
            rate=r,
        )
        for i, r in enumerate(rates)
    ]
    return RateChart(
        width=width,
        height=max(row_height, row_height * len(rows)),
        label_width=label_width,
        bar_left=bar_left,
        bar_max=bar_max,
        row_height=row_height,
        rows=rows,
    )


@dataclass(frozen=True)
class Segment:
    x: float
    width: float
    status: str
    title: str


def status_strip(row: ProviderStatusRow, width: int = 240) -> list[Segment]:
    """One provider's jobs as a stacked strip, a segment per status with a count."""
    total = row.total
    if not total:
        return []
    segments, x = [], 0.0
    for status, count in row.counts:
        if not count:
            continue
        w = width * count / total
        segments.append(
            Segment(round(x, 2), round(w, 2), status, f"{count:,} {status.replace('_', ' ')}")
        )
        x += w
    return segments
