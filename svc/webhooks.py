"""Webhook events as they arrive: verified, handed to what acts on them, and counted by
source, type and outcome (`invalid`: not signed by the sender; `error`: not acknowledged,
so the sender delivers it again)."""

from collections.abc import Awaitable, Mapping

from svc import bookings, payments_manager, seam_events
from svc.errors import ServiceError
from svc.models.schemas import WebhookAck
from svc.services import Services


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
    return await _counted(services, "stripe", event.type, bookings.handle_webhook(services, event))


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
