"""Seam's webhook events: what a lock did with a session's code, its unlocks, its health.

Each event is verified on the raw body (Svix's signature) and processed once: its id is
recorded in the same transaction as its effect, and a replay is a `duplicate` that changes
nothing. A code the lock did not take goes down the lock worker's own failure path
(`locks.code_did_not_set`: a backup code first), so both ways of learning it end the same.
"""

import logging
from collections.abc import Mapping

from svc import locks, pod_health
from svc.errors import ServiceError
from svc.models.records import LockHealth
from svc.models.schemas import WebhookAck
from svc.seam_accessor import SeamEvent, verify_webhook
from svc.services import Services
from svc.sessions import find_session
from svc.utils import short_id

logger = logging.getLogger(__name__)

CODE_SET = "access_code.set_on_device"
CODE_NOT_SET = {
    "access_code.failed_to_set_on_device": "Seam reports the lock failed to set the code",
    "access_code.delay_in_setting_on_device": "Seam reports a delay in setting the code on "
    "the lock",
}
UNLOCKED = "lock.unlocked"
LOW_BATTERY_STATUSES = ("low", "critical")


class SeamWebhooksOff(ServiceError):
    status_code = 400

    def __init__(self) -> None:
        super().__init__(
            "Seam webhooks are not enabled on this service: SEAM_WEBHOOK_SECRET is not set."
        )


def _health_of(event: SeamEvent) -> LockHealth | None:
    """What a device event says of the lock's health, or None: it says nothing of it."""
    if event.device_id is None:
        return None
    device, at = event.device_id, event.occurred_at
    if event.type == "device.disconnected":
        return LockHealth(device, at, online=False)
    if event.type == "device.connected":
        return LockHealth(device, at, online=True)
    if event.type == "device.low_battery":
        return LockHealth(device, at, battery_low=True, battery_level=event.battery_level)
    if event.type == "device.battery_status_changed" and event.battery_status:
        low = event.battery_status in LOW_BATTERY_STATUSES
        return LockHealth(device, at, battery_low=low, battery_level=event.battery_level)
    if event.type == "device.tampered":
        return LockHealth(device, at, tampered=True)
    return None


def verified_event(services: Services, *, payload: bytes, headers: Mapping[str, str]) -> SeamEvent:
    """The event, if Seam signed it with SEAM_WEBHOOK_SECRET (400 otherwise)."""
    secret = services.settings.SEAM_WEBHOOK_SECRET
    if secret is None:
        raise SeamWebhooksOff()
    return verify_webhook(payload, headers, secret=secret.get_secret_value())


async def handle_event(services: Services, event: SeamEvent) -> WebhookAck:
    outcome = await _process(services, event)
    if outcome == "duplicate":
        logger.info("seam_webhook.duplicate event_id=%s type=%s", event.id, event.type)
        return WebhookAck(status="duplicate")
    if outcome == "ignored":
        logger.info("seam_webhook.ignored event_id=%s type=%s", event.id, event.type)
        return WebhookAck(status="ignored")
    logger.info(
        "seam_webhook.processed event_id=%s type=%s outcome=%s", event.id, event.type, outcome
    )
    return WebhookAck(status="success")


async def _process(services: Services, event: SeamEvent) -> str:
    db = services.db
    if event.type == CODE_SET and event.access_code_id:
        return await db.record_code_set(event.id, event.type, access_code_id=event.access_code_id)
    if event.type in CODE_NOT_SET and event.access_code_id:
        return await _code_not_set(services, event, event.access_code_id)
    if event.type == UNLOCKED and event.access_code_id:
        return await db.record_unlock(
            event.id,
            event.type,
            access_code_id=event.access_code_id,
            occurred_at=event.occurred_at,
        )
    health = _health_of(event)
    if health is not None:
        return await pod_health.record_lock_health(
            services, health, event_id=event.id, event_type=event.type
        )
    return "ignored"


async def _code_not_set(services: Services, event: SeamEvent, access_code_id: str) -> str:
    """The failure path is the lock worker's (a backup code, else the session given up),
    whose steps are each safe to repeat: so the event is recorded after it (a replica dying
    half-way leaves it to the background round, after CODE_FALLBACK_SECONDS), and the
    database hands the backup code, or the giving up, to one caller."""
    db = services.db
    if await db.is_seam_event_processed(event.id):
        return "duplicate"
    session_id = await db.get_session_of_access_code(access_code_id)
    if session_id is not None:
        session = await find_session(db, session_id)
        logger.warning(
            "lock.code_not_set session=%s access_code_id=%s type=%s",
            short_id(session_id),
            access_code_id,
            event.type,
        )
        await locks.code_did_not_set(services, session, reason=CODE_NOT_SET[event.type])
    if not await db.record_seam_event(event.id, event.type):
        return "duplicate"
    return "recorded" if session_id is not None else "unknown"
