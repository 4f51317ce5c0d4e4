"""One typed payload per kind of e-mail, in a union discriminated by `kind`.

The outbox keeps the kind in its own column and the rest as JSON: `stored` writes that JSON
(with the keys it has always had, so rows queued by an older release still send) and `read`
validates it again when the message is sent.
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, TypeAdapter, ValidationError

from svc.types import PaymentStatus

# As datetime.isoformat() writes it ("+00:00"), the form already in queued rows.
IsoDatetime = Annotated[datetime, PlainSerializer(datetime.isoformat, when_used="json")]


class EmailPayloadInvalid(ValueError):
    """A queued message whose JSON does not fit its kind: it cannot be rendered."""


class _Payload(BaseModel):
    # Keys a newer release may add are ignored, not refused.
    model_config = ConfigDict(frozen=True, extra="ignore")


class AccessCodeEmail(_Payload):
    kind: Literal["access_code"] = "access_code"
    access_code: str
    pod_name: str
    pod_address: str
    price_per_minute: Decimal
    currency: str
    end_session_url: str
    # Messages queued before smart locks existed have none.
    smart_lock: bool = False
    # Added by the database when the session really opens.
    start_time: IsoDatetime | None = None


class PodUnavailableEmail(_Payload):
    kind: Literal["pod_unavailable"] = "pod_unavailable"
    pod_name: str
    # Why, in words, when the pod went out of service after the card was set up; None:
    # someone else took it (and messages queued before this field have none).
    out_of_service: str | None = None


class HoldDeclinedEmail(_Payload):
    """The card could not hold the booking's amount: no session started, nothing is owed."""

    kind: Literal["hold_declined"] = "hold_declined"
    pod_name: str
    hold_pence: int
    currency: str
    reason: str


class DebtOutstandingEmail(_Payload):
    """A booking refused while an earlier session is owed: nothing started or was held."""

    kind: Literal["debt_outstanding"] = "debt_outstanding"
    pod_name: str
    owed_pence: int
    currency: str
    pay_url: str


class LockFailedEmail(_Payload):
    kind: Literal["lock_failed"] = "lock_failed"
    pod_name: str


class BackupCodeEmail(_Payload):
    """The session's code did not reach the lock: a backup code from the lock's pool instead."""

    kind: Literal["backup_code"] = "backup_code"
    backup_code: str
    pod_name: str
    end_session_url: str


class ReminderEmail(_Payload):
    """The session nears MAX_SESSION_MINUTES, where the service ends it."""

    kind: Literal["reminder"] = "reminder"
    pod_name: str
    cost_pence: int
    currency: str
    ends_at: IsoDatetime
    end_session_url: str


class _SessionFacts(_Payload):
    session_id: UUID
    pod_name: str
    start_time: IsoDatetime
    end_time: IsoDatetime
    duration_seconds: int
    cost_pence: int
    currency: str


class ReceiptEmail(_SessionFacts):
    kind: Literal["receipt"] = "receipt"
    payment_status: Literal[PaymentStatus.SUCCEEDED, PaymentStatus.NOT_CHARGED]
    # With a hold: held at booking, captured of it, released (none without a hold).
    hold_pence: int | None = None
    captured_pence: int | None = None
    released_pence: int | None = None
    # True when ended by the service at MAX_SESSION_MINUTES (absent otherwise, as before).
    ended_at_limit: bool | None = None
    # Paid on the pay page after the charge to the saved card failed.
    paid_later_pence: int | None = None
    # For the VAT invoice's description (receipts queued before it have none).
    pod_address: str | None = None


class PaymentFailedEmail(_SessionFacts):
    kind: Literal["payment_failed"] = "payment_failed"
    error: str
    # The pay page (messages queued before it existed have none).
    pay_url: str | None = None


class PaymentFailedOperatorEmail(_SessionFacts):
    kind: Literal["payment_failed_operator"] = "payment_failed_operator"
    error: str
    customer_email: str
    stripe_customer_id: str | None = None
    # The session's pay page, as the customer was sent it (absent in rows queued before).
    pay_url: str | None = None


class RefundEmail(_Payload):
    """Money given back to the customer: by the operator's command or in Stripe."""

    kind: Literal["refund"] = "refund"
    session_id: UUID
    pod_name: str
    pod_address: str | None = None
    end_time: IsoDatetime
    refunded_pence: int
    paid_pence: int
    currency: str


class RefundOperatorEmail(RefundEmail):
    kind: Literal["refund_operator"] = "refund_operator"  # type: ignore[assignment]
    customer_email: str
    refunded_before_pence: int
    reason: str | None = None
    made_in_dashboard: bool = False
    stripe_refund_ids: list[str] = []


class DisputeOperatorEmail(_Payload):
    """A chargeback: the facts Stripe asks for as evidence, for the operator to answer."""

    kind: Literal["dispute_operator"] = "dispute_operator"
    session_id: UUID
    dispute_id: str
    dispute_reason: str
    disputed_pence: int
    evidence_due_by: IsoDatetime | None = None
    customer_email: str
    pod_name: str
    pod_address: str
    start_time: IsoDatetime
    end_time: IsoDatetime | None = None
    cost_pence: int | None = None
    currency: str
    access_code_emailed_at: IsoDatetime | None = None
    access_code_status: str | None = None
    seam_device_id: str | None = None
    # Seam's lock.unlocked by the session's code (absent in rows queued before they were kept).
    first_unlocked_at: IsoDatetime | None = None
    unlock_count: int = 0


class OperatorAlertEmail(_Payload):
    kind: Literal["operator_alert"] = "operator_alert"
    subject: str
    text: str


EmailPayload = Annotated[
    AccessCodeEmail
    | PodUnavailableEmail
    | HoldDeclinedEmail
    | DebtOutstandingEmail
    | LockFailedEmail
    | BackupCodeEmail
    | ReminderEmail
    | ReceiptEmail
    | PaymentFailedEmail
    | PaymentFailedOperatorEmail
    | RefundEmail
    | RefundOperatorEmail
    | DisputeOperatorEmail
    | OperatorAlertEmail,
    Field(discriminator="kind"),
]
_PAYLOADS: TypeAdapter[EmailPayload] = TypeAdapter(EmailPayload)


def stored(payload: EmailPayload) -> dict[str, Any]:
    """The outbox's JSON for a payload: its fields but the kind, which has a column."""
    return payload.model_dump(mode="json", exclude={"kind"}, exclude_none=True)


def read(kind: str, stored_payload: dict[str, Any]) -> EmailPayload:
    """The typed payload of a queued message, or EmailPayloadInvalid saying what is wrong."""
    try:
        payload = _PAYLOADS.validate_python({**stored_payload, "kind": kind})
    except ValidationError as error:
        problems = "; ".join(
            f"{_field(problem['loc'], kind)}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        )
        raise EmailPayloadInvalid(f"a queued {kind!r} e-mail is invalid: {problems}") from None
    if isinstance(payload, AccessCodeEmail) and payload.start_time is None:
        raise EmailPayloadInvalid(
            "a queued 'access_code' e-mail is invalid: start_time: missing (the database adds "
            "it when the session opens)"
        )
    return payload


def _field(location: tuple[int | str, ...], kind: str) -> str:
    # Pydantic starts the location with the union's tag; the kind is said already.
    path = location[1:] if location[:1] == (kind,) else location
    return ".".join(str(part) for part in path) or "kind"
