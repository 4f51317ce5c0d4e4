"""Stripe's money calls at the end of a session, each counted by its outcome in the
metrics (`unavailable`: Stripe could not be reached; the caller retries)."""

from svc import payments_manager
from svc.models.records import SessionRecord
from svc.payments_manager import PaymentProviderUnavailable
from svc.services import Services


async def charge(
    services: Services, session: SessionRecord, amount_pence: int
) -> payments_manager.ChargeOutcome:
    """The saved card charged off-session: the whole cost without a hold, or what is
    above the hold with one (both under the session's one charge key)."""
    try:
        outcome = await payments_manager.charge_session(
            services.stripe,
            session_id=session.id,
            amount_pence=amount_pence,
            currency=session.currency,
            customer_id=session.stripe_customer_id,
            payment_method_id=session.stripe_payment_method,
        )
    except PaymentProviderUnavailable:
        services.metrics.count_charge("unavailable")
        raise
    services.metrics.count_charge(outcome.status.value)
    return outcome


async def capture(
    services: Services, session: SessionRecord, hold_id: str, amount_pence: int
) -> payments_manager.ChargeOutcome:
    try:
        outcome = await payments_manager.capture_hold(
            services.stripe,
            session_id=session.id,
            payment_intent_id=hold_id,
            amount_pence=amount_pence,
        )
    except PaymentProviderUnavailable:
        services.metrics.count_capture("unavailable")
        raise
    services.metrics.count_capture(outcome.status.value)
    return outcome


async def release(services: Services, hold_id: str) -> None:
    try:
        await payments_manager.cancel_hold(services.stripe, payment_intent_id=hold_id)
    except PaymentProviderUnavailable:
        services.metrics.count_release("unavailable")
        raise
    services.metrics.count_release("released")
