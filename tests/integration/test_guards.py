"""The guards at the HTTP edge, in process: the body size limit and the HSTS header."""

from collections.abc import AsyncIterator

import httpx
import pytest

TOO_LARGE = (413, {"detail": "The request body is larger than 1024 KiB."})


async def chunks_of(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A JSON-looking body streamed without Content-Length (chunked)."""
    yield b'{"sessionId": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


@pytest.mark.parametrize("path", ["/api/end-session", "/api/confirm-booking", "/webhook/stripe"])
async def test_a_streamed_body_over_the_limit_is_413_whatever_the_route_does_with_it(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(
        path,
        content=chunks_of(1100 * 1024),
        headers={"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=x"},
    )
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.json()) == TOO_LARGE


async def test_a_streamed_body_under_the_limit_reaches_the_route(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/end-session",
        content=chunks_of(900 * 1024),
        headers={"Content-Type": "application/json"},
    )
    # Read whole and validated: the id is 983040 characters of x.
    assert (response.status_code, response.json()) == (
        422,
        {"detail": "sessionId (body): Input should be a valid UUID, invalid length: found 983040"},
    )


@pytest.mark.parametrize("path", ["/", "/api/pods", "/static/qwip.css", "/api/nothing-here"])
async def test_local_mode_sends_no_hsts(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert "strict-transport-security" not in response.headers
