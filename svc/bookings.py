"""Starting a booked session, from the page or from Stripe's event, by one code path
(saving the card before it: svc/card_setup.py).

Every rule that must hold across replicas (one session per pod and per SetupIntent, one
access-code e-mail) is enforced by the database, so any replica may handle any request.
"""

import logging
import secrets
import time
from dataclasses import dataclass
from uuid import UUID, uuid4

from svc import (
    email_manager,
    holds,
    payments_manager,
    pod_health,
    recovery,
    seam_accessor,
)
from svc.database_accessor import Database
from svc.errors import ServiceError
from svc.models.records import Pod, SessionRecord, StartSessionRequest
from svc.models.schemas import BookingConfirmed, WebhookAck
from svc.payments_manager import (
    HoldOutcome,
    SetupIntentInfo,
    SetupIntentNotFound,
    StripeEvent,
)
from svc.services import Services
from svc.sessions import PodNotFound, find_session
from svc.types import StartOutcomeKind
from svc.utils import compute_hold_pence, format_money, short_id

logger = logging.getLogger(__name__)


class PodTaken(ServiceError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Pod {name!r} was taken by someone else moments ago, so your session did not "
            "start. You have not been charged."
        )


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


class BookingExpired(ServiceError):
    status_code = 409

    def __init__(self, minutes: int) -> None:
        super().__init__(
            f"This booking has expired: the card was saved more than {minutes} minutes ago, "
            "so the session did not start. You have not been charged. Please book again."
        )


# Starting a session: one path for the webhook and for the page's confirm-booking.


@dataclass(frozen=True)
class StartResult:
    outcome: StartOutcomeKind
    session: SessionRecord | None = None
    pod_name: str | None = None
    hold: HoldOutcome | None = None
    hold_pence: int | None = None
    currency: str | None = None
    debt: recovery.DebtOutstanding | None = None
    out_of_service: str | None = None
    """Why the pod could not be started, when it was out of service as the start read it."""


def _not_startable(setup: SetupIntentInfo) -> SetupIntentNotSucceeded | BookingNotStarted | None:
    """Why Stripe's word on this SetupIntent cannot start a session (the error the page
    gets), or None: it must have succeeded, with a card, for a Customer."""
    if setup.metadata.get("purpose") == payments_manager.RECOVERY:
        return BookingNotStarted("This card setup pays an owed session; it books nothing.")
    if setup.status != "succeeded":
        return SetupIntentNotSucceeded(setup.status)
    if setup.payment_method_id is None:
        return BookingNotStarted("The card setup has no card attached; confirm the card first.")
    if setup.customer_id is None:
        return BookingNotStarted("The card setup has no customer; create it with this service.")
    return None


