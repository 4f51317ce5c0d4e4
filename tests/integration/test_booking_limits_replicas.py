"""The booking limits are exact across replicas: two real service processes (uvicorn, as
production runs them, in test mode) on one database, and a third that trusts no proxy."""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import free_port, reset_tables
from tests.support.mail import Mailbox
from tests.support.processes import ServiceProcess, clean_environment
from tests.support.settings import service_settings

URL = "/api/create-setup-intent"
LIMITED = {
    "detail": "Too many card setups from this connection or for this e-mail address in the "
    "last few minutes. Please try again in 10 minutes."
}


@pytest.fixture(scope="module")
def replicas(
    database_url: str,
    localstripe_url: str,
    smtp_server: Mailbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[ServiceProcess]]:
    """Two replicas trusting the proxy at 127.0.0.1 (the default), and one trusting only
    192.0.2.1, which no request here comes from."""
    folder: Path = tmp_path_factory.mktemp("limits")
    env = clean_environment(
        **{
            **service_settings(
                app_env="test",
                database_url=database_url,
                stripe_api_base=localstripe_url,
                smtp_port=smtp_server.port,
                public_url="http://qwip.test",
            ),
            "BOOKING_RATE_LIMIT_PER_IP": "4",
            "BOOKING_RATE_LIMIT_PER_EMAIL": "3",
        }
    )
    processes = [
        ServiceProcess(free_port(), env, cwd=folder, log=folder / f"replica{i}.log")
        for i in range(2)
    ]
    processes.append(
        ServiceProcess(
            free_port(),
            {**env, "FORWARDED_ALLOW_IPS": "192.0.2.1"},
            cwd=folder,
            log=folder / "untrusting.log",
        )
    )
    try:
        for process in processes:
            process.start()
        yield processes
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
async def pod(database_url: str, replicas: list[ServiceProcess]) -> str:
    await reset_tables(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "insert into pods (name, address, price) values ('pod1', '1 Quiet Lane', 0.25)"
        )
    finally:
        await connection.close()
    return "pod1"


async def book_at_once(
    replicas: list[ServiceProcess], requests: list[tuple[str, dict[str, str]]]
) -> list[httpx.Response]:
    """Every request at the same moment, alternating between the two replicas."""
    async with httpx.AsyncClient(timeout=30) as http:
        return list(
            await asyncio.gather(
                *(
                    http.post(
                        f"{replicas[i % 2].url}{URL}",
                        json={"podName": "pod1", "email": email},
                        headers=headers,
                    )
                    for i, (email, headers) in enumerate(requests)
                )
            )
        )


def outcomes(responses: list[httpx.Response]) -> list[int]:
    return sorted(response.status_code for response in responses)


async def test_the_limit_per_address_holds_across_two_replicas(
    replicas: list[ServiceProcess], pod: str
) -> None:
    responses = await book_at_once(replicas, [(f"a{i}@example.com", {}) for i in range(10)])
    assert outcomes(responses) == [200] * 4 + [429] * 6
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json() == LIMITED
        assert 590 <= int(refused.headers["retry-after"]) <= 600
        assert refused.headers["cache-control"] == "no-store"


async def test_the_limit_per_email_holds_across_two_replicas(
    replicas: list[ServiceProcess], pod: str
) -> None:
    # each from another client, as the proxy at 127.0.0.1 says
    responses = await book_at_once(
        replicas,
        [
            (
                "Ada@example.com" if i % 2 else "ada@EXAMPLE.com",
                {"X-Forwarded-For": f"203.0.113.{i}"},
            )
            for i in range(8)
        ],
    )
    assert outcomes(responses) == [200] * 3 + [429] * 5
    assert {r.json()["detail"] for r in responses if r.status_code == 429} == {LIMITED["detail"]}


async def test_x_forwarded_for_is_honoured_only_from_an_allowed_peer(
    replicas: list[ServiceProcess], pod: str
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:

        async def book(replica: ServiceProcess, i: int) -> int:
            response = await http.post(
                f"{replica.url}{URL}",
                json={"podName": "pod1", "email": f"x{i}@example.com"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            )
            return response.status_code

        # from the trusted proxy, five "clients": none at its limit of 4
        trusted = [await book(replicas[0], i) for i in range(5)]
        # a replica that does not trust this peer counts the peer: 4, then refused
        untrusted = [await book(replicas[2], 10 + i) for i in range(5)]
    assert trusted == [200] * 5
    assert untrusted == [200] * 4 + [429]
