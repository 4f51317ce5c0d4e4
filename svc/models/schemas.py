"""The API's request and response bodies."""

from datetime import datetime
from decimal import Decimal
from typing import Literal
from uuid import UUID

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from svc.models.records import Pod
from svc.types import PaymentStatus


class PodPublic(BaseModel):
    id: int
    name: str
    address: str
    price_per_minute: Decimal = Field(description="Price per minute in major units, exact.")
    currency: str
    in_use: bool
    available: bool = Field(description="Whether it can be booked now: free and in service.")
    out_of_service: str | None = Field(
        description="Why it cannot be booked, in words (its lock is offline, or the "
        "operator's reason); null when in service."
    )

    @classmethod
    def of(cls, pod: Pod) -> "PodPublic":
        reason = pod.out_of_service
        return cls(
            id=pod.id,
            name=pod.name,
            address=pod.address,
            price_per_minute=pod.price,
            currency=pod.currency,
            in_use=pod.in_use,
            available=not pod.in_use and reason is None,
            out_of_service=reason,
        )


class HoldFigures(BaseModel):
    """What became of the card hold placed at booking: the answers that report money carry it."""

    hold_pence: int | None = Field(
        default=None, description="Held on the card at booking, in minor units; null: no hold."
    )
    captured_pence: int | None = Field(
        default=None, description="Captured of the hold; null until captured, or no hold."
    )
    released_pence: int | None = Field(
        default=None, description="Released of the hold; null until released, or no hold."
    )


class SessionPreview(HoldFigures):
    session_id: UUID
    pod_name: str
    start_time: datetime
    end_time: datetime | None
    elapsed_seconds: int
    cost: Decimal = Field(description="Cost so far (or final) in major units, two decimals.")
    cost_pence: int = Field(description="The same in minor units.")
    currency: str
    is_complete: bool
    payment_status: PaymentStatus | None


class SessionStatus(BaseModel):
    session_id: UUID
    pod_name: str
    is_complete: bool
    smart_lock: bool = Field(description="Whether the code is programmed on the pod's smart lock.")
    access_code_status: str = Field(
        description="local (no smart lock), pending, then Seam's unset, setting or set; "
        "removing, removed or expired after the end; failed if the lock never took it."
    )
    lock_has_code: bool | None = Field(
        description="True once the lock has the code; null when the pod has no smart lock."
    )
    backup_code_in_use: bool = Field(
        default=False,
        description="True when the code did not set on the lock and a backup code from the "
        "lock's pool was sent to the customer instead (shown on the session page).",
    )
    first_unlocked_at: datetime | None = Field(
        default=None,
        description="When the lock first reported this session's code opening the door "
        "(Seam's lock.unlocked); null until it has.",
    )
    unlock_count: int = Field(
        default=0, description="How many times the lock reported this session's code opening it."
    )


class LockStatus(BaseModel):
    locked: bool | None = Field(description="Null when the lock does not report it.")
    online: bool


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ErrorBody(BaseModel):
    detail: str


class SetupIntentCreated(BaseModel):
    client_secret: str
    customer_id: str
    setup_intent_id: str


class CreateSetupIntentRequest(BaseModel):
    """What the booking page sends to start saving a card (the pod by name or by id)."""

    model_config = ConfigDict(populate_by_name=True)

    pod_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("podName", "pod_name"),
        max_length=200,
        description="The pod's name (or give podId).",
    )
    pod_id: int | None = Field(
        default=None,
        validation_alias=AliasChoices("podId", "pod_id"),
        ge=1,
        le=2**63 - 1,
        description="The pod's id (or give podName).",
    )
    email: str = Field(
        max_length=254, description="The customer's e-mail, put on the Stripe Customer."
    )
    setup_intent_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("setupIntentId", "setup_intent_id"),
        pattern=r"^seti_[A-Za-z0-9]+$",
        max_length=255,
        description="This browser's earlier, unconfirmed SetupIntent for the pod, to reuse.",
    )
    client_secret: str | None = Field(
        default=None,
        validation_alias=AliasChoices("clientSecret", "client_secret"),
        pattern=r"^seti_[A-Za-z0-9]+_secret_[A-Za-z0-9]+$",
        max_length=255,
        description="That SetupIntent's client secret, proving the browser was given it.",
    )
    turnstile_token: str | None = Field(
        default=None,
        validation_alias=AliasChoices("turnstileToken", "turnstile_token"),
        max_length=4096,
        description="The Cloudflare Turnstile token, when the service asks for one.",
    )


class ConfirmBookingRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    setup_intent_id: str = Field(
        validation_alias=AliasChoices("setup_intent_id", "setupIntentId"),
        pattern=r"^seti_[A-Za-z0-9]+$",
        max_length=255,
        description="The SetupIntent's id, seti_...",
    )
    client_secret: str = Field(
        validation_alias=AliasChoices("client_secret", "clientSecret"),
        pattern=r"^seti_[A-Za-z0-9]+_secret_[A-Za-z0-9]+$",
        max_length=255,
        description="The SetupIntent's client secret, as Stripe.js received it.",
    )


class BookingConfirmed(BaseModel):
    session_id: UUID
    access_code: str
    pod_name: str
    start_time: datetime
    end_session_url: str


class EndSessionRequest(BaseModel):
    session_id: UUID = Field(validation_alias=AliasChoices("sessionId", "session_id"))


class EndSessionResult(HoldFigures):
    status: Literal["success", "failed"]
    session_id: UUID
    final_cost: Decimal
    final_cost_pence: int
    currency: str
    charged: bool
    payment_status: PaymentStatus
    end_time: datetime
    error: str | None


class WebhookAck(BaseModel):
    status: Literal["success", "ignored", "duplicate"]
