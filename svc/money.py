"""The money for the operator, in one place: today, the last 7 and 30 days, and the last
30 days one by one (the console's bar chart). A new figure is one more field of
`DayOfMoney` and `Period`, summed in `_period`.

Sessions count on the day they started; refunds on the day they were made (a refund today
of last month's session is today's), so the net of a period is what it took less what it
gave back in it."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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
    refunded_pence: int

    @property
    def minutes(self) -> int:
        return self.seconds // 60

    @property
    def net_pence(self) -> int:
        """Charged or captured, less refunded."""
        return self.taken_pence - self.refunded_pence


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
    refunds = await db.refunds_by_day(since=since, timezone=settings.TIMEZONE)
    days = every_day(rows, first=first, count=CHART_DAYS, refunds=refunds)
    periods = [_period(label, days[-count:]) for label, count in PERIODS]
    return MoneySummary(currency=settings.CURRENCY, periods=periods, days=days)


def every_day(
    rows: Sequence[DayOfMoney],
    *,
    first: date,
    count: int,
    refunds: Mapping[date, int] | None = None,
) -> list[DayOfMoney]:
    """`count` days from `first`, each with its sessions' money and the pence refunded on it."""
    by_day = {row.day: row for row in rows}
    refunded = refunds or {}
    days = (first + timedelta(days=n) for n in range(count))
    return [
        replace(by_day.get(day) or DayOfMoney(day, 0, 0, 0, 0), refunded_pence=refunded.get(day, 0))
        for day in days
    ]


def _period(label: str, days: Sequence[DayOfMoney]) -> Period:
    return Period(
        label=label,
        sessions=sum(day.sessions for day in days),
        seconds=sum(day.seconds for day in days),
        taken_pence=sum(day.taken_pence for day in days),
        owed_pence=sum(day.owed_pence for day in days),
        refunded_pence=sum(day.refunded_pence for day in days),
    )
