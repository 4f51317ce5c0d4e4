import asyncio

from svc.main import stop_workers


async def test_stop_workers_sends_the_cancellation_again_when_one_was_swallowed() -> None:
    swallowed = []

    async def worker() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # what asyncio.wait_for can do on Python 3.11

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_workers([task]), 5)
    assert task.cancelled()
    assert swallowed == [True]
