"""Webhook events as they arrive: verified, handed to what acts on them, and counted by
source, type and outcome (`invalid`: not signed by the sender; `error`: not acknowledged,
so the sender delivers it again)."""

import logging
from collections.abc import Awaitable, Mapping

from svc import bookings, payments_manager, recovery, seam_events
from svc.errors import ServiceError
from svc.models.schemas import WebhookAck
from svc.payments_manager import StripeEvent
from svc.refunds import DISPUTE_EVENT, REFUND_EVENTS, reconcile_refunds, record_dispute
from svc.services import Services
from svc.sessions import reconcile_payment

logger = logging.getLogger(__name__)


async def receive_stripe_event(
    services: Services, *, payload: bytes, signature: str | None
) -> WebhookAck:
    try:
        event = payments_manager.verify_webhook(
            payload, signature, secret=services.settings.stripe_webhook_secret
        )
    except payments_manager.InvalidWebhook:
        # The type an unsigned body claims is anyone's to choose: never a label.
        services.metrics.count_webhook("stripe", "unverified", "invalid")
        raise
    return await _counted(services, "stripe", event.type, handle_stripe_event(services, event))


async def receive_seam_event(
    services: Services, *, payload: bytes, headers: Mapping[str, str]
) -> WebhookAck:
    try:
        event = seam_events.verified_event(services, payload=payload, headers=headers)
    except ServiceError:
        services.metrics.count_webhook("seam", "unverified", "invalid")
        raise
    return await _counted(services, "seam", event.type, seam_events.handle_event(services, event))


async def _counted(
    services: Services, source: str, event_type: str, handling: Awaitable[WebhookAck]
) -> WebhookAck:
    outcome = "error"
    try:
        ack = await handling
        outcome = ack.status
        return ack
    finally:
        services.metrics.count_webhook(source, event_type, outcome)


async def handle_stripe_event(services: Services, event: StripeEvent) -> WebhookAck:
    """A Stripe event, verified, handed to what acts on it."""
    if await services.db.is_event_processed(event.id):
        logger.info("webhook.duplicate event_id=%s type=%s", event.id, event.type)
        return WebhookAck(status="duplicate")
    if event.type == "setup_intent.succeeded":
        return await bookings.start_from_event(services, event)
    if event.type in (
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.amount_capturable_updated",
        "payment_intent.canceled",
    ):
        metadata = event.object.get("metadata")
        if isinstance(metadata, dict) and metadata.get("purpose") == payments_manager.RECOVERY:
            # A pay-page payment of an owed session, not a session's own charge.
            return await recovery.handle_event(services, event)
        return await reconcile_payment(services, event)
    if event.type in REFUND_EVENTS:
        return await reconcile_refunds(services, event)
    if event.type == DISPUTE_EVENT:
        return await record_dispute(services, event)
    logger.info("webhook.ignored event_id=%s type=%s", event.id, event.type)
    return WebhookAck(status="ignored")
