"""What the launcher changes in localstripe leaves what clients and webhooks see intact."""

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from svc.local import stop_process
from svc.local.localstripe import register_localstripe_webhook, start_localstripe
from tests.conftest import free_port
from tests.support.stripe_helpers import (
    CARD_DECLINED_AT_CHARGE,
    CARD_OK,
    create_card,
    sdk,
    sign,
)


async def pay_off_session(base: str, customer_id: str) -> str:
    """A card saved to the customer and charged 263 off-session; the PaymentIntent's id."""
    stripe = sdk(base)
    method_id = await create_card(stripe)
    await stripe.v1.payment_methods.attach_async(method_id, params={"customer": customer_id})
    intent = await stripe.v1.payment_intents.create_async(
        params={
            "amount": 263,
            "currency": "gbp",
            "customer": customer_id,
            "payment_method": method_id,
            "confirm": True,
            "off_session": True,
        }
    )
    return intent.id


async def events_kept(base: str) -> list[tuple[str, str]]:
    """(type, object id) of every event localstripe holds."""
    async with httpx.AsyncClient(base_url=base) as http:
        answer = await http.get("/v1/events", headers={"Authorization": "Bearer sk_test_x"})
    return [(e["type"], e["data"]["object"]["id"]) for e in answer.json()["data"]]


