"""Money given back: the operator's refunds of a session, the refunds Stripe tells of (made
in its dashboard), and disputes.

A refund is reserved in the database before Stripe is called, under the session's row
lock, so concurrent refunds never take back more than was paid; the reserved row's id is
the refund's idempotency key at Stripe, so a refund whose command died after Stripe acted
is completed by running the command again, with the same key, and is made once.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

from svc import email_manager
from svc.errors import ServiceError
from svc.models.records import QueuedEmail, SessionRecord
from svc.models.refunds import RefundPart, SessionRefunds, StripeRefund
from svc.models.schemas import WebhookAck
from svc.payments_manager import PaymentProviderUnavailable, StripeEvent
from svc.payments_manager.refunds import (
    RefundRefused,
    create_refund,
    list_refunds,
    retrieve_payment_intent,
)
from svc.services import Services
from svc.sessions import SessionNotFound, find_session
from svc.utils import format_money, short_id

logger = logging.getLogger(__name__)

REFUND_EVENTS = ("charge.refunded", "refund.created", "refund.updated")
DISPUTE_EVENT = "charge.dispute.created"


class RefundNotPossible(ServiceError):
    """The refund asked for cannot be made; nothing was changed."""

    status_code = 409


class RefundNotSent(ServiceError):
    """Stripe could not be reached: the refund stays reserved, for the same command again."""

    status_code = 503


@dataclass(frozen=True, slots=True)
class RefundDone:
    refunded_pence: int
    stripe_refund_ids: tuple[str, ...]
    resumed: bool
    """True when this completed a refund reserved by an earlier run that did not finish."""
    refundable_pence: int
    """What may still be refunded afterwards."""


async def _refunds_of(services: Services, session_id: UUID) -> SessionRefunds:
    found = await services.db.get_session_refunds(session_id)
    if found is None:
        raise SessionNotFound()
    return found


async def refund_session(
    services: Services, session_id: UUID, *, amount_pence: int | None, reason: str | None
) -> RefundDone:
    """Refund `amount_pence` of what the session paid (None: all that is left), or first
    complete a refund an earlier run reserved and did not finish."""
    session = await find_session(services.db, session_id)
    if session.end_time is None:
        raise RefundNotPossible("the session is still open: it has paid nothing yet")
    money = await _refunds_of(services, session_id)
    if money.unfinished:
        return await _send(services, session, money, money.unfinished, reason, resumed=True)
    reservation = await services.db.reserve_refund(
        session_id, request_id=uuid4(), amount_pence=amount_pence, reason=reason
    )
    refundable = format_money(reservation.refundable_pence, session.currency)
    if reservation.outcome == "too_much":
        raise RefundNotPossible(
            f"at most {refundable} ({reservation.refundable_pence} pence) can be refunded "
            "for this session; nothing was refunded"
        )
    if reservation.outcome == "nothing" and money.paid_pence == 0:
        raise RefundNotPossible("nothing can be refunded for this session: it paid nothing")
    if reservation.outcome == "nothing":
        paid = format_money(money.paid_pence, session.currency)
        raise RefundNotPossible(
            f"nothing can be refunded for this session: it paid {paid} and "
            f"{format_money(money.reserved_pence, session.currency)} of it is refunded already"
        )
    if reservation.outcome == "unfinished":
        # Another run reserved a refund in between: complete that one, with its keys.
        money = await _refunds_of(services, session_id)
        return await _send(services, session, money, money.unfinished, reason, resumed=True)
    if reservation.outcome != "reserved":
        raise SessionNotFound()
    return await _send(services, session, money, reservation.parts, reason, resumed=False)


async def _send(
    services: Services,
    session: SessionRecord,
    before: SessionRefunds,
    parts: tuple[RefundPart, ...],
    reason: str | None,
    *,
    resumed: bool,
) -> RefundDone:
    """Each part to Stripe under its own key, recorded as Stripe answers; the e-mails with
    the last part's record."""
    db = services.db
    refunded, ids, refused = 0, [], []
    reserved_before = before.reserved_pence - (sum(p.amount_pence for p in parts) if resumed else 0)
    for index, part in enumerate(parts):
        try:
            stripe_refund = await create_refund(
                services.stripe,
                refund_id=part.id,
                session_id=session.id,
                payment_intent_id=part.payment_intent_id,
                amount_pence=part.amount_pence,
            )
        except RefundRefused as error:
            refused.append(error.message)
            stripe_refund = None
        except PaymentProviderUnavailable:
            raise RefundNotSent(
                "Stripe cannot be reached: the refund of "
                f"{format_money(sum(p.amount_pence for p in parts[index:]), session.currency)} "
                "is reserved and not sent; run the same command again to send it (the same "
                "refund, never a second one)"
            ) from None
        if stripe_refund is not None and stripe_refund.state in ("pending", "succeeded"):
            refunded += part.amount_pence
            ids.append(stripe_refund.id)
        emails = []
        if index == len(parts) - 1 and refunded:
            emails = email_manager.refund_emails(
                session,
                dedupe_key=str(part.request_id or f"part-{part.id}"),
                refunded_pence=refunded,
                refunded_before_pence=max(0, reserved_before),
                paid_pence=before.paid_pence,
                reason=part.reason or reason,
                stripe_refund_ids=ids,
                made_in_dashboard=False,
                operator=services.settings.OPERATOR_EMAIL,
            )
        await db.record_refund(
            part.id,
            stripe_refund_id=stripe_refund.id if stripe_refund else None,
            state=stripe_refund.state if stripe_refund else "failed",
            emails=emails,
        )
    services.outbox.wake()
    logger.info("session.refunded session=%s pence=%s", short_id(session.id), refunded)
    if refused and not refunded:
        raise RefundNotPossible(f"Stripe refused the refund: {'; '.join(refused)}")
    after = await _refunds_of(services, session.id)
    return RefundDone(
        refunded_pence=refunded,
        stripe_refund_ids=tuple(ids),
        resumed=resumed,
        refundable_pence=after.refundable_pence,
    )


