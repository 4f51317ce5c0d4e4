"""A session once started: its running cost, its end, and its charge, exactly once.

The end time is fixed once, by the statement that also hands the session's charge lease to
its caller; whoever holds the lease charges, with an idempotency key derived from the
session id, and records the outcome. Stripe's own payment events are reconciled through
the same function that records it, which only moves a payment forward.
"""

import asyncio
import logging
import time
from dataclasses import replace
from uuid import UUID

from svc import email_manager, payments, payments_manager
from svc.database_accessor import Database
from svc.errors import ServiceError
from svc.models.records import Pod, SessionRecord
from svc.models.schemas import EndSessionResult, SessionPreview, WebhookAck
from svc.payments_manager import PaymentProviderUnavailable, StripeEvent
from svc.services import Services
from svc.types import AccessCodeStatus, PaymentRecorded, PaymentStatus, SessionState
from svc.utils import compute_cost_pence, elapsed_seconds, pence_to_major, short_id

logger = logging.getLogger(__name__)

# How long a second end-session call waits for the first one's charge to finish.
CHARGE_WAIT_SECONDS = 25.0


class PodNotFound(ServiceError):
    status_code = 404

    def __init__(self, description: str) -> None:
        super().__init__(f"No pod {description}.")


class SessionNotFound(ServiceError):
    status_code = 404

    def __init__(self) -> None:
        super().__init__("No session with this id.")


# Pods and previews


async def find_pod(db: Database, *, name: str | None = None, pod_id: int | None = None) -> Pod:
    if pod_id is not None:
        pod = await db.get_pod_by_id(pod_id)
        if pod is None:
            raise PodNotFound(f"with id {pod_id}")
        return pod
    assert name is not None
    pod = await db.get_pod_by_name(name)
    if pod is None:
        raise PodNotFound(f"named {name!r}")
    return pod


async def find_session(db: Database, session_id: UUID) -> SessionRecord:
    session = await db.get_session_by_id(session_id)
    if session is None:
        raise SessionNotFound()
    return session


def session_cost_pence(session: SessionRecord) -> int:
    """The fixed cost once recorded; until then the cost up to the end, or up to now.

    Once the session has ended, every input here is fixed (its own price and free minutes,
    its end, its code's fate), so every caller and every retry of its charge comes to the
    same figure, whether or not the database holds it yet."""
    if session.cost_pence is not None:
        return session.cost_pence
    if session.access_code_status == AccessCodeStatus.FAILED:
        # The lock never took the code: the customer could not get in.
        return 0
    return compute_cost_pence(
        start=session.start_time,
        end=session.end_time or session.now,
        price_per_minute=session.price_per_minute,
        free_minutes=session.free_minutes,
    )


def preview_of(session: SessionRecord) -> SessionPreview:
    pence = session_cost_pence(session)
    # Validated, though every value is already of its field's type: pydantic's validation
    # runs in its compiled core, where model_construct is Python (2 µs against 4, on the
    # busiest answer the service gives).
    return SessionPreview(
        session_id=session.id,
        pod_name=session.pod_name,
        start_time=session.start_time,
        end_time=session.end_time,
        elapsed_seconds=elapsed_seconds(session.start_time, session.end_time or session.now),
        cost=pence_to_major(pence),
        cost_pence=pence,
        currency=session.currency,
        is_complete=session.end_time is not None,
        payment_status=session.payment_status,
        hold_pence=session.hold_pence,
        captured_pence=session.captured_pence,
        released_pence=session.released_pence,
    )


async def preview_session(services: Services, session_id: UUID) -> SessionPreview:
    return preview_of(await find_session(services.db, session_id))


# Ending and charging


def result_of(session: SessionRecord) -> EndSessionResult:
    assert session.end_time is not None
    status = session.payment_status or PaymentStatus.PENDING
    failed = status in (PaymentStatus.FAILED, PaymentStatus.REQUIRES_ACTION)
    cost = session_cost_pence(session)
    return EndSessionResult(
        status="failed" if failed else "success",
        session_id=session.id,
        final_cost=pence_to_major(cost),
        final_cost_pence=cost,
        currency=session.currency,
        charged=status is PaymentStatus.SUCCEEDED,
        payment_status=status,
        end_time=session.end_time,
        error=session.payment_error if failed else None,
        hold_pence=session.hold_pence,
        captured_pence=session.captured_pence,
        released_pence=session.released_pence,
    )