async def test_localstripe_answers_compact_json_and_builds_only_the_events_a_webhook_wants(
    tmp_path: Path,
) -> None:
    deliveries: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        deliveries.put_nowait((request.headers["Stripe-Signature"], await request.read()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port, stripe_port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    process = start_localstripe(stripe_port, state_file=tmp_path / "state.pickle", persist=False)
    base = f"http://localhost:{stripe_port}"
    try:
        register_localstripe_webhook(
            base, url=f"http://127.0.0.1:{hook_port}/hook", secret="whsec_t"
        )
        async with httpx.AsyncClient(base_url=base) as http:
            answer = await http.post(
                "/v1/customers",
                data={"email": "ada@example.com"},
                headers={"Authorization": "Bearer sk_test_x"},
            )
        # the same values, without the indentation that kept JSON off its C encoder
        customer: dict[str, Any] = answer.json()
        assert answer.text == json.dumps(customer, sort_keys=True)

        intent_id = await pay_off_session(base, customer["id"])
        # customer.created is not one the webhook wants; the payment's event comes, signed
        signature, body = await asyncio.wait_for(deliveries.get(), 10)
        event = json.loads(body)
        assert (event["type"], event["data"]["object"]["id"]) == (
            "payment_intent.succeeded",
            intent_id,
        )
        timestamp = int(signature.split(",")[0].removeprefix("t="))
        assert signature == sign(body, "whsec_t", timestamp=timestamp)
        await asyncio.sleep(1.5)
        assert deliveries.empty()
        # the events no webhook wants (customer.created here) were never built nor kept
        assert await events_kept(base) == [("payment_intent.succeeded", intent_id)]
    finally:
        stop_process(process)
        await runner.cleanup()


async def test_localstripe_keeps_its_state_and_the_events_built_across_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.pickle"
    port = free_port()
    base = f"http://localhost:{port}"
    process = start_localstripe(port, state_file=state, fresh=True)
    try:
        # a webhook that nobody serves: the events it wants are built and kept all the same
        register_localstripe_webhook(base, url="http://127.0.0.1:9/hook", secret="whsec_t")
        customer = await sdk(base).v1.customers.create_async(params={"email": "ada@example.com"})
        intent_id = await pay_off_session(base, customer.id)
    finally:
        stop_process(process)

    process = start_localstripe(port, state_file=state)
    try:
        again = await sdk(base).v1.payment_intents.retrieve_async(intent_id)
        assert (again.id, again.status, again.amount) == (intent_id, "succeeded", 263)
        assert await events_kept(base) == [("payment_intent.succeeded", intent_id)]
    finally:
        stop_process(process)


async def charge_with_key(
    http: httpx.AsyncClient, customer_id: str, method_id: str, key: str
) -> httpx.Response:
    return await http.post(
        "/v1/payment_intents",
        data={
            "amount": 263,
            "currency": "gbp",
            "customer": customer_id,
            "payment_method": method_id,
            "confirm": "true",
            "off_session": "true",
        },
        headers={"Authorization": "Bearer sk_test_x", "Idempotency-Key": key},
    )


async def test_localstripe_replays_a_charge_and_a_decline_by_key_even_after_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.pickle"
    port = free_port()
    base = f"http://localhost:{port}"
    stripe = sdk(base)
    process = start_localstripe(port, state_file=state, fresh=True)
    try:
        customer = await stripe.v1.customers.create_async()
        methods = {}
        for card in (CARD_OK, CARD_DECLINED_AT_CHARGE):
            methods[card] = await create_card(stripe, card=card)
            await stripe.v1.payment_methods.attach_async(
                methods[card], params={"customer": customer.id}
            )
        async with httpx.AsyncClient(base_url=base) as http:
            paid = await charge_with_key(http, customer.id, methods[CARD_OK], "charge-1")
            declined = await charge_with_key(
                http, customer.id, methods[CARD_DECLINED_AT_CHARGE], "charge-2"
            )
            declined_again = await charge_with_key(
                http, customer.id, methods[CARD_DECLINED_AT_CHARGE], "charge-2"
            )
        assert (paid.status_code, paid.json()["status"]) == (200, "succeeded")
        assert (declined.status_code, declined.json()["error"]["code"]) == (402, "card_declined")
        assert (declined_again.status_code, declined_again.content) == (402, declined.content)
        assert declined_again.headers["Idempotent-Replayed"] == "true"
    finally:
        stop_process(process)

    process = start_localstripe(port, state_file=state)
    try:
        async with httpx.AsyncClient(base_url=base) as http:
            again = await charge_with_key(http, customer.id, methods[CARD_OK], "charge-1")
            log = (await http.get("/_config/qwip/requests")).json()
        assert (again.json()["id"], again.headers["Idempotent-Replayed"]) == (
            paid.json()["id"],
            "true",
        )
        intents = await stripe.v1.payment_intents.list_async()
        assert sorted(i.status for i in intents.data if i.amount == 263) in (
            ["requires_payment_method", "succeeded"],
            ["succeeded"],
        )
        assert [(e["idempotency_key"], e["replayed"]) for e in log] == [("charge-1", True)]
    finally:
        stop_process(process)


async def test_localstripe_ages_an_object_for_the_tests_and_keeps_it_across_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.pickle"
    port = free_port()
    base = f"http://localhost:{port}"
    process = start_localstripe(port, state_file=state, fresh=True)
    try:
        intent = await sdk(base).v1.setup_intents.create_async(params={"usage": "off_session"})
        async with httpx.AsyncClient(base_url=base) as http:
            aged = await http.post(f"/_config/qwip/age/{intent.id}", data={"seconds": 1860})
            assert (aged.status_code, aged.json()) == (
                200,
                {"id": intent.id, "created": intent.created - 1860},
            )
            unknown = await http.post("/_config/qwip/age/seti_nope", data={"seconds": 60})
            assert (unknown.status_code, unknown.json()) == (
                404,
                {"error": {"message": "no object 'seti_nope'"}},
            )
            bad = await http.post(f"/_config/qwip/age/{intent.id}", data={"seconds": "a lot"})
            assert (bad.status_code, bad.json()) == (
                400,
                {"error": {"message": "seconds: an integer"}},
            )
    finally:
        stop_process(process)

    process = start_localstripe(port, state_file=state)
    try:
        again = await sdk(base).v1.setup_intents.retrieve_async(intent.id)
        assert again.created == intent.created - 1860
    finally:
        stop_process(process)
