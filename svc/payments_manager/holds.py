"""Holds: a manual-capture PaymentIntent placed at booking, captured or cancelled at the end."""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import stripe
from stripe.params import PaymentIntentCreateParams

from svc.payments_manager.base import _UNREACHABLE, ChargeOutcome, PaymentProviderUnavailable
from svc.payments_manager.charges import _declined, _outcome_of
from svc.types import PaymentStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """What Stripe said of a hold. `state` is card_holds' word for it: held (requires
    capture), requires_action, failed (declined), canceled, or placing (anything else)."""

    state: str
    payment_intent_id: str | None
    client_secret: str | None = None
    error: str | None = None


def _hold_state(intent: dict[str, Any]) -> HoldOutcome:
    status = intent.get("status")
    state = {
        "requires_capture": "held",
        "requires_action": "requires_action",
        "canceled": "canceled",
        # Captured already: only a settled session's hold gets there.
        "succeeded": "held",
    }.get(str(status), "placing")
    error = None
    if status == "requires_payment_method":
        # Authentication failed or the card was declined: nothing is held.
        last = intent.get("last_payment_error") or {}
        state = "failed"
        error = f"{last.get('code') or 'payment_failed'}: {last.get('message') or 'declined'}"
    return HoldOutcome(
        state=state,
        payment_intent_id=str(intent["id"]),
        client_secret=intent.get("client_secret"),
        error=error,
    )


async def place_hold(
    client: stripe.StripeClient,
    *,
    setup_intent_id: str,
    session_id: UUID,
    pod_id: int,
    amount_pence: int,
    currency: str,
    customer_id: str,
    payment_method_id: str,
) -> HoldOutcome:
    """Hold `amount_pence` on the saved card, the customer present (on-session). A
    decline is an outcome; an outage raises."""
    params: PaymentIntentCreateParams = {
        "amount": amount_pence,
        "currency": currency,
        "customer": customer_id,
        "payment_method": payment_method_id,
        "capture_method": "manual",
        "confirm": True,
        "metadata": {
            "setup_intent_id": setup_intent_id,
            "pod_id": str(pod_id),
            "session_id": str(session_id),
            "purpose": "hold",
        },
    }
    for attempt in range(20):
        try:
            answer = await client.raw_request_async(
                "post",
                "/v1/payment_intents",
                **params,
                # One key per SetupIntent: the webhook and the page, and any retry after a
                # crash, get the same hold instead of placing a second one.
                idempotency_key=f"qwip-hold-{setup_intent_id}",
            )
        except stripe.CardError as error:
            declined = _declined(error)
            return HoldOutcome("failed", declined.payment_intent_id, error=declined.error)
        except stripe.IdempotencyError as error:
            # The other start path is placing this very hold right now: wait for its answer.
            if attempt < 19:
                await asyncio.sleep(0.1)
                continue
            logger.error("stripe.idempotency_conflict call=hold error=%s", error.user_message)
            raise PaymentProviderUnavailable() from error
        except _UNREACHABLE as error:
            logger.warning("stripe.unavailable call=hold error=%s", type(error).__name__)
            raise PaymentProviderUnavailable() from error
        except stripe.StripeError as error:
            code = getattr(error, "code", None) or type(error).__name__
            return HoldOutcome(
                "failed",
                None,
                error=f"{code}: {error.user_message or 'the payment provider refused the hold'}",
            )
        intent = answer.data
        if not isinstance(intent, dict) or not isinstance(intent.get("id"), str):
            logger.error("stripe.unexpected_answer call=hold status=%s", answer.code)
            raise PaymentProviderUnavailable()
        return _hold_state(intent)
    raise PaymentProviderUnavailable()  # pragma: no cover - the loop returns or raises


async def retrieve_hold(client: stripe.StripeClient, payment_intent_id: str) -> HoldOutcome:
    """The hold as Stripe has it now (after the cardholder authenticated, say)."""
    try:
        answer = await client.raw_request_async("get", f"/v1/payment_intents/{payment_intent_id}")
    except stripe.InvalidRequestError:
        return HoldOutcome("failed", payment_intent_id, error="the hold is unknown to Stripe")
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=retrieve_hold error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    intent = answer.data
    if not isinstance(intent, dict) or not isinstance(intent.get("id"), str):
        raise PaymentProviderUnavailable()
    return _hold_state(intent)


async def cancel_hold(client: stripe.StripeClient, *, payment_intent_id: str) -> None:
    """Release the hold. One already cancelled (or never held) is released already."""
    try:
        await client.raw_request_async(
            "post",
            f"/v1/payment_intents/{payment_intent_id}/cancel",
            # Derived from the hold: a retry after a timeout or a crash is the same release.
            idempotency_key=f"qwip-hold-cancel-{payment_intent_id}",
        )
    except stripe.InvalidRequestError:
        # Not cancellable: cancelled, failed, or captured before. Stripe's word decides.
        hold = await retrieve_hold(client, payment_intent_id)
        if hold.state == "held":
            logger.error("stripe.hold_not_cancelled payment_intent=%s", payment_intent_id)
            raise PaymentProviderUnavailable() from None
    except stripe.IdempotencyError as error:
        raise PaymentProviderUnavailable() from error
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=cancel_hold error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error


async def capture_hold(
    client: stripe.StripeClient, *, session_id: UUID, payment_intent_id: str, amount_pence: int
) -> ChargeOutcome:
    """Capture `amount_pence` of the hold (the rest is released). An outage raises."""
    try:
        answer = await client.raw_request_async(
            "post",
            f"/v1/payment_intents/{payment_intent_id}/capture",
            amount_to_capture=amount_pence,
            # One key per session: a retry after a timeout or a crash is the same capture.
            idempotency_key=f"qwip-hold-capture-{session_id}",
        )
    except stripe.IdempotencyError as error:
        logger.error("stripe.idempotency_conflict call=capture error=%s", error.user_message)
        raise PaymentProviderUnavailable() from error
    except _UNREACHABLE as error:
        logger.warning("stripe.unavailable call=capture error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    except stripe.StripeError as error:
        # Refused (the hold expired or was released): nothing captured; owed, for the
        # operator to follow up, as a declined charge is.
        code = getattr(error, "code", None) or type(error).__name__
        return ChargeOutcome(
            PaymentStatus.FAILED,
            payment_intent_id,
            f"{code}: {error.user_message or 'the hold could not be captured'}",
        )
    intent = answer.data
    if not isinstance(intent, dict) or not isinstance(intent.get("id"), str):
        logger.error("stripe.unexpected_answer call=capture status=%s", answer.code)
        raise PaymentProviderUnavailable()
    return _outcome_of(intent)
