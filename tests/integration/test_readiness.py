"""/readyz and the background workers: a worker that has stopped takes the replica out."""

import asyncio

import httpx
from fastapi import FastAPI


async def test_readyz_is_503_naming_a_stopped_worker(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    workers = {worker.name: worker for worker in app.state.workers}
    assert sorted(workers) == ["emails", "holds", "overdue", "reminders", "settlements"]
    stopped = workers["settlements"].task
    assert stopped is not None
    stopped.cancel()
    await asyncio.wait([stopped])

    response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (
        503,
        {"detail": "Background work is not running: settlements stopped."},
    )
