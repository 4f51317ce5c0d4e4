"""What every Stripe call shares: our errors for Stripe's, the records the calls return,
and the one client."""

import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import stripe

from svc.env import Settings
from svc.errors import ServiceError
from svc.metrics import Metrics
from svc.outbound import TimedStripeClient
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
    card_fingerprint: str | None = None
    """Stripe's fingerprint of the card (the same number, the same one on every Customer),
    when the payment method came expanded."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SetupIntentInfo":
        created = data.get("created")
        method = data.get("payment_method")
        card = (method.get("card") or {}) if isinstance(method, dict) else {}
        fingerprint = card.get("fingerprint")
        return cls(
            id=str(data["id"]),
            status=str(data.get("status")),
            client_secret=data.get("client_secret"),
            customer_id=_id_of(data.get("customer")),
            payment_method_id=_id_of(data.get("payment_method")),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            created=created if isinstance(created, int) and not isinstance(created, bool) else None,
            card_fingerprint=str(fingerprint) if fingerprint else None,
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


def build_client(
    settings: Settings, metrics: Metrics | None = None
) -> tuple[stripe.StripeClient, stripe.AIOHTTPClient]:
    """One async client for the app's life; the HTTP client is returned so it can be closed.

    The SDK's aiohttp transport rather than its httpx one: it spends less CPU per request
    (bench/history.md has the measurement), which is what lets a burst of concurrent
    charges overlap their wait on Stripe instead of queueing for the CPU. Each request
    through it is timed and counted in `metrics`.
    """
    http_client = TimedStripeClient(metrics or Metrics(), timeout=aiohttp.ClientTimeout(total=20))
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
