"""The card hold at booking: recorded, then placed at Stripe before a session opens, and
released when no session comes of it (at once where the service knows, else by the
background round after HOLD_ABANDON_MINUTES). Capturing it at the end is the session's
settlement (svc/sessions.py)."""

import logging
import math
from dataclasses import dataclass
from uuid import UUID

from svc import payments_manager
from svc.errors import ServiceError
from svc.models.records import Pod
from svc.payments_manager import HoldOutcome, PaymentProviderUnavailable, SetupIntentInfo
from svc.services import Services
from svc.types import StartOutcomeKind

logger = logging.getLogger(__name__)


class HoldNeedsAuthentication(ServiceError):
    """The bank asks the cardholder to confirm the hold: the page does it with Stripe.js
    (the PaymentIntent's client secret) and calls confirm-booking again."""

    status_code = 402

    def __init__(self, amount: str, client_secret: str | None) -> None:
        super().__init__(
            f"Your bank asks you to confirm the hold of {amount} on your card before your "
            "session starts. Nothing has been charged."
        )
        self.extra = {"requires_action": True, "payment_intent_client_secret": client_secret}


class HoldDeclined(ServiceError):
    status_code = 402

    def __init__(self, amount: str, reason: str) -> None:
        super().__init__(
            f"Your card could not hold {amount} ({reason}), so your session did not start. "
            "Nothing was charged and nothing is held; please try another card."
        )
        self.extra = {"requires_action": False, "payment_intent_client_secret": None}


class HoldReleased(ServiceError):
    status_code = 409

    def __init__(self) -> None:
        super().__init__(
            "The hold on your card for this booking was released (it was not confirmed in "
            "time), so the session did not start. You have not been charged. Please book again."
        )


def reason_in_words(error: str | None) -> str:
    """ "card_declined: Your card was declined." -> "Your card was declined"."""
    words = (error or "").partition(": ")[2] or error or "the card was declined"
    return words.rstrip(".")


@dataclass(frozen=True, slots=True)
class HoldNotPlaced:
    """Why no hold is held yet: declined, or waiting for the cardholder's authentication."""

    outcome: StartOutcomeKind
    hold: HoldOutcome
    hold_pence: int
    currency: str


async def hold_card(
    services: Services, setup: SetupIntentInfo, pod: Pod, *, session_id: UUID, amount: int
) -> tuple[UUID, HoldOutcome] | HoldNotPlaced:
    """The SetupIntent's hold, recorded before it is placed, then placed (or read again)
    at Stripe: the session id it names and Stripe's word on it, or why it starts nothing.
    A hold released before (or being released) is left for the database to refuse."""
    db = services.db
    assert setup.customer_id is not None and setup.payment_method_id is not None
    record = await db.begin_hold(
        setup.id, session_id=session_id, pod_id=pod.id, amount_pence=amount, currency=pod.currency
    )
    outcome = HoldOutcome(record.state, record.payment_intent_id, error=record.error)
    state = record.state
    if state in ("placing", "requires_action"):
        if record.payment_intent_id is None:
            outcome = await payments_manager.place_hold(
                services.stripe,
                setup_intent_id=setup.id,
                session_id=record.session_id,
                pod_id=pod.id,
                amount_pence=record.amount_pence,
                currency=record.currency,
                customer_id=setup.customer_id,
                payment_method_id=setup.payment_method_id,
            )
        if outcome.payment_intent_id is not None and (
            record.payment_intent_id is not None or outcome.state == "requires_action"
        ):
            # Stripe's word now: the cardholder may have authenticated since the first
            # answer (which the idempotency key replays as it was).
            outcome = await payments_manager.retrieve_hold(
                services.stripe, outcome.payment_intent_id
            )
        state = await db.record_hold(
            setup.id,
            payment_intent_id=outcome.payment_intent_id,
            state=outcome.state,
            error=outcome.error,
        )
        logger.info(
            "booking.hold setup_intent=%s state=%s pence=%s", setup.id, state, record.amount_pence
        )
    if state == "failed":
        return HoldNotPlaced(
            StartOutcomeKind.HOLD_DECLINED,
            HoldOutcome("failed", outcome.payment_intent_id, error=outcome.error),
            hold_pence=record.amount_pence,
            currency=record.currency,
        )
    if state == "requires_action":
        return HoldNotPlaced(
            StartOutcomeKind.HOLD_REQUIRES_ACTION,
            outcome,
            hold_pence=record.amount_pence,
            currency=record.currency,
        )
    if state == "placing":
        # Neither held nor refused (Stripe still processing): the caller tries again.
        raise PaymentProviderUnavailable()
    payment_intent_id = outcome.payment_intent_id or record.payment_intent_id
    return record.session_id, HoldOutcome(state, payment_intent_id)


async def release_hold(
    services: Services, setup_intent_id: str, payment_intent_id: str | None
) -> None:
    """Cancel a hold whose session did not start; if Stripe cannot be reached now, the
    background round releases it after HOLD_ABANDON_MINUTES."""
    if payment_intent_id is not None:
        try:
            await payments_manager.cancel_hold(services.stripe, payment_intent_id=payment_intent_id)
        except PaymentProviderUnavailable:
            services.metrics.count_release("unavailable")
            logger.warning("booking.hold_release_later setup_intent=%s", setup_intent_id)
            return
        services.metrics.count_release("released")
    await services.db.record_hold(
        setup_intent_id, payment_intent_id=payment_intent_id, state="canceled"
    )
    logger.info("booking.hold_canceled setup_intent=%s", setup_intent_id)


async def release_abandoned_holds(services: Services) -> None:
    """Holds whose session never started, quiet for HOLD_ABANDON_MINUTES: released."""
    idle_seconds = max(1, math.ceil(services.settings.HOLD_ABANDON_MINUTES * 60))
    for hold in await services.db.claim_abandoned_holds(idle_seconds=idle_seconds):
        payment_intent_id = hold.payment_intent_id
        if payment_intent_id is None:
            # Recorded, but its answer from Stripe never recorded: the same key finds it
            # (or places it now, to be released at once). The SetupIntent gives the card.
            try:
                setup = await payments_manager.retrieve_setup_intent(
                    services.stripe, hold.setup_intent_id
                )
            except payments_manager.SetupIntentNotFound:
                await services.db.record_hold(
                    hold.setup_intent_id, payment_intent_id=None, state="canceled"
                )
                continue
            if setup.customer_id is None or setup.payment_method_id is None:
                await services.db.record_hold(
                    hold.setup_intent_id, payment_intent_id=None, state="canceled"
                )
                continue
            placed = await payments_manager.place_hold(
                services.stripe,
                setup_intent_id=hold.setup_intent_id,
                session_id=hold.session_id,
                pod_id=hold.pod_id or 0,
                amount_pence=hold.amount_pence,
                currency=hold.currency,
                customer_id=setup.customer_id,
                payment_method_id=setup.payment_method_id,
            )
            payment_intent_id = placed.payment_intent_id
        logger.info("booking.hold_abandoned setup_intent=%s", hold.setup_intent_id)
        await release_hold(services, hold.setup_intent_id, payment_intent_id)
