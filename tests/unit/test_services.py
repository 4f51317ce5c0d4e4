import asyncio

import pytest

from svc import services
from svc.services import Outbox


async def test_a_worker_waiting_on_the_outbox_stops_when_cancelled_as_it_is_woken() -> None:
    outbox = Outbox()

    async def worker() -> None:
        while True:
            await outbox.wait(10)

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    outbox.wake()  # the wait ends...
    task.cancel()  # ...in the same turn of the loop as the app's shutdown cancels the worker
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)


async def test_the_outbox_wait_ends_at_a_wake_or_at_its_timeout() -> None:
    outbox = Outbox()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await outbox.wait(0.05)
    assert loop.time() - started >= 0.05
    loop.call_later(0.01, outbox.wake)
    started = loop.time()
    await outbox.wait(10)
    assert loop.time() - started < 1


async def test_a_quiet_wait_lingers_while_wakes_keep_coming() -> None:
    outbox = Outbox()
    wakes = 0

    async def queue_a_burst() -> None:
        nonlocal wakes
        for _ in range(10):
            outbox.wake()
            wakes += 1
            await asyncio.sleep(0.005)

    burst = asyncio.create_task(queue_a_burst())
    await outbox.wait(10, quiet=0.05)
    # the sender starts after the whole burst, not at its first wake
    assert (wakes, burst.done()) == (10, True)

    burst = asyncio.create_task(queue_a_burst())
    await outbox.wait(10)
    # without quiet, at once
    assert wakes < 20
    await burst


async def test_a_quiet_wait_lingers_half_a_second_at_most(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "LINGER_AT_MOST_SECONDS", 0.1)
    outbox = Outbox()

    async def never_quiet() -> None:
        while True:
            outbox.wake()
            await asyncio.sleep(0.005)

    loop = asyncio.get_running_loop()
    waker = asyncio.create_task(never_quiet())
    try:
        started = loop.time()
        # it would wait until the timeout (and wait_for fail) if it lingered on and on
        await asyncio.wait_for(outbox.wait(10, quiet=0.05), 5)
        assert loop.time() - started >= 0.1
    finally:
        waker.cancel()
