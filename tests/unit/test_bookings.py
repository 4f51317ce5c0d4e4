import asyncio

import pytest

from svc.bookings import Outbox


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
