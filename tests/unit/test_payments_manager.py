import json
import time

import pytest

from svc.env import Settings
from svc.payments_manager import InvalidWebhook, SetupIntentInfo, build_client, verify_webhook
from svc.payments_manager.charges import _outcome_of
from svc.types import PaymentStatus
from tests.support.stripe_helpers import event_body, sign

SECRET = "whsec_unit"
SETUP_INTENT = {
    "id": "seti_1",
    "object": "setup_intent",
    "status": "succeeded",
    "client_secret": "seti_1_secret_x",
    "customer": "cus_1",
    "payment_method": "pm_1",
    "metadata": {"pod_id": "7", "pod_name": "pod1"},
}


def test_verify_webhook_reads_a_signed_event() -> None:
    body = event_body("setup_intent.succeeded", SETUP_INTENT, event_id="evt_1")
    event = verify_webhook(body, sign(body, SECRET), secret=SECRET)
    assert (event.id, event.type, event.object) == ("evt_1", "setup_intent.succeeded", SETUP_INTENT)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "Missing Stripe-Signature header."),
        ("wrong secret", "Invalid Stripe-Signature"),
        ("tampered", "Invalid Stripe-Signature"),
        ("too old", "Invalid Stripe-Signature"),
        ("garbage header", "Invalid Stripe-Signature"),
    ],
)
def test_verify_webhook_refuses_what_stripe_did_not_sign(case: str, message: str) -> None:
    body = event_body("setup_intent.succeeded", SETUP_INTENT)
    header: str | None = {
        "missing": None,
        "wrong secret": sign(body, "whsec_other"),
        "tampered": sign(body, SECRET),
        "too old": sign(body, SECRET, timestamp=int(time.time()) - 301),
        "garbage header": "t=abc,v1=def",
    }[case]
    if case == "tampered":
        body = body.replace(b"pod1", b"pod2")
    with pytest.raises(InvalidWebhook, match=message):
        verify_webhook(body, header, secret=SECRET)


def test_verify_webhook_accepts_a_signature_within_five_minutes() -> None:
    body = event_body("setup_intent.succeeded", SETUP_INTENT)
    verify_webhook(body, sign(body, SECRET, timestamp=int(time.time()) - 290), secret=SECRET)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "The body is not JSON."),
        (json.dumps({"id": "evt_1", "type": "x"}).encode(), "not a Stripe event"),
        (json.dumps([1, 2]).encode(), "not a Stripe event"),
        (
            json.dumps(
                {"id": "evt_1", "object": "event", "type": "x", "data": {"object": 1}}
            ).encode(),
            "not a Stripe event",
        ),
    ],
)
def test_verify_webhook_refuses_a_signed_body_that_is_not_an_event(
    body: bytes, message: str
) -> None:
    with pytest.raises(InvalidWebhook, match=message):
        verify_webhook(body, sign(body, SECRET), secret=SECRET)


def test_setup_intent_info_takes_ids_or_expanded_objects() -> None:
    expanded = {**SETUP_INTENT, "customer": {"id": "cus_1", "object": "customer"}}
    info = SetupIntentInfo.from_dict(expanded)
    assert (info.customer_id, info.payment_method_id, info.metadata) == (
        "cus_1",
        "pm_1",
        {"pod_id": "7", "pod_name": "pod1"},
    )
    bare = SetupIntentInfo.from_dict({"id": "seti_2", "status": "succeeded"})
    assert (bare.customer_id, bare.payment_method_id, bare.metadata) == (None, None, {})


@pytest.mark.parametrize(
    ("intent", "status", "error"),
    [
        ({"id": "pi_1", "status": "succeeded"}, PaymentStatus.SUCCEEDED, None),
        ({"id": "pi_1", "status": "processing"}, PaymentStatus.PENDING, None),
        (
            {"id": "pi_1", "status": "requires_action"},
            PaymentStatus.REQUIRES_ACTION,
            "authentication_required: the bank asks the cardholder to confirm this payment",
        ),
        (
            {
                "id": "pi_1",
                "status": "requires_payment_method",
                "last_payment_error": {
                    "code": "card_declined",
                    "message": "Your card was declined.",
                },
            },
            PaymentStatus.FAILED,
            "card_declined: Your card was declined.",
        ),
    ],
)
def test_payment_intent_status_becomes_our_outcome(
    intent: dict[str, object], status: PaymentStatus, error: str | None
) -> None:
    outcome = _outcome_of(intent)
    assert (outcome.status, outcome.payment_intent_id, outcome.error) == (status, "pi_1", error)


def test_client_goes_to_the_configured_api_base(settings: Settings) -> None:
    keys = {
        "STRIPE_SECRET": "sk_test_1",
        "STRIPE_PUBLISHABLE_KEY": "pk_test_1",
        "STRIPE_WEBHOOK_SECRET": "whsec_1",
    }
    local = Settings(_env_file=None, STRIPE_API_BASE="http://x:1/", **keys)
    client, _ = build_client(local)
    assert client._requestor.base_addresses["api"] == "http://x:1"  # type: ignore[attr-defined]
    production = Settings(_env_file=None, **keys)
    client, _ = build_client(production)
    assert client._requestor.base_addresses["api"] == "https://api.stripe.com"  # type: ignore[attr-defined]