# Stripe's events


async def _session_paid_by(services: Services, payment_intent_id: object) -> SessionRecord | None:
    """The session a PaymentIntent paid for, as Stripe's own metadata of it says (the
    event's body is only a pointer), and only if the session knows that PaymentIntent."""
    if not isinstance(payment_intent_id, str) or not payment_intent_id.startswith("pi_"):
        return None
    intent = await retrieve_payment_intent(services.stripe, payment_intent_id)
    if intent is None or intent.session_id is None:
        return None
    session = await services.db.get_session_by_id(intent.session_id)
    if session is None or payment_intent_id not in (
        session.payment_intent_id,
        session.hold_payment_intent_id,
    ):
        return None
    return session


def _without_the_release(session: SessionRecord, refunds: list[StripeRefund]) -> list[StripeRefund]:
    """Stripe books what a partial capture leaves uncaptured as a refund of the hold: that
    one (of the earliest, not ours, of exactly the rest) gave back nothing that was paid."""
    held, captured = session.hold_pence, session.captured_pence
    if held is None or captured is None or captured >= held or not refunds:
        return refunds
    earliest = min(refund.created for refund in refunds)
    for index, refund in enumerate(refunds):
        if (
            refund.created == earliest
            and refund.qwip_refund_id is None
            and refund.amount_pence == held - captured
        ):
            return refunds[:index] + refunds[index + 1 :]
    return refunds


async def _ignored(services: Services, event: StripeEvent, reason: str) -> WebhookAck:
    logger.info("webhook.ignored event_id=%s type=%s reason=%s", event.id, event.type, reason)
    await services.db.record_event(event.id, event.type)
    return WebhookAck(status="ignored")


def _emails_of_unfinished(
    services: Services,
    session: SessionRecord,
    money: SessionRefunds,
    refunds: list[StripeRefund],
) -> list[QueuedEmail]:
    """Our own refunds that Stripe made and whose command did not live to record them: the
    e-mails it would have queued (the same keys, so queued once whoever is first)."""
    made = {r.qwip_refund_id: r for r in refunds if r.state in ("pending", "succeeded")}
    requests: dict[UUID | None, list[RefundPart]] = {}
    for part in money.unfinished:
        if part.id in made:
            requests.setdefault(part.request_id, []).append(part)
    emails = []
    for request_id, parts in requests.items():
        emails += email_manager.refund_emails(
            session,
            dedupe_key=str(request_id or f"part-{parts[-1].id}"),
            refunded_pence=sum(part.amount_pence for part in parts),
            refunded_before_pence=money.reserved_pence - sum(p.amount_pence for p in parts),
            paid_pence=money.paid_pence,
            reason=parts[-1].reason,
            stripe_refund_ids=[made[part.id].id for part in parts],
            made_in_dashboard=False,
            operator=services.settings.OPERATOR_EMAIL,
        )
    return emails


