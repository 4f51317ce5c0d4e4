"""Every Stripe call of the service, and the webhook's signature check.

Stripe's errors stop here: each function turns them into one of our errors, or into an
outcome (a declined card is an outcome, not a failure of ours).
"""

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import aiohttp
import stripe
from stripe.params import PaymentIntentCreateParams, SetupIntentCreateParams

from svc.addresses import valid_recipient
from svc.env import Settings
from svc.errors import ServiceError
from svc.records import Pod
from svc.types import PaymentStatus

logger = logging.getLogger(__name__)

WEBHOOK_TOLERANCE_SECONDS = 300


class PaymentProviderUnavailable(ServiceError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__(
            "The payment provider cannot be reached right now; nothing was charged. "
            "Please try again in a minute."
        )


class CardSetupFailed(ServiceError):
    status_code = 502

    def __init__(self) -> None:
        super().__init__("The payment provider could not start the card setup; please try again.")


class SetupIntentNotFound(ServiceError):
    status_code = 404

    def __init__(self) -> None:
        super().__init__("No card setup with this id.")


class InvalidWebhook(ServiceError):
    status_code = 400


@dataclass(frozen=True, slots=True)
class SetupIntentInfo:
    """What the service needs of a SetupIntent, as Stripe's API answers for it."""

    id: str
    status: str
    client_secret: str | None
    customer_id: str | None
    payment_method_id: str | None
    metadata: dict[str, str]
    created: int | None = None
    """When Stripe created it, in seconds since the epoch."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SetupIntentInfo":
        created = data.get("created")
        return cls(
            id=str(data["id"]),
            status=str(data.get("status")),
            client_secret=data.get("client_secret"),
            customer_id=_id_of(data.get("customer")),
            payment_method_id=_id_of(data.get("payment_method")),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            created=created if isinstance(created, int) and not isinstance(created, bool) else None,
        )


@dataclass(frozen=True, slots=True)
class NewCardSetup:
    """A SetupIntent just made for a new Customer: what the page needs to confirm the card."""

    client_secret: str
    customer_id: str
    setup_intent_id: str


@dataclass(frozen=True, slots=True)
class StripeEvent:
    id: str
    type: str
    object: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    status: PaymentStatus
    payment_intent_id: str | None
    error: str | None


def _id_of(value: object) -> str | None:
    """An id, whether Stripe sent the id itself or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def build_client(settings: Settings) -> tuple[stripe.StripeClient, stripe.AIOHTTPClient]:
    """One async client for the app's life; the HTTP client is returned so it can be closed.

    The SDK's aiohttp transport rather than its httpx one: it spends less CPU per request
    (bench/history.md has the measurement), which is what lets a burst of concurrent
    charges overlap their wait on Stripe instead of queueing for the CPU.
    """
    http_client = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=20))
    base = settings.stripe_api_base
    client = stripe.StripeClient(
        settings.stripe_secret,
        http_client=http_client,
        # The client retries nothing unless told; these retries reuse the idempotency key.
        max_network_retries=2,
        base_addresses={"api": base} if base else {},
    )
    return client, http_client


_UNREACHABLE = (
    stripe.APIConnectionError,
    stripe.APIError,
    stripe.RateLimitError,
    stripe.AuthenticationError,
    stripe.PermissionError,
)


async def create_setup_intent(
    client: stripe.StripeClient, *, pod: Pod, email: str | None
) -> NewCardSetup:
    """A Customer and a SetupIntent that saves their card for an off-session charge later."""
    try:
        customer = await client.v1.customers.create_async(params={"email": email} if email else {})
        params: SetupIntentCreateParams = {
            "customer": customer.id,
            "usage": "off_session",
            "metadata": {"pod_id": str(pod.id), "pod_name": pod.name},
        }
        setup_intent = await client.v1.setup_intents.create_async(params=params)
    except stripe.StripeError as error:
        logger.error("stripe.setup_failed pod=%s error=%s", pod.name, type(error).__name__)
        raise CardSetupFailed() from error
    assert setup_intent.client_secret is not None
    return NewCardSetup(
        client_secret=setup_intent.client_secret,
        customer_id=customer.id,
        setup_intent_id=setup_intent.id,
    )


