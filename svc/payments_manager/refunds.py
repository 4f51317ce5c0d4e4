"""Refunds: one Stripe Refund per part of a requested refund, and Stripe's own list of a
PaymentIntent's refunds (those made in the dashboard included) when an event says so."""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import stripe

from svc.errors import ServiceError
from svc.models.refunds import StripeRefund
from svc.payments_manager.base import _UNREACHABLE, PaymentProviderUnavailable

logger = logging.getLogger(__name__)

# Stripe's refund statuses, in the words session_refunds keeps.
_STATES = {
    "succeeded": "succeeded",
    "pending": "pending",
    "requires_action": "pending",
    "failed": "failed",
    "canceled": "canceled",
}


# Waiting 0.1 s between them: up to half a minute for an answer still in flight.
_IN_FLIGHT_ATTEMPTS = 300


class RefundRefused(ServiceError):
    """Stripe refused the refund itself (already refunded in the dashboard, say): nothing
    was refunded, and a retry would be refused the same way."""

    status_code = 409


@dataclass(frozen=True, slots=True)
class PaymentIntentInfo:
    id: str
    amount_pence: int
    session_id: UUID | None


def _refund_of(data: dict[str, Any]) -> StripeRefund:
    metadata = data.get("metadata") or {}
    ours = str(metadata.get("qwip_refund_id") or "")
    created = data.get("created")
    return StripeRefund(
        id=str(data["id"]),
        amount_pence=int(data.get("amount") or 0),
        state=_STATES.get(str(data.get("status")), "pending"),
        qwip_refund_id=int(ours) if ours.isdigit() else None,
        created=created if isinstance(created, int) else 0,
    )


async def create_refund(
    client: stripe.StripeClient,
    *,
    refund_id: int,
    session_id: UUID,
    payment_intent_id: str,
    amount_pence: int,
) -> StripeRefund:
    """Refund `amount_pence` of the PaymentIntent. A refusal raises RefundRefused; an
    outage PaymentProviderUnavailable (the reserved refund stays, for the same key again)."""
    for attempt in range(_IN_FLIGHT_ATTEMPTS):
        try:
            answer = await client.raw_request_async(
                "post",
                "/v1/refunds",
                payment_intent=payment_intent_id,
                amount=amount_pence,
                metadata={"qwip_refund_id": str(refund_id), "session_id": str(session_id)},
                # One key per reserved refund (the session and our row's id): a command run
                # again after a crash or a timeout gets the first refund back instead of
                # refunding twice.
                idempotency_key=f"qwip-refund-{session_id}-{refund_id}",
            )
        except (stripe.IdempotencyError, stripe.APIError) as error:
            # 409: a request with this key is still being answered (another run sending
            # this very refund, or one that died waiting for the answer): wait for it.
            if error.http_status == 409 and attempt < _IN_FLIGHT_ATTEMPTS - 1:
                await asyncio.sleep(0.1)
                continue
            logger.error("stripe.idempotency_conflict call=refund status=%s", error.http_status)
            raise PaymentProviderUnavailable() from error
        except _UNREACHABLE as error:
            logger.warning("stripe.unavailable call=refund error=%s", type(error).__name__)
            raise PaymentProviderUnavailable() from error
        except stripe.StripeError as error:
            raise RefundRefused(
                error.user_message or "the payment provider refused the refund"
            ) from None
        data = answer.data
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            logger.error("stripe.unexpected_answer call=refund status=%s", answer.code)
            raise PaymentProviderUnavailable()
        return _refund_of(data)
    raise PaymentProviderUnavailable()  # pragma: no cover - the loop returns or raises


async def retrieve_payment_intent(
    client: stripe.StripeClient, payment_intent_id: str
) -> PaymentIntentInfo | None:
    """The PaymentIntent as Stripe has it (None if Stripe does not know it)."""
    try:
        answer = await client.raw_request_async("get", f"/v1/payment_intents/{payment_intent_id}")
    except stripe.InvalidRequestError:
        return None
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=retrieve_intent error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    data = answer.data
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise PaymentProviderUnavailable()
    try:
        session_id = UUID(str((data.get("metadata") or {}).get("session_id")))
    except ValueError:
        session_id = None
    return PaymentIntentInfo(
        id=data["id"], amount_pence=int(data.get("amount") or 0), session_id=session_id
    )


async def list_refunds(client: stripe.StripeClient, payment_intent_id: str) -> list[StripeRefund]:
    """Every refund of the PaymentIntent, oldest first, as Stripe lists them now."""
    try:
        answer = await client.raw_request_async(
            "get", "/v1/refunds", payment_intent=payment_intent_id, limit=100
        )
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=list_refunds error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    data = answer.data
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise PaymentProviderUnavailable()
    refunds = [_refund_of(item) for item in data["data"] if isinstance(item, dict)]
    return sorted(refunds, key=lambda refund: (refund.created, refund.id))
