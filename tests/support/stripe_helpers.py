"""Doing in tests what Stripe.js and Stripe's servers do: confirm cards, sign events."""

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx
import stripe

CARD_OK = "4242424242424242"
CARD_DECLINED_AT_CHARGE = "4000000000000341"  # attaches fine, every charge fails
CARD_NEEDS_AUTHENTICATION = "4000002760003184"  # 3D Secure at setup and at every charge
CARD_DECLINED = "4000000000000002"


def sdk(base_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_qwip", http_client=stripe.HTTPXClient(), base_addresses={"api": base_url}
    )


async def create_card(
    client: stripe.StripeClient, *, card: str = CARD_OK, email: str | None = None
) -> str:
    """A card PaymentMethod, as Stripe.js makes one from the form; its id."""
    billing: dict[str, Any] = {"email": email} if email else {}
    method = await client.v1.payment_methods.create_async(
        params={
            "type": "card",
            "card": {"number": card, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            "billing_details": billing,
        }  # type: ignore[typeddict-item]
    )
    return method.id


async def confirm_card(
    client: stripe.StripeClient, setup_intent_id: str, *, card: str = CARD_OK, email: str | None
) -> dict[str, Any]:
    """What `stripe.confirmCardSetup` does in the page: a card, then the confirmation."""
    method_id = await create_card(client, card=card, email=email)
    intent = await client.v1.setup_intents.confirm_async(
        setup_intent_id, params={"payment_method": method_id}
    )
    if intent.status == "requires_action":
        # The cardholder completes 3D Secure: localstripe takes a second confirmation.
        intent = await client.v1.setup_intents.confirm_async(setup_intent_id)
    return intent.to_dict()


async def card_saved_outside_the_service(
    client: stripe.StripeClient,
    *,
    metadata: dict[str, str],
    card: str = CARD_OK,
    email: str | None = None,
) -> dict[str, Any]:
    """A Customer and a confirmed SetupIntent made straight at Stripe, with the metadata
    given (e.g. naming a pod that does not exist): what Stripe then says of it."""
    customer = await client.v1.customers.create_async(params={"email": email} if email else {})
    intent = await client.v1.setup_intents.create_async(
        params={"customer": customer.id, "usage": "off_session", "metadata": metadata}
    )
    return await confirm_card(client, intent.id, card=card, email=None)


def age(stripe_base_url: str, object_id: str, *, seconds: int) -> int:
    """Move a localstripe object's `created` `seconds` back (the launcher's test aid);
    its new `created`."""
    response = httpx.post(
        f"{stripe_base_url}/_config/qwip/age/{object_id}", data={"seconds": seconds}, timeout=5
    )
    response.raise_for_status()
    return int(response.json()["created"])


def sign(payload: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """The Stripe-Signature header exactly as Stripe computes it."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event_body(
    event_type: str, data_object: dict[str, Any], *, event_id: str | None = None
) -> bytes:
    """An event in Stripe's documented envelope."""
    return json.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": "2026-10-28.clover",
            "created": int(time.time()),
            "data": {"object": data_object},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
    ).encode()


def signed_event(
    event_type: str,
    data_object: dict[str, Any],
    secret: str,
    *,
    event_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[bytes, dict[str, str]]:
    body = event_body(event_type, data_object, event_id=event_id)
    return body, {
        "Stripe-Signature": sign(body, secret, timestamp=timestamp),
        "Content-Type": "application/json",
    }


async def payment_intents_of(client: stripe.StripeClient, customer_id: str) -> list[dict[str, Any]]:
    """localstripe cannot filter by customer: list them all and filter here."""
    found = []
    page = await client.v1.payment_intents.list_async(params={"limit": 100})
    while True:
        found += [pi.to_dict() for pi in page.data if pi.customer == customer_id]
        if not page.has_more:
            return found
        page = await client.v1.payment_intents.list_async(
            params={"limit": 100, "starting_after": page.data[-1].id}
        )