# A SetupIntent still waiting for a card: the page may confirm it (again, after a decline
# or a failed authentication, which put it back to requires_payment_method).
_UNCONFIRMED = ("requires_payment_method", "requires_confirmation")


async def reusable_setup_intent(
    client: stripe.StripeClient,
    *,
    setup_intent_id: str,
    client_secret: str,
    pod: Pod,
    email: str,
) -> NewCardSetup | None:
    """The browser's own unconfirmed SetupIntent for this pod and e-mail, as Stripe has it
    now, or None when it cannot be reused (unknown, not this secret, confirmed, cancelled,
    another pod or another e-mail)."""
    try:
        setup_intent = await client.v1.setup_intents.retrieve_async(
            setup_intent_id, params={"expand": ["customer"]}
        )
    except stripe.InvalidRequestError:
        return None
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=reuse_setup_intent error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    data = setup_intent.to_dict()
    secret = data.get("client_secret")
    customer = data.get("customer")
    if not (
        isinstance(secret, str)
        # The secret proves the caller is the browser that was given this SetupIntent.
        and secrets.compare_digest(secret.encode(), client_secret.encode())
        and data.get("status") in _UNCONFIRMED
        and (data.get("metadata") or {}).get("pod_id") == str(pod.id)
        and isinstance(customer, dict)
        and not customer.get("deleted")
        and str(customer.get("email") or "").lower() == email.lower()
    ):
        return None
    return NewCardSetup(
        client_secret=secret, customer_id=str(customer["id"]), setup_intent_id=setup_intent.id
    )


async def retrieve_setup_intent(
    client: stripe.StripeClient, setup_intent_id: str
) -> SetupIntentInfo:
    """The SetupIntent as Stripe has it now: what a start is decided on, never an event's copy."""
    try:
        setup_intent = await client.v1.setup_intents.retrieve_async(setup_intent_id)
    except stripe.InvalidRequestError:
        # Stripe refused the id itself: unknown, or not one of ours.
        raise SetupIntentNotFound() from None
    except stripe.StripeError as error:
        logger.warning(
            "stripe.unavailable call=retrieve_setup_intent error=%s", type(error).__name__
        )
        raise PaymentProviderUnavailable() from error
    return SetupIntentInfo.from_dict(setup_intent.to_dict())


@dataclass(frozen=True, slots=True)
class CustomerEmail:
    """The customer's e-mail address, and what Stripe gave that is not one."""

    address: str | None
    invalid: tuple[str, ...] = ()


async def customer_email(
    client: stripe.StripeClient, *, customer_id: str | None, payment_method_id: str | None
) -> CustomerEmail:
    """The Customer's e-mail, else the one given with the card (billing details); either
    only if it is an e-mail address (a billing e-mail is whatever the cardholder typed)."""
    invalid: list[str] = []
    try:
        if customer_id:
            customer = (await client.v1.customers.retrieve_async(customer_id)).to_dict()
            if not customer.get("deleted") and customer.get("email"):
                email = str(customer["email"])
                if valid_recipient(email):
                    return CustomerEmail(email)
                invalid.append(email)
        if payment_method_id:
            method = (await client.v1.payment_methods.retrieve_async(payment_method_id)).to_dict()
            billing = (method.get("billing_details") or {}).get("email")
            if billing:
                if valid_recipient(str(billing)):
                    return CustomerEmail(str(billing), tuple(invalid))
                invalid.append(str(billing))
    except stripe.StripeError as error:
        logger.warning("stripe.unavailable call=customer_email error=%s", type(error).__name__)
        raise PaymentProviderUnavailable() from error
    if invalid:
        logger.warning("stripe.invalid_email customer=%s count=%s", customer_id, len(invalid))
    return CustomerEmail(None, tuple(invalid))


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


# Holds: a manual-capture PaymentIntent placed at booking, captured or cancelled at the end.


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
