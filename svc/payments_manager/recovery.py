"""Paying an owed session on-session (the pay page): a PaymentIntent per attempt, a
SetupIntent for a card other than the saved one, and the card's fingerprint."""

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import stripe
from stripe.params import PaymentIntentCreateParams

from svc.payments_manager.base import (
    _UNREACHABLE,
    PaymentProviderUnavailable,
    SetupIntentInfo,
    SetupIntentNotFound,
    _id_of,
)

logger = logging.getLogger(__name__)

RECOVERY = "recovery"
"""The `purpose` in the metadata of what the pay page makes at Stripe."""


@dataclass(frozen=True, slots=True)
class RecoveryIntent:
    """A pay-page PaymentIntent as Stripe has it."""

    id: str
    status: str
    amount: int
    currency: str
    client_secret: str | None
    payment_method_id: str | None
    metadata: dict[str, str]
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecoveryIntent":
        last = data.get("last_payment_error") or {}
        error = None
        if last:
            error = f"{last.get('code') or 'payment_failed'}: {last.get('message') or 'declined'}"
        amount = data.get("amount")
        return cls(
            id=str(data["id"]),
            status=str(data.get("status")),
            amount=amount if isinstance(amount, int) else 0,
            currency=str(data.get("currency") or ""),
            client_secret=data.get("client_secret"),
            payment_method_id=_id_of(data.get("payment_method")),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            error=error,
        )

    @classmethod
    def refused(cls, *, amount: int, currency: str, error: str) -> "RecoveryIntent":
        """Refused before Stripe answered with a PaymentIntent: nothing was taken."""
        return cls("", "requires_payment_method", amount, currency, None, None, {}, error)

    @classmethod
    def gone(cls, payment_intent_id: str) -> "RecoveryIntent":
        """One Stripe no longer knows: nothing can be paid through it."""
        return cls(payment_intent_id, "canceled", 0, "", None, None, {})


def _intent_of(answer: Any) -> RecoveryIntent:
    intent = answer.data
    if not isinstance(intent, dict) or not isinstance(intent.get("id"), str):
        logger.error("stripe.unexpected_answer call=recovery status=%s", answer.code)
        raise PaymentProviderUnavailable()
    return RecoveryIntent.from_dict(intent)


async def pay_owed(
    client: stripe.StripeClient,
    *,
    session_id: UUID,
    attempt: int,
    amount_pence: int,
    currency: str,
    customer_id: str,
    payment_method_id: str,
) -> RecoveryIntent:
    """Charge the owed amount with the customer present (their bank may ask them to
    authenticate: `requires_action`). A decline is an outcome; an outage raises."""
    params: PaymentIntentCreateParams = {
        "amount": amount_pence,
        "currency": currency,
        "customer": customer_id,
        "payment_method": payment_method_id,
        "confirm": True,
        "metadata": {"session_id": str(session_id), "purpose": RECOVERY, "attempt": str(attempt)},
    }
    for tries_left in reversed(range(20)):
        try:
            answer = await client.raw_request_async(
                "post",
                "/v1/payment_intents",
                **params,
                # One key per session and attempt: a pay link used twice at once, or a
                # retry after a timeout, gets this attempt's PaymentIntent, not a second one.
                idempotency_key=f"qwip-recovery-{session_id}-{attempt}",
            )
        except stripe.CardError as error:
            # Declined: the PaymentIntent exists, and says why.
            details = error.json_body.get("error", {}) if isinstance(error.json_body, dict) else {}
            intent_id = _id_of(details.get("payment_intent"))
            if intent_id is None:
                return RecoveryIntent.refused(
                    amount=amount_pence,
                    currency=currency,
                    error=f"{error.code or 'card_declined'}: {error.user_message or 'declined'}",
                )
            return await retrieve_recovery(client, intent_id)
        except stripe.IdempotencyError as error:
            # The same attempt is being made by another request right now: wait for it.
            if tries_left:
                await asyncio.sleep(0.1)
                continue
            logger.error("stripe.idempotency_conflict call=recovery error=%s", error.user_message)
            raise PaymentProviderUnavailable() from error
        except stripe.InvalidRequestError as error:
            # Stripe refused the request itself (a card no longer usable): an outcome.
            return RecoveryIntent.refused(
                amount=amount_pence,
                currency=currency,
                error=f"{error.code or 'invalid_request'}: "
                f"{error.user_message or 'the payment provider refused this card'}",
            )
        except stripe.StripeError as error:
            logger.warning("stripe.unavailable call=recovery error=%s", type(error).__name__)
            raise PaymentProviderUnavailable() from error
        return _intent_of(answer)
    raise PaymentProviderUnavailable()  # pragma: no cover - the loop returns or raises


async def retrieve_recovery(client: stripe.StripeClient, payment_intent_id: str) -> RecoveryIntent:
    """The PaymentIntent as Stripe has it now: what the session is marked paid on."""
    try:
        answer = await client.raw_request_async("get", f"/v1/payment_intents/{payment_intent_id}")
    except stripe.InvalidRequestError:
        raise PaymentIntentNotFound() from None
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=retrieve_recovery error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    return _intent_of(answer)


async def cancel_recovery(client: stripe.StripeClient, payment_intent_id: str) -> RecoveryIntent:
    """Cancel an attempt the customer left (another card chosen): an old tab can then no
    longer complete it. One that cannot be cancelled any more is answered as it stands."""
    try:
        answer = await client.raw_request_async(
            "post",
            f"/v1/payment_intents/{payment_intent_id}/cancel",
            # Derived from the PaymentIntent: a retry is the same cancellation.
            idempotency_key=f"qwip-recovery-cancel-{payment_intent_id}",
        )
    except stripe.InvalidRequestError:
        return await retrieve_recovery(client, payment_intent_id)
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=cancel_recovery error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    return _intent_of(answer)


class PaymentIntentNotFound(Exception):
    """Stripe does not know the PaymentIntent."""


async def create_card_setup(
    client: stripe.StripeClient, *, session_id: UUID, customer_id: str
) -> tuple[str, str]:
    """A SetupIntent for another card of the session's Customer: (its id, its client
    secret). Its metadata names the session, so it can pay only that session."""
    try:
        setup_intent = await client.v1.setup_intents.create_async(
            params={
                "customer": customer_id,
                "usage": "on_session",
                "metadata": {"session_id": str(session_id), "purpose": RECOVERY},
            }
        )
    except _UNREACHABLE as error:
        logger.warning("stripe.unavailable call=recovery_setup error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    except stripe.StripeError as error:
        logger.error("stripe.setup_failed call=recovery_setup error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    assert setup_intent.client_secret is not None
    return setup_intent.id, setup_intent.client_secret


async def retrieve_card_setup(client: stripe.StripeClient, setup_intent_id: str) -> SetupIntentInfo:
    try:
        setup_intent = await client.v1.setup_intents.retrieve_async(setup_intent_id)
    except stripe.InvalidRequestError:
        raise SetupIntentNotFound() from None
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=retrieve_card_setup error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    return SetupIntentInfo.from_dict(setup_intent.to_dict())