async def end_session(services: Services, session_id: UUID) -> EndSessionResult:
    """Fix the end once, charge once, answer every caller with the same figures."""
    settings = services.settings
    # One statement ends the session and hands its charge to this caller if nobody has it,
    # so that the charge leaves at once: what keeps ends quick when Stripe is slow.
    ended = await services.db.end_session(
        session_id,
        max_minutes=settings.MAX_SESSION_MINUTES,
        lease_seconds=settings.CHARGE_LEASE_SECONDS,
    )
    if ended is None:
        raise SessionNotFound()
    if services.seam is not None:
        # Its code comes off the lock in the background: Seam never holds up the charge.
        services.lock_work.wake()
    if ended.session.state is SessionState.SETTLED:
        return result_of(ended.session)
    return result_of(await settle(services, ended.session, claimed=ended.charge_claimed))


async def settle(
    services: Services, session: SessionRecord, *, claimed: bool = False
) -> SessionRecord:
    """Bring an ended session's payment to an outcome, or leave it pending for a retry.
    `claimed`: the caller holds the charge lease already."""
    db, settings = services.db, services.settings
    # The cost fixed before (by another caller, or a first try Stripe never answered), or
    # ours from the session's fixed end: the same figure either way.
    cost = session_cost_pence(session)
    deadline = time.monotonic() + CHARGE_WAIT_SECONDS
    while not claimed:
        claim = await db.claim_charge(
            session.id, cost_pence=cost, lease_seconds=settings.CHARGE_LEASE_SECONDS
        )
        if claim is None:
            # Settled meanwhile, by another caller or by Stripe's event.
            return await find_session(db, session.id)
        cost, claimed = claim.cost_pence, claim.claimed
        if not claimed:
            # Someone else is charging this session: wait for their outcome.
            if time.monotonic() > deadline:
                return await find_session(db, session.id)
            await asyncio.sleep(0.1)

    session = replace(session, cost_pence=cost)
    if session.hold_payment_intent_id is not None and session.hold_pence is not None:
        return await _settle_hold(services, session, cost)
    if cost < settings.MINIMUM_CHARGE_PENCE:
        outcome = payments_manager.ChargeOutcome(PaymentStatus.NOT_CHARGED, None, None)
        return await _record(services, session, outcome)
    try:
        outcome = await payments.charge(services, session, cost)
    except PaymentProviderUnavailable:
        # Nothing recorded: the next call (or the background round) tries again with the
        # same amount and the same idempotency key, so Stripe charges at most once.
        await db.release_charge(session.id)
        raise
    if outcome.status is PaymentStatus.PENDING:
        await db.release_charge(session.id)
        return await find_session(db, session.id)
    return await _record(services, session, outcome)


async def _settle_hold(services: Services, session: SessionRecord, cost: int) -> SessionRecord:
    """With the lease held: release the hold (below the minimum), capture the cost of it
    (up to the hold), or capture it all and charge the rest off-session (above it). Each
    call carries a key derived from our ids, so a retry after an outage or a crash repeats
    the first one's effect at Stripe instead of adding to it."""
    db, settings = services.db, services.settings
    hold_id, held = session.hold_payment_intent_id, session.hold_pence
    assert hold_id is not None and held is not None
    try:
        if cost < settings.MINIMUM_CHARGE_PENCE:
            await payments.release(services, hold_id)
            outcome = payments_manager.ChargeOutcome(PaymentStatus.NOT_CHARGED, hold_id, None)
            return await _record(services, session, outcome, captured=0, released=held)
        captured = min(cost, held)
        outcome = await payments.capture(services, session, hold_id, captured)
        if outcome.status is not PaymentStatus.SUCCEEDED or cost <= held:
            if outcome.status is not PaymentStatus.SUCCEEDED:
                captured = 0
            return await _record(
                services, session, outcome, captured=captured, released=held - captured
            )
        # Above the hold: the rest, off-session, as a session without a hold is charged.
        outcome = await payments.charge(services, session, cost - held)
    except PaymentProviderUnavailable:
        # Nothing recorded: the retry sends the same calls with the same keys, for the
        # amount the first attempt fixed.
        await db.release_charge(session.id)
        raise
    if outcome.status is PaymentStatus.PENDING:
        await db.release_charge(session.id)
        return await find_session(db, session.id)
    return await _record(services, session, outcome, captured=held, released=0)


