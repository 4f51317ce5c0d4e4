"""Getting paid for an owed session: the pay page's payment, on-session, and the debt that
stops new bookings until it is paid.

A session is owed when its charge failed or needs the cardholder (`failed`,
`requires_action`): the cost less what its hold gave. The pay page pays it with one
PaymentIntent per attempt (idempotency key from the session id and the attempt, which the
database hands out once however many callers ask), made with the customer present, so
their bank may ask them to authenticate. Whichever of Stripe's `payment_intent.succeeded`
and the page's confirmation call comes first marks the session paid and queues the
receipt, both re-reading the PaymentIntent from Stripe; `qwip_record_payment` moves a
payment from failed to succeeded once, so the other finds it done.
"""

import logging
from uuid import UUID

from svc import email_manager, payments_manager
from svc.errors import ServiceError
from svc.models.records import SessionRecord
from svc.models.recovery import PaySessionCard, PaySessionRequest, PaySessionResult
from svc.models.schemas import WebhookAck
from svc.payments_manager import (
    RECOVERY,
    PaymentIntentNotFound,
    RecoveryIntent,
    SetupIntentNotFound,
    StripeEvent,
)
from svc.services import Services
from svc.sessions import find_session
from svc.types import PaymentRecorded, PaymentStatus
from svc.utils import format_money, pence_to_major, short_id

logger = logging.getLogger(__name__)

OWED = (PaymentStatus.FAILED, PaymentStatus.REQUIRES_ACTION)


class NothingOwed(ServiceError):
    status_code = 409

    def __init__(self, session: SessionRecord) -> None:
        if session.end_time is None:
            message = (
                "Nothing is owed yet: this session is still open, and its card is charged "
                "when it ends."
            )
        elif session.payment_status is PaymentStatus.SUCCEEDED:
            message = "Nothing is owed for this session: it is paid."
        elif session.payment_status is PaymentStatus.NOT_CHARGED:
            message = "Nothing is owed for this session: it cost less than the minimum charge."
        else:
            message = (
                "Nothing is owed for this session yet: its payment is still being made, and "
                "the end-session page shows how it goes."
            )
        super().__init__(message)


class PaymentNotForSession(ServiceError):
    status_code = 422

    def __init__(self, what: str) -> None:
        super().__init__(f"This {what} is not one made to pay this session.")


class NoSavedCard(ServiceError):
    status_code = 409

    def __init__(self) -> None:
        super().__init__("This session has no saved card: pay with another card.")


class CardNotReady(ServiceError):
    status_code = 409

    def __init__(self, status: str) -> None:
        super().__init__(
            f"The card has not been saved yet (its setup is {status!r}); confirm the card first."
        )


class DebtOutstanding(ServiceError):
    """A customer who owes for a session books nothing new until it is paid."""

    status_code = 409

    def __init__(self, *, owed_pence: int, currency: str, pay_url: str) -> None:
        self.owed_pence, self.currency, self.pay_url = owed_pence, currency, pay_url
        amount = format_money(owed_pence, currency)
        super().__init__(
            f"You owe {amount} for an earlier session whose payment did not go through, so "
            "a new session cannot start. Nothing was charged or held for this booking. Pay "
            "what is owed, then book again."
        )
        self.extra = {"pay_url": pay_url}


def owed_pence(session: SessionRecord) -> int | None:
    """What the session still owes (its cost less what its hold gave), or None."""
    if session.payment_status not in OWED or session.cost_pence is None:
        return None
    owed = session.cost_pence - (session.captured_pence or 0)
    return owed if owed > 0 else None


def _result(session: SessionRecord, amount: int, intent: RecoveryIntent) -> PaySessionResult:
    status = {
        "succeeded": "succeeded",
        "requires_action": "requires_action",
        "processing": "processing",
    }.get(intent.status, "failed")
    return PaySessionResult(
        session_id=session.id,
        status=status,  # type: ignore[arg-type]
        amount=pence_to_major(amount),
        amount_pence=amount,
        currency=session.currency,
        payment_intent_id=intent.id or None,
        client_secret=intent.client_secret if status == "requires_action" else None,
        error=(
            _in_words(intent.error or "payment_failed: the payment did not go through")
            if status == "failed"
            else None
        ),
    )


def _in_words(error: str) -> str:
    """ "card_declined: Your card was declined." -> "Your card was declined." """
    return error.partition(": ")[2] or error


