"""The booking lifecycle: what happens between the HTTP handlers and the outside world.

Handlers call one function here; these functions call the data layer, Stripe, the
mailer and the locks, which never call each other. Every rule that must hold across
replicas (one session per pod and per SetupIntent, one charge per session, one e-mail
per purpose) is enforced by the database, so any replica may handle any request.
"""

import asyncio
import logging
import math
import secrets
import time
from dataclasses import dataclass, replace
from uuid import UUID, uuid4

from svc import email_manager, payments_manager, seam_accessor
from svc.background import retry_delay
from svc.database_accessor import Database
from svc.email_manager import EmailNotSent
from svc.errors import ServiceError
from svc.payments_manager import PaymentProviderUnavailable, SetupIntentInfo, StripeEvent
from svc.records import OutboxEmail, Pod, SessionRecord, StartSessionRequest
from svc.schemas import (
    BookingConfirmed,
    EndSessionResult,
    SessionPreview,
    SetupIntentCreated,
    WebhookAck,
)
from svc.services import Services
from svc.types import (
    AccessCodeStatus,
    PaymentRecorded,
    PaymentStatus,
    SessionState,
    StartOutcomeKind,
)
from svc.utils import compute_cost_pence, elapsed_seconds, pence_to_major, short_id

logger = logging.getLogger(__name__)

# How long a second end-session call waits for the first one's charge to finish.
CHARGE_WAIT_SECONDS = 25.0
EMAIL_BATCH = 20
# The e-mail sender starts once nothing new was queued for this long: a burst of bookings
# or ends is delivered in a few rounds after the burst, over one SMTP connection each,
# instead of a connection (and a login to the mail server) for every few messages.
EMAIL_QUIET_SECONDS = 0.02
EMAIL_MAX_RETRY_SECONDS = 600


class PodNotFound(ServiceError):
    status_code = 404

    def __init__(self, description: str) -> None:
        super().__init__(f"No pod {description}.")