async def _record(
    services: Services,
    session: SessionRecord,
    outcome: payments_manager.ChargeOutcome,
    *,
    captured: int | None = None,
    released: int | None = None,
) -> SessionRecord:
    """Record the outcome (or find the one recorded first) and return the settled session."""
    assert session.cost_pence is not None
    emails = email_manager.settlement_emails(
        session,
        cost_pence=session.cost_pence,
        status=outcome.status,
        error=outcome.error,
        operator=services.settings.OPERATOR_EMAIL,
        captured_pence=captured,
        released_pence=released,
        max_minutes=services.settings.MAX_SESSION_MINUTES,
        pay_url=services.settings.pay_link(session.id),
    )
    recorded = await services.db.record_payment(
        session.id,
        cost_pence=session.cost_pence,
        status=outcome.status,
        payment_intent_id=outcome.payment_intent_id,
        error=outcome.error,
        emails=emails,
        captured_pence=captured,
        released_pence=released,
    )
    if recorded is not PaymentRecorded.RECORDED:
        # Stripe's event (or another caller) got there first: what it recorded counts.
        return await find_session(services.db, session.id)
    services.outbox.wake()
    logger.info(
        "session.settled session=%s status=%s pence=%s",
        short_id(session.id),
        outcome.status,
        session.cost_pence,
    )
    # What the database now holds, without asking it again (qwip_record_payment's update).
    return replace(
        session,
        payment_status=outcome.status,
        payment_intent_id=outcome.payment_intent_id or session.payment_intent_id,
        payment_error=outcome.error,
        captured_pence=captured if captured is not None else session.captured_pence,
        released_pence=released if released is not None else session.released_pence,
    )


async def reconcile_payment(services: Services, event: StripeEvent) -> WebhookAck:
    """Stripe's word on a charge, which may arrive before or after our own record of it."""
    db = services.db
    intent = event.object
    session = None
    raw_session_id = (intent.get("metadata") or {}).get("session_id", "")
    try:
        session = await db.get_session_by_id(UUID(raw_session_id))
    except ValueError:
        pass
    cost = None  # an open session has no charge for the event to be about
    if session is not None and session.end_time is not None:
        cost = session_cost_pence(session)
    if session is not None and session.hold_payment_intent_id is not None:
        if intent.get("id") == session.hold_payment_intent_id:
            return await _reconcile_hold(services, event, session, cost)
        if cost is not None and session.hold_pence is not None:
            # Above the hold, the off-session charge is for the rest only.
            return await _reconcile_charge(
                services,
                event,
                session,
                cost,
                cost - session.hold_pence,
                captured=session.hold_pence,
                released=0,
            )
    if session is None or cost is None:
        return await _unmatched(services, event)
    return await _reconcile_charge(services, event, session, cost, cost)


async def _unmatched(services: Services, event: StripeEvent) -> WebhookAck:
    """An event about no charge of an ended session (a hold's placing or release, a
    session still open): recorded, so that its redelivery is a duplicate."""
    intent = event.object
    metadata = intent.get("metadata") or {}
    if event.type == "payment_intent.canceled" and metadata.get("purpose") == "hold":
        setup_intent_id = metadata.get("setup_intent_id")
        if isinstance(setup_intent_id, str) and isinstance(intent.get("id"), str):
            # A hold released (by us or at Stripe) before any session took it.
            await services.db.record_hold(
                setup_intent_id, payment_intent_id=intent["id"], state="canceled"
            )
    logger.info("webhook.unmatched_payment event_id=%s", event.id)
    is_new = await services.db.record_event(event.id, event.type)
    return WebhookAck(status="success" if is_new else "duplicate")


