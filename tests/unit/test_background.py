import asyncio

import pytest

from svc.background import retry_delay, run_periodically
from svc.locks import MAX_RETRY_SECONDS
from svc.services import Outbox


def test_retries_wait_twice_as_long_each_time_up_to_ten_minutes() -> None:
    assert [
        retry_delay(2, attempt, at_most=MAX_RETRY_SECONDS) for attempt in (1, 2, 3, 4, 10, 20)
    ] == [
        2.0,
        4.0,
        8.0,
        16.0,
        600.0,
        600.0,
    ]


async def test_a_failing_round_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds = 0
    third_round = asyncio.Event()

    async def job() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            third_round.set()
        raise ValueError("a message that cannot be composed")

    wake = Outbox()
    task = asyncio.create_task(run_periodically("emails", job, wake=wake, interval=10))
    for _ in range(2):
        await asyncio.sleep(0.01)
        wake.wake()
    await asyncio.wait_for(third_round.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rounds == 3
    assert [r.getMessage() for r in caplog.records][:2] == [
        "background.error job=emails",
        "background.error job=emails",
    ]
