"""The operator's money figures: today, 7 and 30 days from the days' rows, and the bar
chart's geometry."""

from datetime import date, timedelta

from svc.console.chart import HEIGHT, bar_chart
from svc.models.operator import DayOfMoney
from svc.money import PERIODS, _period, every_day

TODAY = date(2026, 11, 30)


def test_days_without_sessions_are_zeros_and_the_periods_sum_their_days() -> None:
    rows = [
        DayOfMoney(TODAY, 2, 1260, 526, 0),
        DayOfMoney(TODAY - timedelta(days=3), 1, 600, 0, 250),
        DayOfMoney(TODAY - timedelta(days=20), 4, 7200, 1800, 0),
    ]
    first = TODAY - timedelta(days=29)
    days = every_day(rows, first=first, count=30)
    assert [day.day for day in days] == [first + timedelta(days=n) for n in range(30)]
    assert days[-1] == rows[0]
    assert days[-2] == DayOfMoney(TODAY - timedelta(days=1), 0, 0, 0, 0)
    periods = [_period(label, days[-count:]) for label, count in PERIODS]
    assert [(p.label, p.sessions, p.minutes, p.taken_pence, p.owed_pence) for p in periods] == [
        ("today", 2, 21, 526, 0),
        ("7 days", 3, 31, 526, 250),
        ("30 days", 7, 151, 2326, 250),
    ]


def test_the_tallest_day_fills_the_chart_and_a_penny_still_shows() -> None:
    days = [
        DayOfMoney(TODAY - timedelta(days=2), 1, 60, 1, 0),
        DayOfMoney(TODAY - timedelta(days=1), 0, 0, 0, 0),
        DayOfMoney(TODAY, 3, 600, 1000, 0),
    ]
    chart = bar_chart(days)
    assert chart.top_pence == 1000
    assert [(bar.pence, bar.height, bar.y) for bar in chart.bars] == [
        (1, 1, HEIGHT - 1),
        (0, 0, HEIGHT),
        (1000, HEIGHT, 0),
    ]
    assert [bar.x for bar in chart.bars] == [0, 200, 400]


def test_a_month_without_money_draws_no_bar() -> None:
    chart = bar_chart([DayOfMoney(TODAY, 0, 0, 0, 0)])
    assert (chart.top_pence, chart.bars[0].height) == (0, 0)


def test_refunds_count_on_the_day_they_were_made_and_the_net_is_taken_less_refunded() -> None:
    rows = [
        DayOfMoney(TODAY, 1, 600, 300, 0),
        DayOfMoney(TODAY - timedelta(days=20), 2, 1200, 1000, 0),
    ]
    refunds = {TODAY: 150, TODAY - timedelta(days=5): 400, TODAY - timedelta(days=40): 999}
    first = TODAY - timedelta(days=29)
    days = every_day(rows, first=first, count=30, refunds=refunds)
    assert days[-1] == DayOfMoney(TODAY, 1, 600, 300, 0, refunded_pence=150)
    assert days[-6] == DayOfMoney(TODAY - timedelta(days=5), 0, 0, 0, 0, refunded_pence=400)
    periods = [_period(label, days[-count:]) for label, count in PERIODS]
    assert [(p.label, p.taken_pence, p.refunded_pence, p.net_pence) for p in periods] == [
        ("today", 300, 150, 150),
        ("7 days", 300, 550, -250),
        ("30 days", 1300, 550, 750),
    ]
