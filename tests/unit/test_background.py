import asyncio

import pytest

from svc.background import (
    Worker,
    WorkersNotRunning,
    check_workers,
    retry_delay,
    run_periodically,
)
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


def test_a_worker_is_stuck_after_five_rounds_or_two_minutes_without_one() -> None:
    fast = Worker("emails", interval=5, last_round=1000.0)
    slow = Worker("settlements", interval=60, last_round=1000.0)
    assert (fast.trouble(1000.0 + 120), slow.trouble(1000.0 + 300)) == (None, None)
    assert fast.trouble(1000.0 + 121) == "emails has not finished a round for 121 s"
    assert slow.trouble(1000.0 + 301) == "settlements has not finished a round for 301 s"
    with pytest.raises(WorkersNotRunning) as raised:
        check_workers([fast, slow], now=1000.0 + 200)
    assert (raised.value.status_code, raised.value.message) == (
        503,
        "Background work is not running: emails has not finished a round for 200 s.",
    )
    check_workers([fast, slow], now=1000.0 + 60)


async def test_each_round_failed_or_not_is_marked_on_the_worker() -> None:
    worker = Worker("settlements", interval=60, last_round=0.0)
    marked_before_round: list[float] = []

    async def job() -> None:
        marked_before_round.append(worker.last_round)
        if len(marked_before_round) == 1:
            raise RuntimeError("a round that fails")
        raise asyncio.CancelledError  # the second round: stop here

    with pytest.raises(asyncio.CancelledError):
        await run_periodically("settlements", job, wake=Outbox(), interval=0.01, worker=worker)
    first, second = marked_before_round
    # The failed first round was marked on its way out.
    assert (first, second > 0.0) == (0.0, True)
