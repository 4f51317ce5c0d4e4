"""Saving a card: the Customer and its SetupIntent, as Stripe has them."""

import logging
import secrets
from dataclasses import dataclass

import stripe
from stripe.params import SetupIntentCreateParams

from svc.addresses import valid_recipient
from svc.models.records import Pod
from svc.payments_manager.base import (
    CardSetupFailed,
    NewCardSetup,
    PaymentProviderUnavailable,
    SetupIntentInfo,
    SetupIntentNotFound,
)

logger = logging.getLogger(__name__)


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
        # The card comes with it: its fingerprint, for debts, without a second call.
        setup_intent = await client.v1.setup_intents.retrieve_async(
            setup_intent_id, params={"expand": ["payment_method"]}
        )
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