def _is_for(intent: RecoveryIntent, session: SessionRecord) -> bool:
    metadata = intent.metadata
    return metadata.get("purpose") == RECOVERY and metadata.get("session_id") == str(session.id)


async def pay_session(services: Services, request: PaySessionRequest) -> PaySessionResult:
    """Pay what the session owes, or say how its payment went (`payment_intent_id`)."""
    db = services.db
    session = await find_session(db, request.session_id)
    if request.payment_intent_id is not None:
        return await _confirmation(services, session, request.payment_intent_id)
    owed = owed_pence(session)
    if owed is None:
        raise NothingOwed(session)
    card = session.stripe_payment_method
    if request.setup_intent_id is not None:
        card = await _card_of_setup(services, session, request.setup_intent_id)
    if card is None:
        raise NoSavedCard()

    current = await db.begin_recovery(session.id)
    assert current is not None  # the session exists
    if current.payment_intent_id is not None:
        try:
            intent = await payments_manager.retrieve_recovery(
                services.stripe, current.payment_intent_id
            )
        except PaymentIntentNotFound:
            # Unknown to Stripe now: as good as cancelled, the next attempt pays.
            intent = RecoveryIntent.gone(current.payment_intent_id)
        if intent.status in ("requires_action", "processing", "requires_confirmation"):
            if intent.payment_method_id == card:
                return _result(session, owed, intent)
            # Another card now: the attempt left behind must not be completed later too.
            intent = await payments_manager.cancel_recovery(services.stripe, intent.id)
        if intent.status == "succeeded":
            await mark_paid(services, session, intent)
            return _result(session, owed, intent)
    if current.payment_intent_id is not None or current.attempt == 0:
        # The first attempt, or the next after one that was declined or cancelled: made
        # once, whichever caller asks first; the others share it.
        current = await db.begin_recovery(session.id, after_attempt=current.attempt)
        assert current is not None
        if current.payment_intent_id is not None:
            # Another request has made and recorded this attempt meanwhile.
            return await _confirmation(services, session, current.payment_intent_id)
    intent = await payments_manager.pay_owed(
        services.stripe,
        session_id=session.id,
        attempt=current.attempt,
        amount_pence=owed,
        currency=session.currency,
        customer_id=session.stripe_customer_id,
        payment_method_id=card,
    )
    if intent.id:
        await db.record_recovery(session.id, attempt=current.attempt, payment_intent_id=intent.id)
    else:
        # Refused without a PaymentIntent to read again: this attempt is spent.
        await db.begin_recovery(session.id, after_attempt=current.attempt)
    logger.info(
        "recovery.attempt session=%s attempt=%s status=%s",
        short_id(session.id),
        current.attempt,
        intent.status,
    )
    if intent.status == "succeeded":
        await mark_paid(services, session, intent)
    return _result(session, owed, intent)


async def _confirmation(
    services: Services, session: SessionRecord, payment_intent_id: str
) -> PaySessionResult:
    """The page's call after the bank's authentication: Stripe's word, never the page's."""
    try:
        intent = await payments_manager.retrieve_recovery(services.stripe, payment_intent_id)
    except PaymentIntentNotFound:
        raise PaymentNotForSession("payment") from None
    if not _is_for(intent, session):
        raise PaymentNotForSession("payment")
    if intent.status == "succeeded":
        await mark_paid(services, session, intent)
    return _result(session, intent.amount, intent)


async def _card_of_setup(services: Services, session: SessionRecord, setup_intent_id: str) -> str:
    """The card saved on the pay page for this very session, as Stripe has it."""
    try:
        setup = await payments_manager.retrieve_card_setup(services.stripe, setup_intent_id)
    except SetupIntentNotFound:
        raise PaymentNotForSession("card setup") from None
    if (
        setup.metadata.get("purpose") != RECOVERY
        or setup.metadata.get("session_id") != str(session.id)
        or setup.customer_id != session.stripe_customer_id
    ):
        raise PaymentNotForSession("card setup")
    if setup.status != "succeeded" or setup.payment_method_id is None:
        raise CardNotReady(setup.status)
    return setup.payment_method_id


