"""What the data layer returns and takes for refunds and disputes."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


def _moment(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class RefundPart:
    """One Stripe refund of a requested refund: what it takes back from one PaymentIntent.
    Its id (session_refunds.id) is the refund's idempotency key at Stripe."""

    id: int
    request_id: UUID | None
    payment_intent_id: str
    amount_pence: int
    reason: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RefundPart":
        request = data.get("request_id")
        return cls(
            id=int(data["id"]),
            request_id=UUID(str(request)) if request else None,
            payment_intent_id=str(data["payment_intent_id"]),
            amount_pence=int(data["amount_pence"]),
            reason=data.get("reason"),
        )


@dataclass(frozen=True, slots=True)
class RefundReservation:
    """qwip_reserve_refund's answer: `reserved` (the parts to send), `unfinished` (an
    earlier request must be completed first), `too_much`, `nothing` or `unknown`."""

    outcome: str
    refundable_pence: int
    parts: tuple[RefundPart, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RefundReservation":
        return cls(
            outcome=str(data["outcome"]),
            refundable_pence=int(data.get("refundable_pence") or 0),
            parts=tuple(RefundPart.from_json(part) for part in data.get("parts") or []),
        )


@dataclass(frozen=True, slots=True)
class SessionRefunds:
    """A session's money after its end: paid, refunded (Stripe said so), reserved (refunded
    or being refunded), the parts of requests not finished, and the facts of a dispute."""

    paid_pence: int
    reserved_pence: int
    refunded_pence: int
    unfinished: tuple[RefundPart, ...]
    disputed_at: datetime | None
    access_code_emailed_at: datetime | None

    @property
    def refundable_pence(self) -> int:
        return max(0, self.paid_pence - self.reserved_pence)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SessionRefunds":
        return cls(
            paid_pence=int(data["paid_pence"]),
            reserved_pence=int(data["reserved_pence"]),
            refunded_pence=int(data["refunded_pence"]),
            unfinished=tuple(RefundPart.from_json(part) for part in data.get("unfinished") or []),
            disputed_at=_moment(data.get("disputed_at")),
            access_code_emailed_at=_moment(data.get("access_code_emailed_at")),
        )


@dataclass(frozen=True, slots=True)
class StripeRefund:
    """A refund as Stripe lists it. `qwip_refund_id`: our session_refunds row, for the
    refunds the service made (from the refund's metadata); None for the dashboard's.
    `state`: pending, succeeded, failed or canceled (requires_action counts as pending)."""

    id: str
    amount_pence: int
    state: str
    qwip_refund_id: int | None
    created: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "amount": self.amount_pence,
            "state": self.state,
            "qwip_refund_id": self.qwip_refund_id,
        }
