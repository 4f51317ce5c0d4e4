"""Webhook events as they arrive: verified, handed to what acts on them, and counted by
source, type and outcome (`invalid`: not signed by the sender; `error`: not acknowledged,
so the sender delivers it again)."""

from collections.abc import Mapping

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
    outcome = "error"
    try:
        ack = await bookings.handle_webhook(services, event)
        outcome = ack.status
        return ack
    finally:
        services.metrics.count_webhook("stripe", event.type, outcome)


async def receive_seam_event(
    services: Services, *, payload: bytes, headers: Mapping[str, str]
) -> WebhookAck:
    try:
        event = seam_events.verified_event(services, payload=payload, headers=headers)
    except ServiceError:
        services.metrics.count_webhook("seam", "unverified", "invalid")
        raise
    outcome = "error"
    try:
        ack = await seam_events.handle_event(services, event)
        outcome = ack.status
        return ack
    finally:
        services.metrics.count_webhook("seam", event.type, outcome)