async def create_card_setup(services: Services, session_id: UUID) -> PaySessionCard:
    """A SetupIntent for paying the owed session with another card."""
    session = await find_session(services.db, session_id)
    if owed_pence(session) is None:
        raise NothingOwed(session)
    setup_intent_id, client_secret = await payments_manager.create_card_setup(
        services.stripe, session_id=session.id, customer_id=session.stripe_customer_id
    )
    return PaySessionCard(setup_intent_id=setup_intent_id, client_secret=client_secret)


async def mark_paid(
    services: Services,
    session: SessionRecord,
    intent: RecoveryIntent,
    *,
    event: StripeEvent | None = None,
) -> PaymentRecorded:
    """Mark the session paid by this succeeded PaymentIntent and queue its receipt, once."""
    if session.cost_pence is None or intent.status != "succeeded":
        return PaymentRecorded.UNCHANGED
    emails = email_manager.settlement_emails(
        session,
        cost_pence=session.cost_pence,
        status=PaymentStatus.SUCCEEDED,
        error=None,
        operator=services.settings.OPERATOR_EMAIL,
        captured_pence=session.captured_pence,
        released_pence=session.released_pence,
        paid_later_pence=intent.amount,
    )
    recorded = await services.db.record_payment(
        session.id,
        cost_pence=session.cost_pence,
        status=PaymentStatus.SUCCEEDED,
        payment_intent_id=intent.id,
        error=None,
        emails=emails,
        event_id=event.id if event else None,
        event_type=event.type if event else None,
    )
    if recorded is PaymentRecorded.RECORDED:
        services.outbox.wake()
        logger.info("recovery.paid session=%s pence=%s", short_id(session.id), intent.amount)
    return recorded


async def handle_event(services: Services, event: StripeEvent) -> WebhookAck:
    """A pay-page PaymentIntent's event: its success (read again from Stripe) marks the
    session paid; anything else is only recorded, so that its redelivery is a duplicate."""
    db = services.db
    intent_id = event.object.get("id")
    session = None
    try:
        session = await db.get_session_by_id(UUID(str(event.object["metadata"]["session_id"])))
    except (KeyError, TypeError, ValueError):
        pass
    if (
        event.type == "payment_intent.succeeded"
        and session is not None
        and isinstance(intent_id, str)
    ):
        try:
            intent = await payments_manager.retrieve_recovery(services.stripe, intent_id)
        except PaymentIntentNotFound:
            intent = None
        if intent is not None and intent.status == "succeeded" and _is_for(intent, session):
            recorded = await mark_paid(services, session, intent, event=event)
            if recorded is PaymentRecorded.DUPLICATE:
                return WebhookAck(status="duplicate")
            return WebhookAck(status="success")
    is_new = await db.record_event(event.id, event.type)
    return WebhookAck(status="success" if is_new else "duplicate")


# Debt stops new bookings


async def refuse_if_owing(
    services: Services, *, email: str | None, fingerprint: str | None = None
) -> None:
    """DebtOutstanding when this e-mail address (any case) or this card owes a session."""
    if email is None and fingerprint is None:
        return
    session_id = await services.db.find_unpaid_session(email=email, fingerprint=fingerprint)
    if session_id is None:
        return
    session = await find_session(services.db, session_id)
    logger.info("booking.debt_outstanding session=%s", short_id(session.id))
    raise DebtOutstanding(
        owed_pence=owed_pence(session) or 0,
        currency=session.currency,
        pay_url=services.settings.pay_link(session.id),
    )


async def refuse_start_if_owing(
    services: Services,
    *,
    setup_intent_id: str,
    pod_name: str,
    email: str | None,
    fingerprint: str | None,
    event_id: str | None,
    event_type: str | None,
) -> DebtOutstanding | None:
    """Before a session starts (and before any hold): the debt of this e-mail or card, once
    told to the customer by e-mail with the pay link; None when nothing is owed. On the
    webhook path the event is recorded with the e-mail (a redelivery tells nobody again)."""
    try:
        await refuse_if_owing(services, email=email, fingerprint=fingerprint)
    except DebtOutstanding as debt:
        emails = []
        if email:
            emails.append(
                email_manager.debt_outstanding_email(
                    setup_intent_id=setup_intent_id,
                    recipient=email,
                    pod_name=pod_name,
                    owed_pence=debt.owed_pence,
                    currency=debt.currency,
                    pay_url=debt.pay_url,
                )
            )
        if event_id is not None:
            await services.db.record_event(event_id, event_type or "", emails)
        else:
            await services.db.queue_emails(emails)
        services.outbox.wake()
        return debt
    return None
