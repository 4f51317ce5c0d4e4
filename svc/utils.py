"""Pure helpers: money and time. No I/O here."""

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Context, Decimal
from uuid import UUID
from zoneinfo import ZoneInfo

from svc.types import Pence

_ONE_SECOND = timedelta(seconds=1)
_SECONDS_PER_MINUTE = 60
_MINOR_UNITS_PER_MAJOR = 100


def elapsed_seconds(start: datetime, end: datetime) -> int:
    """Whole seconds from start to end, never negative (clocks can disagree by a little)."""
    return max(0, (end - start) // _ONE_SECOND)


# Enough precision that the one division is exact to far below half a penny, whatever
# the process-wide decimal context says; its methods also spare a context switch per call.
_MONEY = Context(prec=60, rounding=ROUND_HALF_UP)
_PENNY = Decimal(1)


def compute_cost_pence(
    *, start: datetime, end: datetime, price_per_minute: Decimal, free_minutes: int = 0
) -> Pence:
    """The cost of a session in minor units: billable seconds × price ÷ 60, half-up to the penny.

    The preview and the final charge both come from here, so they can never disagree.
    """
    if price_per_minute < 0 or not price_per_minute.is_finite():
        raise ValueError(f"price per minute must be a non-negative amount, got {price_per_minute}")
    billable = max(0, elapsed_seconds(start, end) - free_minutes * _SECONDS_PER_MINUTE)
    pence = _MONEY.divide(
        _MONEY.multiply(Decimal(billable * _MINOR_UNITS_PER_MAJOR), price_per_minute),
        _SECONDS_PER_MINUTE,
    )
    return Pence(int(_MONEY.quantize(pence, _PENNY)))


def compute_hold_pence(
    *, price_per_minute: Decimal, hold_minutes: int, minimum_pence: int
) -> Pence:
    """The amount held on the card at booking: the price of `hold_minutes`, half-up to the
    penny, and never less than the smallest amount that is charged at all."""
    if price_per_minute < 0 or not price_per_minute.is_finite():
        raise ValueError(f"price per minute must be a non-negative amount, got {price_per_minute}")
    if hold_minutes < 0:
        raise ValueError(f"hold minutes must not be negative, got {hold_minutes}")
    pence = _MONEY.multiply(Decimal(hold_minutes * _MINOR_UNITS_PER_MAJOR), price_per_minute)
    return Pence(max(int(_MONEY.quantize(pence, _PENNY)), minimum_pence))


def pence_to_major(pence: int) -> Decimal:
    """2.63 for 263: the amount in major units with exactly two decimals."""
    return (Decimal(pence) / _MINOR_UNITS_PER_MAJOR).quantize(Decimal("0.01"))


_CURRENCY_SYMBOLS = {"gbp": "£", "eur": "€", "usd": "$"}


def format_money(pence: int, currency: str) -> str:
    """£2.63, or 2.63 CHF for a currency without a symbol we know."""
    amount = pence_to_major(pence)
    symbol = _CURRENCY_SYMBOLS.get(currency.lower())
    return f"{symbol}{amount}" if symbol else f"{amount} {currency.upper()}"


def format_price_per_minute(price: Decimal, currency: str) -> str:
    """£0.25 per minute; keeps sub-penny digits of a price such as 0.125."""
    cents = price.quantize(Decimal("0.01"))
    shown = cents if price == cents else price.normalize()
    symbol = _CURRENCY_SYMBOLS.get(currency.lower())
    text = f"{symbol}{shown}" if symbol else f"{shown} {currency.upper()}"
    return f"{text} per minute"


def format_local_time(moment: datetime, timezone: ZoneInfo) -> str:
    """26 November 2026, 3:05pm, in the pods' time zone."""
    local = moment.astimezone(timezone)
    hour = local.hour % 12 or 12
    suffix = "am" if local.hour < 12 else "pm"
    return f"{local.day} {local:%B %Y}, {hour}:{local:%M}{suffix}"


def format_duration(seconds: int) -> str:
    """1 h 05 min 03 s, 12 min 00 s, 45 s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def short_id(value: UUID | str) -> str:
    """The first 8 characters: enough to find a session in the logs, useless as its bearer link."""
    return str(value)[:8]
