from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from svc.utils import (
    compute_cost_pence,
    compute_hold_pence,
    elapsed_seconds,
    format_duration,
    format_local_time,
    format_money,
    format_price_per_minute,
    pence_to_major,
)

START = datetime(2026, 11, 26, 15, 5, tzinfo=UTC)

prices = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
durations = st.integers(min_value=0, max_value=48 * 3600)
free_minutes = st.integers(min_value=0, max_value=120)


def cost(seconds: int, price: Decimal, free: int = 0) -> int:
    return compute_cost_pence(
        start=START,
        end=START + timedelta(seconds=seconds),
        price_per_minute=price,
        free_minutes=free,
    )


@pytest.mark.parametrize(
    ("seconds", "price", "free", "expected"),
    [
        (630, "0.25", 0, 263),  # 10 min 30 s at 0.25/min = 262.5p, half-up
        (600, "0.25", 0, 250),
        (0, "0.25", 0, 0),
        (59, "0.01", 0, 1),  # 0.983p
        (29, "0.01", 0, 0),  # 0.483p
        (30, "0.01", 0, 1),  # exactly 0.5p rounds up
        (3600, "0.3333", 0, 2000),  # 1999.8p
        (900, "0.25", 10, 125),  # 5 billable minutes
        (300, "0.25", 10, 0),  # all inside the free minutes
        (10_800, "1.00", 0, 18_000),
    ],
)
def test_compute_cost_pence_known_cases(seconds: int, price: str, free: int, expected: int) -> None:
    assert cost(seconds, Decimal(price), free) == expected


def test_compute_cost_pence_ignores_part_seconds() -> None:
    end = START + timedelta(seconds=630, microseconds=999_999)
    assert compute_cost_pence(start=START, end=end, price_per_minute=Decimal("0.25")) == 263


def test_compute_cost_pence_rejects_negative_price() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        cost(60, Decimal("-0.01"))


def test_compute_cost_pence_end_before_start_costs_nothing() -> None:
    assert (
        compute_cost_pence(
            start=START, end=START - timedelta(seconds=5), price_per_minute=Decimal("0.25")
        )
        == 0
    )


@given(durations, prices, free_minutes)
def test_cost_is_never_negative_and_an_int(seconds: int, price: Decimal, free: int) -> None:
    result = cost(seconds, price, free)
    assert type(result) is int
    assert result >= 0


@given(durations, durations, prices)
def test_cost_is_monotonic_in_time(a: int, b: int, price: Decimal) -> None:
    shorter, longer = sorted((a, b))
    assert cost(shorter, price) <= cost(longer, price)


@given(durations, prices, prices)
def test_cost_is_monotonic_in_price(seconds: int, p: Decimal, q: Decimal) -> None:
    low, high = sorted((p, q))
    assert cost(seconds, low) <= cost(seconds, high)


@given(durations, prices)
def test_cost_is_within_half_a_penny_of_the_exact_value(seconds: int, price: Decimal) -> None:
    exact = Decimal(seconds) * price * 100 / 60
    assert abs(Decimal(cost(seconds, price)) - exact) <= Decimal("0.5")


@given(durations, prices)
def test_cost_does_not_depend_on_how_the_price_is_written(seconds: int, price: Decimal) -> None:
    # A numeric(12,4) read back from Postgres has four places; a literal may have fewer.
    assert cost(seconds, price) == cost(seconds, price.quantize(Decimal("0.0001")))
    assert cost(seconds, price) == cost(seconds, Decimal(str(price.normalize())))


@pytest.mark.parametrize(
    ("price", "minutes", "minimum", "expected"),
    [
        ("0.25", 60, 30, 1500),  # £15.00 for an hour at £0.25/min
        ("0.10", 60, 30, 600),
        ("0.12345", 60, 30, 741),  # 740.7p, half-up
        ("0.00125", 60, 30, 30),  # 7.5p is below the minimum charge: the minimum is held
        ("0.2525", 2, 30, 51),  # 50.5p, half-up to 51
        ("0.25", 0, 30, 30),
    ],
)
def test_compute_hold_pence(price: str, minutes: int, minimum: int, expected: int) -> None:
    held = compute_hold_pence(
        price_per_minute=Decimal(price), hold_minutes=minutes, minimum_pence=minimum
    )
    assert (held, type(held)) == (expected, int)


def test_compute_hold_pence_rejects_a_negative_price() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        compute_hold_pence(price_per_minute=Decimal("-0.01"), hold_minutes=60, minimum_pence=30)


def test_elapsed_seconds_floors_and_clamps() -> None:
    assert elapsed_seconds(START, START + timedelta(seconds=1.9)) == 1
    assert elapsed_seconds(START, START - timedelta(seconds=3)) == 0


@pytest.mark.parametrize(
    ("pence", "major"), [(263, "2.63"), (0, "0.00"), (5, "0.05"), (100_000, "1000.00")]
)
def test_pence_to_major(pence: int, major: str) -> None:
    assert pence_to_major(pence) == Decimal(major)
    assert str(pence_to_major(pence)) == major


def test_format_money() -> None:
    assert format_money(263, "gbp") == "£2.63"
    assert format_money(5, "eur") == "€0.05"
    assert format_money(1234, "chf") == "12.34 CHF"


def test_format_price_per_minute_keeps_sub_penny_digits() -> None:
    assert format_price_per_minute(Decimal("0.2500"), "gbp") == "£0.25 per minute"
    assert format_price_per_minute(Decimal("0.1250"), "gbp") == "£0.125 per minute"


def test_format_local_time_uses_the_pod_time_zone() -> None:
    london = ZoneInfo("Europe/London")
    assert format_local_time(START, london) == "26 November 2026, 3:05pm"
    summer = datetime(2026, 7, 1, 8, 30, tzinfo=UTC)  # BST: one hour ahead
    assert format_local_time(summer, london) == "1 July 2026, 9:30am"
    assert format_local_time(datetime(2026, 1, 1, 0, 7, tzinfo=UTC), london) == (
        "1 January 2026, 12:07am"
    )


def test_format_duration() -> None:
    assert format_duration(45) == "45 s"
    assert format_duration(630) == "10 min 30 s"
    assert format_duration(3903) == "1 h 05 min 03 s"