def _is_stale(setup: SetupIntentInfo, *, window_minutes: int) -> bool:
    """Created longer ago than the booking window, by this service's clock: a card saved
    then and confirmed or delivered late is not a booking the customer still expects."""
    return setup.created is None or time.time() - setup.created > window_minutes * 60


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
    """Start the session of a SetupIntent as Stripe's API gave it (never as an event's body
    tells it), or say why not. Its first real attempt decides for good, in the database."""
    db, settings = services.db, services.settings
    existing = await db.get_session_by_setup_intent(setup.id)
    if existing is not None:
        if event_id is not None and not await db.record_event(event_id, event_type or ""):
            return StartResult(StartOutcomeKind.DUPLICATE, existing)
        return StartResult(StartOutcomeKind.EXISTING, existing)
    if _not_startable(setup) is not None:
        return StartResult(StartOutcomeKind.NOT_READY)
    if _is_stale(setup, window_minutes=settings.BOOKING_WINDOW_MINUTES):
        logger.info("booking.expired setup_intent=%s", setup.id)
        return StartResult(StartOutcomeKind.EXPIRED)

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
    assert setup.customer_id is not None  # checked by _not_startable

    found = await payments_manager.customer_email(
        services.stripe, customer_id=setup.customer_id, payment_method_id=setup.payment_method_id
    )
    email = found.address
    assert setup.payment_method_id is not None  # checked by _not_startable
    # The card too: the same card saved under another e-mail owes the same debt.
    fingerprint = setup.card_fingerprint
    debt = await recovery.refuse_start_if_owing(
        services,
        setup_intent_id=setup.id,
        pod_name=pod.name,
        email=email,
        fingerprint=fingerprint,
        event_id=event_id,
        event_type=event_type,
    )
    if debt is not None:
        return StartResult(StartOutcomeKind.DEBT_OUTSTANDING, pod_name=pod.name, debt=debt)
    session_id = uuid4()
    hold_pence = compute_hold_pence(
        price_per_minute=pod.price,
        hold_minutes=settings.HOLD_MINUTES,
        minimum_pence=settings.MINIMUM_CHARGE_PENCE,
    )
    hold: HoldOutcome | None = None
    if settings.HOLD_MINUTES > 0 and hold_pence > 0:
        held = await holds.hold_card(services, setup, pod, session_id=session_id, amount=hold_pence)
        if isinstance(held, holds.HoldNotPlaced):
            result = StartResult(
                held.outcome,
                pod_name=pod.name,
                hold=held.hold,
                hold_pence=held.hold_pence,
                currency=held.currency,
            )
            if held.outcome is StartOutcomeKind.HOLD_DECLINED:
                return await _tell_hold_declined(
                    services, result, setup, pod, email, event_id, event_type
                )
            return result
        session_id, hold = held
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
                # The database refuses a pod out of service as one taken meanwhile; the
                # e-mail says which, as the pod was read here.
                unavailable_email=email_manager.pod_unavailable_email(
                    setup_intent_id=setup.id,
                    recipient=email or "",
                    pod_name=pod.name,
                    out_of_service=pod.out_of_service,
                ),
            )
        )
        if outcome.outcome is not StartOutcomeKind.CODE_CLASH:
            break
    else:
        raise RuntimeError("five access codes in a row clashed with recent ones")

    if outcome.outcome in (StartOutcomeKind.STARTED, StartOutcomeKind.POD_UNAVAILABLE):
        services.outbox.wake()
    if outcome.outcome is StartOutcomeKind.STARTED and email is None and found.invalid:
        await _tell_operator_no_valid_email(services, outcome.session_id, pod, found, setup)
    if outcome.outcome is StartOutcomeKind.STARTED and fingerprint and outcome.session_id:
        await db.record_card_fingerprint(outcome.session_id, fingerprint=fingerprint)
    if outcome.outcome is StartOutcomeKind.STARTED and smart_lock:
        # The code goes onto the lock now that the session exists, off this request's path.
        services.lock_work.wake()
    if hold is not None and outcome.outcome in (
        StartOutcomeKind.POD_UNAVAILABLE,
        StartOutcomeKind.REFUSED_BEFORE,
        StartOutcomeKind.HOLD_RELEASED,
    ):
        # No session for this hold: released now (or by the background round if Stripe
        # cannot be reached now).
        await holds.release_hold(services, setup.id, hold.payment_intent_id)
    if outcome.outcome is StartOutcomeKind.HOLD_RELEASED:
        logger.info("booking.hold_released pod=%s setup_intent=%s", pod.name, setup.id)
        return StartResult(StartOutcomeKind.HOLD_RELEASED, pod_name=pod.name)
    if outcome.outcome is StartOutcomeKind.POD_UNAVAILABLE:
        logger.info("booking.pod_unavailable pod=%s setup_intent=%s", pod.name, setup.id)
        return StartResult(
            StartOutcomeKind.POD_UNAVAILABLE, pod_name=pod.name, out_of_service=pod.out_of_service
        )
    if outcome.outcome is StartOutcomeKind.REFUSED_BEFORE:
        # No second "pod unavailable" e-mail: the first attempt told the customer.
        logger.info("booking.refused_before pod=%s setup_intent=%s", pod.name, setup.id)
        return StartResult(
            StartOutcomeKind.REFUSED_BEFORE, pod_name=pod.name, out_of_service=pod.out_of_service
        )
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


async def _tell_hold_declined(
    services: Services,
    result: StartResult,
    setup: SetupIntentInfo,
    pod: Pod,
    email: str | None,
    event_id: str | None,
    event_type: str | None,
) -> StartResult:
    """A declined hold starts nothing; the webhook path tells the customer by e-mail (the
    page tells them itself), once per SetupIntent."""
    if event_id is None:
        return result
    assert result.hold is not None and result.hold_pence is not None
    emails = []
    if email:
        emails.append(
            email_manager.hold_declined_email(
                setup_intent_id=setup.id,
                recipient=email,
                pod_name=pod.name,
                hold_pence=result.hold_pence,
                currency=pod.currency,
                reason=holds.reason_in_words(result.hold.error),
            )
        )
    if not await services.db.record_event(event_id, event_type or "", emails):
        return StartResult(StartOutcomeKind.DUPLICATE)
    services.outbox.wake()
    return result