class PodInUse(ServiceError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(f"Pod {name!r} is in use right now; please try again when it is free.")


class PodTaken(ServiceError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Pod {name!r} was taken by someone else moments ago, so your session did not "
            "start. You have not been charged."
        )


class SessionNotFound(ServiceError):
    status_code = 404

    def __init__(self) -> None:
        super().__init__("No session with this id.")


class ClientSecretMismatch(ServiceError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__("The client secret does not belong to this card setup.")


class SetupIntentNotSucceeded(ServiceError):
    status_code = 409

    def __init__(self, status: str) -> None:
        super().__init__(
            f"The card setup has not succeeded (its status is {status!r}); "
            "confirm the card first."
        )


class BookingNotStarted(ServiceError):
    status_code = 409


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
    # Built unvalidated: every value is already of its field's type (a typed record, our
    # own arithmetic), and this is the busiest answer the service gives.
    return SessionPreview.model_construct(
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
    )


async def preview_session(services: Services, session_id: UUID) -> SessionPreview:
    return preview_of(await find_session(services.db, session_id))


# Saving a card


async def create_setup_intent(
    services: Services, *, name: str | None, pod_id: int | None, email: str | None
) -> SetupIntentCreated:
    pod = await find_pod(services.db, name=name, pod_id=pod_id)
    if pod.in_use:
        raise PodInUse(pod.name)
    setup = await payments_manager.create_setup_intent(services.stripe, pod=pod, email=email)
    return SetupIntentCreated(
        client_secret=setup.client_secret,
        customer_id=setup.customer_id,
        setup_intent_id=setup.setup_intent_id,
    )


# Starting a session: one path for the webhook and for the page's confirm-booking.


@dataclass(frozen=True)
class StartResult:
    outcome: StartOutcomeKind
    session: SessionRecord | None = None
    pod_name: str | None = None


async def _pod_of_setup(db: Database, setup: SetupIntentInfo) -> Pod | None:
    raw_id = setup.metadata.get("pod_id", "")
    if raw_id.isdigit():
        pod = await db.get_pod_by_id(int(raw_id))
        if pod is not None:
            return pod
    name = setup.metadata.get("pod_name")
    return await db.get_pod_by_name(name) if name else None


async def start_session(
    services: Services,
    *,
    setup: SetupIntentInfo,
    event_id: str | None = None,
    event_type: str | None = None,
) -> StartResult:
    db, settings = services.db, services.settings
    existing = await db.get_session_by_setup_intent(setup.id)
    if existing is not None:
        if event_id is not None and not await db.record_event(event_id, event_type or ""):
            return StartResult(StartOutcomeKind.DUPLICATE, existing)
        return StartResult(StartOutcomeKind.EXISTING, existing)

    pod = await _pod_of_setup(db, setup)
    if pod is None:
        described = setup.metadata.get("pod_name") or setup.metadata.get("pod_id") or "(none)"
        logger.warning("booking.unknown_pod setup_intent=%s pod=%s", setup.id, described)
        alert = email_manager.operator_alert(
            dedupe_key=f"unknown_pod:{setup.id}",
            operator=settings.OPERATOR_EMAIL,
            subject=f"card saved for an unknown pod {described}",
            text=f"SetupIntent {setup.id} (customer {setup.customer_id}) names the pod "
            f"{described!r}, which does not exist. No session was started and nothing was "
            "charged.",
        )
        if event_id is not None:
            is_new = await db.record_event(event_id, event_type or "", alert)
            if not is_new:
                return StartResult(StartOutcomeKind.DUPLICATE)
        else:
            await db.queue_emails(alert)
        services.outbox.wake()
        return StartResult(StartOutcomeKind.UNKNOWN_POD)
    if setup.customer_id is None:
        raise BookingNotStarted("The card setup has no customer; create it with this service.")

    email = await payments_manager.customer_email(
        services.stripe, customer_id=setup.customer_id, payment_method_id=setup.payment_method_id
    )
    session_id = uuid4()
    smart_lock = services.has_smart_lock(pod.seam_device_id)
    for _ in range(5):
        code = seam_accessor.generate_access_code(settings.ACCESS_CODE_LENGTH)
        outcome = await db.start_session(
            StartSessionRequest(
                event_id=event_id,
                event_type=event_type,
                session_id=session_id,
                setup_intent_id=setup.id,
                pod_id=pod.id,
                user_email=email,
                customer_id=setup.customer_id,
                payment_method=setup.payment_method_id,
                access_code=code,
                free_minutes=settings.FREE_MINUTES,
                started_email=email_manager.access_code_email(
                    session_id=session_id,
                    recipient=email or "",
                    access_code=code,
                    pod_name=pod.name,
                    pod_address=pod.address,
                    price_per_minute=pod.price,
                    currency=pod.currency,
                    end_session_url=settings.end_session_link(session_id),
                    smart_lock=smart_lock,
                ),
                unavailable_email=email_manager.pod_unavailable_email(
                    setup_intent_id=setup.id, recipient=email or "", pod_name=pod.name
                ),
            )
        )
        if outcome.outcome is not StartOutcomeKind.CODE_CLASH:
            break
    else:
        raise RuntimeError("five access codes in a row clashed with recent ones")

    if outcome.outcome in (StartOutcomeKind.STARTED, StartOutcomeKind.POD_UNAVAILABLE):
        services.outbox.wake()
    if outcome.outcome is StartOutcomeKind.STARTED and smart_lock:
        # The code goes onto the lock now that the session exists, off this request's path.
        services.lock_work.wake()
    if outcome.outcome is StartOutcomeKind.POD_UNAVAILABLE:
        logger.info("booking.pod_unavailable pod=%s setup_intent=%s", pod.name, setup.id)
        return StartResult(StartOutcomeKind.POD_UNAVAILABLE, pod_name=pod.name)
    if outcome.outcome is StartOutcomeKind.DUPLICATE:
        return StartResult(StartOutcomeKind.DUPLICATE)
    assert outcome.session_id is not None
    session = await find_session(db, outcome.session_id)
    if outcome.outcome is StartOutcomeKind.STARTED:
        logger.info(
            "booking.started pod=%s session=%s email_known=%s",
            pod.name,
            short_id(session.id),
            email is not None,
        )
    return StartResult(outcome.outcome, session)


async def confirm_booking(
    services: Services, *, setup_intent_id: str, client_secret: str
) -> BookingConfirmed:
    """The page's way to start the session right after the card is confirmed."""
    setup = await payments_manager.retrieve_setup_intent(services.stripe, setup_intent_id)
    # The client secret proves the caller is the page that set up this card.
    if setup.client_secret is None or not secrets.compare_digest(
        setup.client_secret.encode(), client_secret.encode()
    ):
        raise ClientSecretMismatch()
    if setup.status != "succeeded":
        raise SetupIntentNotSucceeded(setup.status)
    result = await start_session(services, setup=setup)
    if result.outcome is StartOutcomeKind.POD_UNAVAILABLE:
        raise PodTaken(result.pod_name or "")
    if result.outcome is StartOutcomeKind.UNKNOWN_POD:
        raise PodNotFound(f"named {setup.metadata.get('pod_name', '')!r}")
    assert result.session is not None
    session = result.session
    return BookingConfirmed(
        session_id=session.id,
        access_code=session.access_code,
        pod_name=session.pod_name,
        start_time=session.start_time,
        end_session_url=services.settings.end_session_link(session.id),
    )


# Webhooks


async def handle_webhook(
    services: Services, *, payload: bytes, signature: str | None
) -> WebhookAck:
    event = payments_manager.verify_webhook(
        payload, signature, secret=services.settings.stripe_webhook_secret
    )
    if await services.db.is_event_processed(event.id):
        logger.info("webhook.duplicate event_id=%s type=%s", event.id, event.type)
        return WebhookAck(status="duplicate")
    if event.type == "setup_intent.succeeded":
        setup = SetupIntentInfo.from_dict(event.object)
        if setup.status != "succeeded":
            return WebhookAck(status="ignored")
        result = await start_session(
            services, setup=setup, event_id=event.id, event_type=event.type
        )
        return WebhookAck(
            status="duplicate" if result.outcome is StartOutcomeKind.DUPLICATE else "success"
        )
    if event.type in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        return await _reconcile_payment(services, event)
    logger.info("webhook.ignored event_id=%s type=%s", event.id, event.type)
    return WebhookAck(status="ignored")


async def _reconcile_payment(services: Services, event: StripeEvent) -> WebhookAck:
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
    if session is None or cost is None or intent.get("amount") != cost:
        logger.info("webhook.unmatched_payment event_id=%s", event.id)
        is_new = await db.record_event(event.id, event.type)
        return WebhookAck(status="success" if is_new else "duplicate")

    succeeded = event.type == "payment_intent.succeeded"
    status = PaymentStatus.SUCCEEDED if succeeded else PaymentStatus.FAILED
    error = None
    if not succeeded:
        last = intent.get("last_payment_error") or {}
        error = f"{last.get('code') or 'payment_failed'}: {last.get('message') or 'declined'}"
    emails = email_manager.settlement_emails(
        session,
        cost_pence=cost,
        status=status,
        error=error,
        operator=services.settings.OPERATOR_EMAIL,
    )
    outcome = await db.record_payment(
        session.id,
        cost_pence=cost,
        status=status,
        payment_intent_id=str(intent.get("id")),
        error=error,
        emails=emails,
        event_id=event.id,
        event_type=event.type,
    )
    if outcome is PaymentRecorded.RECORDED:
        services.outbox.wake()
        logger.info("payment.reconciled session=%s status=%s", short_id(session.id), status)
    return WebhookAck(status="duplicate" if outcome is PaymentRecorded.DUPLICATE else "success")


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
    if cost < settings.MINIMUM_CHARGE_PENCE:
        outcome = payments_manager.ChargeOutcome(PaymentStatus.NOT_CHARGED, None, None)
        return await _record(services, session, outcome)
    try:
        outcome = await payments_manager.charge_session(
            services.stripe,
            session_id=session.id,
            amount_pence=cost,
            currency=session.currency,
            customer_id=session.stripe_customer_id,
            payment_method_id=session.stripe_payment_method,
        )
    except PaymentProviderUnavailable:
        # Nothing recorded: the next call (or the background round) tries again with the
        # same amount and the same idempotency key, so Stripe charges at most once.
        await db.release_charge(session.id)
        raise
    if outcome.status is PaymentStatus.PENDING:
        await db.release_charge(session.id)
        return await find_session(db, session.id)
    return await _record(services, session, outcome)


async def _record(
    services: Services, session: SessionRecord, outcome: payments_manager.ChargeOutcome
) -> SessionRecord:
    """Record the outcome (or find the one recorded first) and return the settled session."""
    assert session.cost_pence is not None
    emails = email_manager.settlement_emails(
        session,
        cost_pence=session.cost_pence,
        status=outcome.status,
        error=outcome.error,
        operator=services.settings.OPERATOR_EMAIL,
    )
    recorded = await services.db.record_payment(
        session.id,
        cost_pence=session.cost_pence,
        status=outcome.status,
        payment_intent_id=outcome.payment_intent_id,
        error=outcome.error,
        emails=emails,
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
    )


# Background work: every replica runs it; the database hands each item to one of them.


async def deliver_due_emails(services: Services) -> int:
    """Send what is due; each message is leased to this replica while it sends."""
    settings = services.settings
    # Long enough for one round of SMTP; short enough that a crashed replica's messages
    # are picked up by another one soon.
    lease = math.ceil(settings.SMTP_TIMEOUT_SECONDS * 2 + 5)
    emails = await services.db.claim_emails(limit=EMAIL_BATCH, lease_seconds=lease)
    if emails:
        failures = await services.mailer.send_all(emails)
        sent = [email for email, failure in zip(emails, failures, strict=True) if failure is None]
        if sent:
            await services.db.mark_emails_sent([email.id for email in sent])
        for email, failure in zip(emails, failures, strict=True):
            if failure is None:
                logger.info("email.sent kind=%s attempt=%s", email.kind, email.attempts)
            else:
                await _postpone(services, email, failure)
    return len(emails)


async def _postpone(services: Services, email: OutboxEmail, failure: EmailNotSent) -> None:
    delay = retry_delay(
        services.settings.EMAIL_RETRY_BASE_SECONDS, email.attempts, at_most=EMAIL_MAX_RETRY_SECONDS
    )
    logger.warning(
        "email.retry kind=%s attempt=%s in_seconds=%s error=%s",
        email.kind,
        email.attempts,
        delay,
        failure,
    )
    await services.db.mark_email_failed(
        email.id, retry_in_seconds=math.ceil(delay), error=str(failure)
    )


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


async def deliver_all_due_emails(services: Services) -> None:
    """The e-mail job's round: send until nothing is due."""
    while await deliver_due_emails(services) == EMAIL_BATCH:
        pass


async def settle_and_end_overdue(services: Services) -> None:
    """The settlement job's round: pending charges, then sessions past their limit."""
    await settle_unsettled_sessions(services)
    await end_overdue_sessions(services)
