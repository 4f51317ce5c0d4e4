"""Records read from the database, and the request and response bodies of the API."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from svc.types import PaymentStatus, SessionState

# Records: plain, immutable, built by the data layer.


@dataclass(frozen=True, slots=True)
class Pod:
    id: int
    name: str
    address: str
    price: Decimal
    currency: str
    in_use: bool
    seam_device_id: str | None


@dataclass(frozen=True, slots=True)
class NewPod:
    name: str
    address: str
    price: Decimal
    currency: str
    seam_device_id: str | None = None


@dataclass(frozen=True, slots=True)
class PodChanges:
    """Only the fields that are not None change; `clear_seam_device_id` removes the lock."""

    address: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    seam_device_id: str | None = None
    clear_seam_device_id: bool = False


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session with what the API and the e-mails need of its pod, and the database's clock."""

    id: UUID
    pod_id: int
    pod_name: str
    pod_address: str
    seam_device_id: str | None
    user_email: str | None
    start_time: datetime
    end_time: datetime | None
    price_per_minute: Decimal
    free_minutes: int
    """Free at the start of the session, as offered when it was booked."""
    currency: str
    stripe_customer_id: str
    stripe_payment_method: str | None
    setup_intent_id: str
    access_code: str
    access_code_id: str | None
    access_code_status: str | None
    cost_pence: int | None
    payment_intent_id: str | None
    payment_status: PaymentStatus | None
    payment_error: str | None
    now: datetime

    @property
    def state(self) -> SessionState:
        if self.end_time is None:
            return SessionState.OPEN
        if self.payment_status in (None, PaymentStatus.PENDING):
            return SessionState.ENDED_UNSETTLED
        return SessionState.SETTLED


@dataclass(frozen=True, slots=True)
class QueuedEmail:
    """A message to queue in the outbox; `dedupe_key` makes queueing it twice a no-op."""

    dedupe_key: str
    kind: str
    recipient: str
    payload: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "dedupe_key": self.dedupe_key,
            "kind": self.kind,
            "recipient": self.recipient,
            "payload": self.payload,
        }


@dataclass(frozen=True, slots=True)
class OutboxEmail:
    id: int
    dedupe_key: str
    kind: str
    recipient: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class StartSessionRequest:
    event_id: str | None
    event_type: str | None
    session_id: UUID
    setup_intent_id: str
    pod_id: int
    user_email: str | None
    customer_id: str
    payment_method: str | None
    access_code: str
    free_minutes: int
    started_email: QueuedEmail | None
    unavailable_email: QueuedEmail | None


StartOutcomeKind = Literal["duplicate", "existing", "pod_unavailable", "code_clash", "started"]


@dataclass(frozen=True, slots=True)
class StartOutcome:
    outcome: StartOutcomeKind
    session_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class ChargeClaim:
    """An ended session's cost as fixed (by this caller or an earlier one), and whether
    this caller holds the charge lease."""

    cost_pence: int
    claimed: bool


@dataclass(frozen=True, slots=True)
class EndedSession:
    """A session as its end left it, and whether this caller holds its charge lease."""

    session: SessionRecord
    charge_claimed: bool


# API bodies.


class PodPublic(BaseModel):
    id: int
    name: str
    address: str
    price_per_minute: Decimal = Field(description="Price per minute in major units, exact.")
    currency: str
    in_use: bool

    @classmethod
    def of(cls, pod: Pod) -> "PodPublic":
        return cls(
            id=pod.id,
            name=pod.name,
            address=pod.address,
            price_per_minute=pod.price,
            currency=pod.currency,
            in_use=pod.in_use,
        )


class SessionPreview(BaseModel):
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


class EndSessionResult(BaseModel):
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