async def _tell_operator_no_valid_email(
    services: Services,
    session_id: UUID | None,
    pod: Pod,
    found: payments_manager.CustomerEmail,
    setup: SetupIntentInfo,
) -> None:
    """Stripe gave only addresses that are not ones: nothing is sent to them (a line break
    in one would be a header of its own), and the operator hears of it."""
    given = ", ".join(repr(address) for address in found.invalid)
    await services.db.queue_emails(
        email_manager.operator_alert(
            dedupe_key=f"no_valid_email:{session_id}",
            operator=services.settings.OPERATOR_EMAIL,
            subject=f"a session on {pod.name} started with no valid e-mail address",
            text=f"Session {session_id} on {pod.name} started, but Stripe (customer "
            f"{setup.customer_id}) gave no valid e-mail address for the customer, only "
            f"{given}. Nothing is e-mailed to them: not the door code (the booking page "
            "showed it), nor the receipt. Reach them through their Stripe Customer if needed.",
        )
    )
    services.outbox.wake()


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
    refusal = _not_startable(setup)
    if refusal is not None:
        raise refusal
    result = await start_session(services, setup=setup)
    services.metrics.count_booking(result.outcome)
    if result.outcome in (StartOutcomeKind.POD_UNAVAILABLE, StartOutcomeKind.REFUSED_BEFORE):
        # Refused before (by the webhook, or an earlier call): the same answer, for good.
        if result.out_of_service is not None:
            raise pod_health.PodOutOfService(result.pod_name or "", result.out_of_service)
        raise PodTaken(result.pod_name or "")
    if result.outcome is StartOutcomeKind.EXPIRED:
        raise BookingExpired(services.settings.BOOKING_WINDOW_MINUTES)
    if result.outcome is StartOutcomeKind.HOLD_REQUIRES_ACTION:
        assert result.hold is not None and result.hold_pence is not None
        raise holds.HoldNeedsAuthentication(
            format_money(result.hold_pence, result.currency or ""), result.hold.client_secret
        )
    if result.outcome is StartOutcomeKind.HOLD_DECLINED:
        assert result.hold is not None and result.hold_pence is not None
        raise holds.HoldDeclined(
            format_money(result.hold_pence, result.currency or ""),
            holds.reason_in_words(result.hold.error),
        )
    if result.outcome is StartOutcomeKind.HOLD_RELEASED:
        raise holds.HoldReleased()
    if result.debt is not None:
        raise result.debt
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


async def start_from_event(services: Services, event: StripeEvent) -> WebhookAck:
    """`setup_intent.succeeded`: the event names the SetupIntent; Stripe's API says what it
    is. What cannot start a session is acknowledged (`ignored`), so that Stripe stops
    retrying; an outage of Stripe answers 503, so that it retries."""
    setup_intent_id = event.object.get("id")
    if not isinstance(setup_intent_id, str) or not setup_intent_id.startswith("seti_"):
        logger.warning("webhook.ignored event_id=%s reason=no_setup_intent_id", event.id)
        return WebhookAck(status="ignored")
    try:
        setup = await payments_manager.retrieve_setup_intent(services.stripe, setup_intent_id)
    except SetupIntentNotFound:
        logger.warning(
            "webhook.ignored event_id=%s setup_intent=%s reason=unknown_to_stripe",
            event.id,
            setup_intent_id,
        )
        return WebhookAck(status="ignored")
    result = await start_session(services, setup=setup, event_id=event.id, event_type=event.type)
    services.metrics.count_booking(result.outcome)
    if result.outcome in (
        StartOutcomeKind.NOT_READY,
        StartOutcomeKind.EXPIRED,
        StartOutcomeKind.HOLD_REQUIRES_ACTION,
        StartOutcomeKind.HOLD_RELEASED,
    ):
        logger.warning(
            "webhook.ignored event_id=%s setup_intent=%s reason=%s",
            event.id,
            setup.id,
            result.outcome.value,
        )
        return WebhookAck(status="ignored")
    if result.outcome in (StartOutcomeKind.DUPLICATE, StartOutcomeKind.REFUSED_BEFORE):
        # refused_before: this SetupIntent was decided already (pod unavailable); the event
        # is recorded and repeats that decision, like a redelivery.
        return WebhookAck(status="duplicate")
    return WebhookAck(status="success")
