"""Stripe's idempotency rules, as the localstripe launcher adds them, on a toy app served
over real HTTP: what is replayed, what is refused, what is not kept."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from svc.local.idempotency import HOLD_PATH, LOG_PATH, Idempotency

KEY_A = ("sk_test_a", "")
KEY_B = ("sk_test_b", "")


class Toy:
    """Counts the work it does; answers 500 while `failing`, 402 for amount=0."""

    def __init__(self) -> None:
        self.done = 0
        self.failing = False

    async def create(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.failing:
            return web.json_response({"error": {"type": "api_error"}}, status=500)
        self.done += 1
        if form.get("amount") == "0":
            return web.json_response(
                {"error": {"type": "card_error", "code": "card_declined", "n": self.done}},
                status=402,
            )
        return web.json_response({"id": f"pi_{self.done}", "amount": form.get("amount")})


async def serve(idempotency: Idempotency, toy: Toy) -> TestServer:
    app = web.Application()
    app.router.add_post("/v1/payment_intents", toy.create)
    idempotency.install(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def toy() -> Toy:
    return Toy()


@pytest.fixture
async def client(toy: Toy) -> AsyncIterator[httpx.AsyncClient]:
    server = await serve(Idempotency(), toy)
    async with httpx.AsyncClient(base_url=str(server.make_url("")), auth=KEY_A) as http:
        yield http
    await server.close()


async def pay(http: httpx.AsyncClient, key: str | None, amount: int = 263) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await http.post("/v1/payment_intents", data={"amount": amount}, headers=headers)


async def test_a_repeated_key_gets_the_first_answer_again(
    client: httpx.AsyncClient, toy: Toy
) -> None:
    first = await pay(client, "k1")
    again = await pay(client, "k1")
    assert (first.status_code, first.json()) == (200, {"id": "pi_1", "amount": "263"})
    assert (again.status_code, again.json()) == (200, {"id": "pi_1", "amount": "263"})
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert toy.done == 1


async def test_a_card_error_is_replayed_as_it_was(client: httpx.AsyncClient, toy: Toy) -> None:
    first = await pay(client, "k2", amount=0)
    again = await pay(client, "k2", amount=0)
    assert first.status_code == again.status_code == 402
    assert first.content == again.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert toy.done == 1


async def test_requests_without_a_key_are_each_carried_out(
    client: httpx.AsyncClient, toy: Toy
) -> None:
    answers = [(await pay(client, None)).json()["id"] for _ in range(3)]
    assert answers == ["pi_1", "pi_2", "pi_3"]


async def test_keys_belong_to_the_secret_key_that_sent_them(
    client: httpx.AsyncClient, toy: Toy
) -> None:
    await pay(client, "shared")
    other = await client.post(
        "/v1/payment_intents",
        data={"amount": 263},
        headers={"Idempotency-Key": "shared"},
        auth=KEY_B,
    )
    assert other.json()["id"] == "pi_2"
    assert "Idempotent-Replayed" not in other.headers


async def test_the_same_key_with_other_parameters_is_refused(
    client: httpx.AsyncClient, toy: Toy
) -> None:
    await pay(client, "k3", amount=100)
    other = await pay(client, "k3", amount=999)
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"
    assert "same parameters" in other.json()["error"]["message"]
    assert toy.done == 1


async def test_a_request_while_the_first_is_in_flight_gets_409(
    client: httpx.AsyncClient, toy: Toy
) -> None:
    held = await client.post(HOLD_PATH, data={"ms": 300})
    assert held.json() == {"ms": 300, "path": "^/v1/"}
    first = asyncio.create_task(pay(client, "k4"))
    await asyncio.sleep(0.1)  # the first is done and kept, its answer held back
    second = await pay(client, "k4")
    assert second.status_code == 409
    assert second.json()["error"]["type"] == "idempotency_error"
    assert (await first).json() == {"id": "pi_1", "amount": "263"}
    third = await pay(client, "k4")
    assert (third.json(), third.headers["Idempotent-Replayed"]) == (
        {"id": "pi_1", "amount": "263"},
        "true",
    )
    assert toy.done == 1


async def test_answers_of_5xx_are_not_kept(client: httpx.AsyncClient, toy: Toy) -> None:
    toy.failing = True
    assert (await pay(client, "k5")).status_code == 500
    toy.failing = False
    retried = await pay(client, "k5")
    assert (retried.status_code, retried.json()) == (200, {"id": "pi_1", "amount": "263"})
    assert "Idempotent-Replayed" not in retried.headers


async def test_the_log_says_which_requests_were_replayed(
    client: httpx.AsyncClient, toy: Toy
) -> None:
    await pay(client, "k6")
    await pay(client, "k6")
    await pay(client, None)
    log = (await client.get(LOG_PATH)).json()
    assert [(e["idempotency_key"], e["replayed"], e["status"]) for e in log] == [
        ("k6", False, 200),
        ("k6", True, 200),
        (None, False, 200),
    ]
    assert {e["host"] for e in log} == {client.base_url.netloc.decode()}


async def test_kept_answers_outlive_a_restart(tmp_path: Path, toy: Toy) -> None:
    state = tmp_path / "keys.pickle"
    server = await serve(Idempotency(state), toy)
    async with httpx.AsyncClient(base_url=str(server.make_url("")), auth=KEY_A) as http:
        first = (await pay(http, "k7")).json()
    await server.close()

    restarted = Idempotency(state)
    restarted.load()
    server = await serve(restarted, toy)
    async with httpx.AsyncClient(base_url=str(server.make_url("")), auth=KEY_A) as http:
        again = await pay(http, "k7")
    await server.close()
    assert (again.json(), again.headers["Idempotent-Replayed"]) == (first, "true")
    assert toy.done == 1
