"""Rows, as asyncpg records (Decimal, datetime, UUID) or as PostgREST's JSON (strings for
all three), turned into records; and records turned into the JSON the SQL functions take."""

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from svc import request_ids
from svc.addresses import valid_recipient
from svc.models.records import (
    REQUEST_ID_KEY,
    CardHold,
    ChargeClaim,
    EndedSession,
    OutboxEmail,
    Pod,
    QueuedEmail,
    SessionRecord,
    StartOutcome,
)
from svc.types import PaymentStatus, StartOutcomeKind

logger = logging.getLogger(__name__)


# Rows reach these as asyncpg records (Decimal, datetime, UUID) or as PostgREST's JSON
# (strings for all three); each converter takes either.


def _decimal(value: object) -> Decimal:
    # A JSON number would already be a binary float: prices are read as text instead.
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        return Decimal(value)
    raise TypeError(f"expected an exact decimal, got {type(value).__name__}")


def _optional_decimal(value: object) -> Decimal | None:
    return None if value is None else _decimal(value)


def _timestamp(value: object) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(parsed, datetime) or parsed.tzinfo is None:
        raise TypeError(f"expected a timestamp with a time zone, got {value!r}")
    return parsed


def _optional_timestamp(value: object) -> datetime | None:
    return None if value is None else _timestamp(value)


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def pod_from_row(row: Mapping[str, Any]) -> Pod:
    return Pod(
        id=row["id"],
        name=row["name"],
        address=row["address"],
        price=_decimal(row["price"]),
        currency=row["currency"],
        in_use=row["in_use"],
        seam_device_id=row["seam_device_id"],
        disabled_reason=row.get("disabled_reason"),
        lock_online=row.get("lock_online"),
        lock_battery_level=_optional_decimal(row.get("lock_battery_level")),
        lock_battery_low=bool(row.get("lock_battery_low")),
    )


def _session(row: Mapping[str, Any]) -> SessionRecord:
    status = row["payment_status"]
    return SessionRecord(
        id=_uuid(row["id"]),
        pod_id=row["pod_id"],
        pod_name=row["pod_name"],
        pod_address=row["pod_address"],
        seam_device_id=row["seam_device_id"],
        user_email=row["user_email"],
        start_time=_timestamp(row["start_time"]),
        end_time=_optional_timestamp(row["end_time"]),
        price_per_minute=_decimal(row["price_per_minute"]),
        free_minutes=row["free_minutes"],
        currency=row["currency"],
        stripe_customer_id=row["stripe_customer_id"],
        stripe_payment_method=row["stripe_payment_method"],
        setup_intent_id=row["setup_intent_id"],
        access_code=row["access_code"],
        access_code_id=row["access_code_id"],
        access_code_status=row["access_code_status"],
        cost_pence=row["cost_pence"],
        payment_intent_id=row["payment_intent_id"],
        payment_status=PaymentStatus(status) if status is not None else None,
        payment_error=row["payment_error"],
        now=_timestamp(row["now"]),
        # A row from a release before holds (0007) has none of these.
        hold_payment_intent_id=row.get("hold_payment_intent_id"),
        hold_pence=row.get("hold_pence"),
        captured_pence=row.get("captured_pence"),
        released_pence=row.get("released_pence"),
    )


def _ended_session(row: Mapping[str, Any]) -> EndedSession:
    claimed = row["charge_claimed"]
    if not isinstance(claimed, bool):
        raise TypeError(f"expected a flag for the charge lease, got {claimed!r}")
    return EndedSession(_session(row), charge_claimed=claimed)


def _charge_claim(row: Mapping[str, Any]) -> ChargeClaim:
    cost, claimed = row["cost_pence"], row["claimed"]
    if not isinstance(cost, int) or not isinstance(claimed, bool):
        raise TypeError(f"expected a cost in pence and a flag, got {dict(row)!r}")
    return ChargeClaim(cost_pence=cost, claimed=claimed)


def _outbox_email(row: Mapping[str, Any]) -> OutboxEmail:
    return OutboxEmail(
        id=row["id"],
        dedupe_key=row["dedupe_key"],
        kind=row["kind"],
        recipient=row["recipient"],
        payload=row["payload"],
        attempts=row["attempts"],
    )


def _start_outcome(result: Mapping[str, Any]) -> StartOutcome:
    session_id = result.get("session_id")
    return StartOutcome(
        outcome=StartOutcomeKind(result["outcome"]),
        session_id=_uuid(session_id) if session_id else None,
    )


def _card_hold(setup_intent_id: str, data: Mapping[str, Any]) -> CardHold:
    pod_id = data.get("pod_id")
    return CardHold(
        setup_intent_id=setup_intent_id,
        session_id=_uuid(data["session_id"]),
        amount_pence=int(data["amount_pence"]),
        currency=str(data["currency"]),
        payment_intent_id=data.get("payment_intent_id"),
        state=str(data.get("state") or "releasing"),
        error=data.get("error"),
        pod_id=int(pod_id) if pod_id is not None else None,
    )


def _email_json(email: QueuedEmail | None) -> dict[str, Any] | None:
    """The queue's JSON for a message, or None (nothing queued) when its recipient is not
    an e-mail address: such a message could never be sent, and must never reach a header."""
    if email is None:
        return None
    if valid_recipient(email.recipient) is None:
        if email.recipient:
            logger.error("email.not_queued kind=%s reason=invalid_recipient", email.kind)
        return None
    queued = email.as_json()
    if (request_id := request_ids.current()) is not None:
        # The request that queued it: the sender's lines about the message carry its id.
        queued["payload"] = {**queued["payload"], REQUEST_ID_KEY: request_id}
    return queued


def _emails_json(emails: Sequence[QueuedEmail]) -> list[dict[str, Any]]:
    return [json for json in map(_email_json, emails) if json is not None]


def check_message(constraint: str | None) -> str:
    """The pod rule a refused insert or update broke, in words for the operator."""
    return {
        "pods_name_shape": "A pod name is 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit.",
        "pods_price_not_negative": "The price per minute cannot be negative.",
        "pods_currency_code": "The currency must be a three-letter code such as gbp.",
    }.get(constraint or "", f"The pod breaks the rule {constraint}.")