async def _reconcile_hold(
    services: Services, event: StripeEvent, session: SessionRecord, cost: int | None
) -> WebhookAck:
    """Stripe's word on a session's hold: a capture of exactly the cost (up to the hold)
    settles it as succeeded, a release below the minimum as not charged; anything else
    (placed, a capture that is only part of the cost, an open session) is only recorded."""
    intent, held = event.object, session.hold_pence or 0
    settings = services.settings
    if cost is None:
        return await _unmatched(services, event)
    if event.type == "payment_intent.succeeded" and settings.MINIMUM_CHARGE_PENCE <= cost <= held:
        received = intent.get("amount_received", cost)
        if received != cost:
            return await _unmatched(services, event)
        return await _record_event_outcome(
            services,
            event,
            session,
            cost,
            PaymentStatus.SUCCEEDED,
            None,
            captured=cost,
            released=held - cost,
            payment_intent_id=str(intent.get("id")),
        )
    if event.type == "payment_intent.canceled" and cost < settings.MINIMUM_CHARGE_PENCE:
        return await _record_event_outcome(
            services,
            event,
            session,
            cost,
            PaymentStatus.NOT_CHARGED,
            None,
            captured=0,
            released=held,
            payment_intent_id=str(intent.get("id")),
        )
    return await _unmatched(services, event)


async def _reconcile_charge(
    services: Services,
    event: StripeEvent,
    session: SessionRecord,
    cost: int,
    amount: int,
    *,
    captured: int | None = None,
    released: int | None = None,
) -> WebhookAck:
    """An off-session charge's success or failure, when it is for `amount`."""
    intent = event.object
    if event.type not in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return await _unmatched(services, event)
    if intent.get("amount") != amount:
        return await _unmatched(services, event)
    succeeded = event.type == "payment_intent.succeeded"
    status = PaymentStatus.SUCCEEDED if succeeded else PaymentStatus.FAILED
    error = None
    if not succeeded:
        last = intent.get("last_payment_error") or {}
        error = f"{last.get('code') or 'payment_failed'}: {last.get('message') or 'declined'}"
    return await _record_event_outcome(
        services,
        event,
        session,
        cost,
        status,
        error,
        captured=captured,
        released=released,
        payment_intent_id=str(intent.get("id")),
    )


async def _record_event_outcome(
    services: Services,
    event: StripeEvent,
    session: SessionRecord,
    cost: int,
    status: PaymentStatus,
    error: str | None,
    *,
    captured: int | None,
    released: int | None,
    payment_intent_id: str,
) -> WebhookAck:
    db = services.db
    emails = email_manager.settlement_emails(
        session,
        cost_pence=cost,
        status=status,
        error=error,
        operator=services.settings.OPERATOR_EMAIL,
        captured_pence=captured,
        released_pence=released,
        max_minutes=services.settings.MAX_SESSION_MINUTES,
        pay_url=services.settings.pay_link(session.id),
    )
    outcome = await db.record_payment(
        session.id,
        cost_pence=cost,
        status=status,
        payment_intent_id=payment_intent_id,
        error=error,
        emails=emails,
        event_id=event.id,
        event_type=event.type,
        captured_pence=captured,
        released_pence=released,
    )
    if outcome is PaymentRecorded.RECORDED:
        services.outbox.wake()
        logger.info("payment.reconciled session=%s status=%s", short_id(session.id), status)
    return WebhookAck(status="duplicate" if outcome is PaymentRecorded.DUPLICATE else "success")


# Background work: every replica runs it; the database hands each session to one of them.


async def settle_unsettled_sessions(services: Services) -> None:
    """Charges left pending by a Stripe outage or a crashed replica, retried with the same key."""
    for session_id in await services.db.list_unsettled_sessions(
        idle_seconds=services.settings.SETTLE_RETRY_SECONDS
    ):
        try:
            await settle(services, await find_session(services.db, session_id))
        except PaymentProviderUnavailable:
            logger.warning("session.settle_later session=%s", short_id(session_id))
            return


async def end_overdue_sessions(services: Services) -> None:
    """A session left open past MAX_SESSION_MINUTES ends, charged up to that limit."""
    for session_id in await services.db.list_overdue_sessions(
        max_minutes=services.settings.MAX_SESSION_MINUTES
    ):
        logger.info("session.auto_end session=%s", short_id(session_id))
        try:
            await end_session(services, session_id)
        except PaymentProviderUnavailable:
            return
