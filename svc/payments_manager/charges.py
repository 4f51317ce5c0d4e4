"""Charging a saved card off-session, and checking Stripe's webhook signatures."""

import json
import logging
from typing import Any
from uuid import UUID

import stripe
from stripe.params import PaymentIntentCreateParams

from svc.payments_manager.base import (
    _UNREACHABLE,
    WEBHOOK_TOLERANCE_SECONDS,
    ChargeOutcome,
    InvalidWebhook,
    PaymentProviderUnavailable,
    StripeEvent,
    _id_of,
)
from svc.types import PaymentStatus

logger = logging.getLogger(__name__)


async def charge_session(
    client: stripe.StripeClient,
    *,
    session_id: UUID,
    amount_pence: int,
    currency: str,
    customer_id: str,
    payment_method_id: str | None,
) -> ChargeOutcome:
    """Charge the saved card off-session. A decline is an outcome; an outage raises."""
    params: PaymentIntentCreateParams = {
        "amount": amount_pence,
        "currency": currency,
        "customer": customer_id,
        "confirm": True,
        "off_session": True,
        "metadata": {"session_id": str(session_id)},
    }
    if payment_method_id:
        params["payment_method"] = payment_method_id
    try:
        # The SDK's raw request, not `payment_intents.create_async`: the same call, retries
        # and errors, but the answer stays the JSON the outcome reads three fields of,
        # instead of becoming a tree of StripeObjects first: CPU that a burst of ends would
        # pay once per charge (bench/history.md has the measurement).
        answer = await client.raw_request_async(
            "post",
            "/v1/payment_intents",
            **params,
            # One key per session: a retry after a timeout or a crash returns the first
            # PaymentIntent instead of charging again.
            idempotency_key=f"qwip-session-charge-{session_id}",
        )
    except stripe.CardError as error:
        return _declined(error)
    except _UNREACHABLE as error:
        logger.warning("stripe.unavailable call=charge error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    except stripe.IdempotencyError as error:
        logger.error("stripe.idempotency_conflict error=%s", error.user_message)
        raise PaymentProviderUnavailable() from error
    except stripe.StripeError as error:
        # Stripe refused the request itself (a detached card, a deleted customer): retrying
        # cannot help, so it is recorded as a failure for the operator to follow up.
        code = getattr(error, "code", None) or type(error).__name__
        return ChargeOutcome(
            status=PaymentStatus.FAILED,
            payment_intent_id=None,
            error=f"{code}: {error.user_message or 'the payment provider refused the charge'}",
        )
    intent = answer.data
    if not isinstance(intent, dict) or not isinstance(intent.get("id"), str):
        # Not a PaymentIntent: treated as no answer, so the retry (same key) reads it again.
        logger.error("stripe.unexpected_answer call=charge status=%s", answer.code)
        raise PaymentProviderUnavailable()
    return _outcome_of(intent)


def _declined(error: stripe.CardError) -> ChargeOutcome:
    details = error.json_body.get("error", {}) if isinstance(error.json_body, dict) else {}
    intent_id = _id_of(details.get("payment_intent"))
    code = error.code or "card_declined"
    status = (
        PaymentStatus.REQUIRES_ACTION if code == "authentication_required" else PaymentStatus.FAILED
    )
    message = error.user_message or "The card was declined."
    return ChargeOutcome(status=status, payment_intent_id=intent_id, error=f"{code}: {message}")


def _outcome_of(intent: dict[str, Any]) -> ChargeOutcome:
    status = intent.get("status")
    if status == "succeeded":
        return ChargeOutcome(PaymentStatus.SUCCEEDED, intent["id"], None)
    if status == "requires_action":
        return ChargeOutcome(
            PaymentStatus.REQUIRES_ACTION,
            intent["id"],
            "authentication_required: the bank asks the cardholder to confirm this payment",
        )
    if status == "processing":
        return ChargeOutcome(PaymentStatus.PENDING, intent["id"], None)
    error = intent.get("last_payment_error") or {}
    reason = error.get("message") or "the payment did not go through"
    return ChargeOutcome(
        PaymentStatus.FAILED, intent["id"], f"{error.get('code') or status}: {reason}"
    )


def verify_webhook(payload: bytes, signature: str | None, *, secret: str) -> StripeEvent:
    """Check Stripe's signature over the raw body, then read the event out of it."""
    if not signature:
        raise InvalidWebhook("Missing Stripe-Signature header.")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8", errors="replace"),
            signature,
            secret,
            WEBHOOK_TOLERANCE_SECONDS,
        )
    except stripe.SignatureVerificationError:
        raise InvalidWebhook(
            "Invalid Stripe-Signature: it does not match this body and secret, or is older "
            "than 5 minutes."
        ) from None
    try:
        body = json.loads(payload)
    except ValueError:
        raise InvalidWebhook("The body is not JSON.") from None
    if (
        not isinstance(body, dict)
        or body.get("object") != "event"
        or not isinstance(body.get("id"), str)
        or not isinstance(body.get("type"), str)
        or not isinstance((body.get("data") or {}).get("object"), dict)
    ):
        raise InvalidWebhook("The body is not a Stripe event (id, type, data.object).")
    return StripeEvent(id=body["id"], type=body["type"], object=body["data"]["object"])
