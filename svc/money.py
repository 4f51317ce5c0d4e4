"""The money for the operator, in one place: today, the last 7 and 30 days, and the last
30 days one by one (the console's bar chart). A new figure (refunds) is one more field of
`DayOfMoney` and `Period`, summed in `_period`."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from svc.database_accessor import Database
from svc.env import Settings
from svc.models.operator import DayOfMoney

PERIODS = (("today", 1), ("7 days", 7), ("30 days", 30))
CHART_DAYS = 30


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    sessions: int
    seconds: int
    taken_pence: int
    owed_pence: int

    @property
    def minutes(self) -> int:
        return self.seconds // 60


@dataclass(frozen=True, slots=True)
class MoneySummary:
    currency: str
    periods: list[Period]
    days: list[DayOfMoney]
    """The last CHART_DAYS days, oldest first, today last; a day without sessions is zeros."""


async def money_summary(db: Database, settings: Settings, *, now: datetime) -> MoneySummary:
    today = now.astimezone(settings.timezone).date()
    first = today - timedelta(days=CHART_DAYS - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=settings.timezone)
    rows = await db.money_by_day(since=since, timezone=settings.TIMEZONE)
    days = every_day(rows, first=first, count=CHART_DAYS)
    periods = [_period(label, days[-count:]) for label, count in PERIODS]
    return MoneySummary(currency=settings.CURRENCY, periods=periods, days=days)


def every_day(rows: Sequence[DayOfMoney], *, first: date, count: int) -> list[DayOfMoney]:
    by_day = {row.day: row for row in rows}
    days = (first + timedelta(days=n) for n in range(count))
    return [by_day.get(day) or DayOfMoney(day, 0, 0, 0, 0) for day in days]


def _period(label: str, days: Sequence[DayOfMoney]) -> Period:
    return Period(
        label=label,
        sessions=sum(day.sessions for day in days),
        seconds=sum(day.seconds for day in days),
        taken_pence=sum(day.taken_pence for day in days),
        owed_pence=sum(day.owed_pence for day in days),
    )
