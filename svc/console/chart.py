"""The money page's bar chart, drawn as inline SVG by its template: the geometry here."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from svc.models.operator import DayOfMoney

WIDTH = 600
HEIGHT = 160
GAP = 2


@dataclass(frozen=True, slots=True)
class Bar:
    day: date
    pence: int
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    top_pence: int
    bars: list[Bar]


def bar_chart(days: Sequence[DayOfMoney]) -> Chart:
    """One bar per day of the pence taken, the tallest day as high as the chart."""
    top = max((day.taken_pence for day in days), default=0)
    step = WIDTH // max(len(days), 1)
    bars = []
    for n, day in enumerate(days):
        # Integer arithmetic on pence: a day with any money shows at least a sliver.
        height = (
            0 if top == 0 else max(1 if day.taken_pence else 0, day.taken_pence * HEIGHT // top)
        )
        bars.append(Bar(day.day, day.taken_pence, n * step, HEIGHT - height, step - GAP, height))
    return Chart(WIDTH, HEIGHT, top, bars)