async def reconcile_refunds(services: Services, event: StripeEvent) -> WebhookAck:
    """A refund happened at Stripe (ours, or one made in the dashboard): the session's
    refunds are read again from Stripe and recorded, each once, by its Stripe id."""
    payment_intent_id = event.object.get("payment_intent")
    session = await _session_paid_by(services, payment_intent_id)
    if session is None:
        return await _ignored(services, event, "no_session")
    assert isinstance(payment_intent_id, str)
    refunds = await list_refunds(services.stripe, payment_intent_id)
    if payment_intent_id == session.hold_payment_intent_id:
        refunds = _without_the_release(session, refunds)
    money = await _refunds_of(services, session.id)
    emails = _emails_of_unfinished(services, session, money, refunds)
    for refund in refunds:
        if refund.qwip_refund_id is None and refund.state in ("pending", "succeeded"):
            emails += email_manager.refund_emails(
                session,
                dedupe_key=f"stripe-{refund.id}",
                refunded_pence=refund.amount_pence,
                refunded_before_pence=money.reserved_pence,
                paid_pence=money.paid_pence,
                reason=None,
                stripe_refund_ids=[refund.id],
                made_in_dashboard=True,
                operator=services.settings.OPERATOR_EMAIL,
            )
    outcome = await services.db.sync_refunds(
        session.id,
        payment_intent_id=payment_intent_id,
        refunds=refunds,
        event_id=event.id,
        event_type=event.type,
        emails=emails,
    )
    if outcome == "duplicate":
        return WebhookAck(status="duplicate")
    services.outbox.wake()
    logger.info("refunds.reconciled session=%s event_id=%s", short_id(session.id), event.id)
    return WebhookAck(status="success")


async def record_dispute(services: Services, event: StripeEvent) -> WebhookAck:
    """A customer disputed a charge: the session is marked, the operator given the facts."""
    dispute = event.object
    session = await _session_paid_by(services, dispute.get("payment_intent"))
    dispute_id = dispute.get("id")
    if session is None or not isinstance(dispute_id, str):
        # Still the operator's to answer, in Stripe's dashboard, without our facts.
        alert = email_manager.operator_alert(
            dedupe_key=f"dispute_unknown:{event.id}",
            operator=services.settings.OPERATOR_EMAIL,
            subject="a dispute on a payment that no session knows",
            text=f"Stripe reports dispute {dispute_id} ({dispute.get('reason') or 'no reason'}) "
            f"on PaymentIntent {dispute.get('payment_intent')}, which is not the payment of a "
            "session here. Open it in Stripe's dashboard (Payments, then Disputes) and answer "
            "it there before its deadline.",
        )
        await services.db.record_event(event.id, event.type, alert)
        return WebhookAck(status="ignored")
    money = await _refunds_of(services, session.id)
    due_by = (dispute.get("evidence_details") or {}).get("due_by")
    amount = dispute.get("amount")
    emails = email_manager.dispute_emails(
        session,
        dispute_id=dispute_id,
        dispute_reason=str(dispute.get("reason") or "not given"),
        disputed_pence=amount if isinstance(amount, int) else (session.cost_pence or 0),
        evidence_due_by=datetime.fromtimestamp(due_by, UTC) if isinstance(due_by, int) else None,
        access_code_emailed_at=money.access_code_emailed_at,
        operator=services.settings.OPERATOR_EMAIL,
        unlocks=await services.db.get_session_unlocks(session.id),
    )
    outcome = await services.db.record_dispute(
        session.id, dispute_id=dispute_id, event_id=event.id, event_type=event.type, emails=emails
    )
    if outcome == "duplicate":
        return WebhookAck(status="duplicate")
    services.outbox.wake()
    logger.warning("session.disputed session=%s dispute=%s", short_id(session.id), dispute_id)
    return WebhookAck(status="success")
