"""What to queue when money goes back to a customer, and when a customer disputes a charge."""

from collections.abc import Sequence
from datetime import datetime

from svc.email_manager.messages import queued
from svc.email_manager.schemas import DisputeOperatorEmail, RefundEmail, RefundOperatorEmail
from svc.models.records import QueuedEmail, SessionRecord, SessionUnlocks


def refund_emails(
    session: SessionRecord,
    *,
    dedupe_key: str,
    refunded_pence: int,
    refunded_before_pence: int,
    paid_pence: int,
    reason: str | None,
    stripe_refund_ids: Sequence[str],
    made_in_dashboard: bool,
    operator: str | None,
) -> list[QueuedEmail]:
    """The customer's refund e-mail and the operator's account of it; `dedupe_key` names
    the refund (the operator's request, or Stripe's refund id), so each is queued once."""
    assert session.end_time is not None
    refund = RefundEmail(
        session_id=session.id,
        pod_name=session.pod_name,
        pod_address=session.pod_address,
        end_time=session.end_time,
        refunded_pence=refunded_pence,
        paid_pence=paid_pence,
        currency=session.currency,
    )
    emails = []
    if session.user_email:
        emails.append(
            queued(refund, dedupe_key=f"refund:{dedupe_key}", recipient=session.user_email)
        )
    if operator:
        told = RefundOperatorEmail(
            **dict(refund, kind="refund_operator"),
            customer_email=session.user_email or "",
            refunded_before_pence=refunded_before_pence,
            reason=reason,
            made_in_dashboard=made_in_dashboard,
            stripe_refund_ids=list(stripe_refund_ids),
        )
        emails.append(queued(told, dedupe_key=f"refund_operator:{dedupe_key}", recipient=operator))
    return emails


def dispute_emails(
    session: SessionRecord,
    *,
    dispute_id: str,
    dispute_reason: str,
    disputed_pence: int,
    evidence_due_by: datetime | None,
    access_code_emailed_at: datetime | None,
    operator: str | None,
    unlocks: SessionUnlocks | None = None,
) -> list[QueuedEmail]:
    if not operator:
        return []
    unlocks = unlocks or SessionUnlocks()
    told = DisputeOperatorEmail(
        session_id=session.id,
        dispute_id=dispute_id,
        dispute_reason=dispute_reason,
        disputed_pence=disputed_pence,
        evidence_due_by=evidence_due_by,
        customer_email=session.user_email or "",
        pod_name=session.pod_name,
        pod_address=session.pod_address,
        start_time=session.start_time,
        end_time=session.end_time,
        cost_pence=session.cost_pence,
        currency=session.currency,
        access_code_emailed_at=access_code_emailed_at,
        access_code_status=session.access_code_status,
        seam_device_id=session.seam_device_id,
        first_unlocked_at=unlocks.first_unlocked_at,
        unlock_count=unlocks.unlock_count,
    )
    return [queued(told, dedupe_key=f"dispute_operator:{dispute_id}", recipient=operator)]
