"""Pods out of service: a lock that Seam says is offline, or the operator's word.

Such a pod cannot be booked: the card setup is refused before anything is made at Stripe,
so nothing is held or charged. A session already running is not touched. What Seam says of
a lock (its events, or the device read when a booking starts) is kept on every pod that has
it, and the operator hears of each new incident once.
"""

import asyncio
import logging
from datetime import UTC, datetime
from uuid import uuid4

from svc import email_manager
from svc.errors import ServiceError
from svc.models.records import LockHealth, Pod
from svc.seam_accessor import LockError
from svc.services import Services

logger = logging.getLogger(__name__)

# A booking waits at most this long for Seam's word on the lock, then goes on without it:
# a code the lock cannot take is then handled as any other (the lock worker's failure path).
LOCK_READ_SECONDS = 5


class PodOutOfService(ServiceError):
    status_code = 409

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            f"Pod {name!r} is out of service: {reason}. Nothing was charged; please choose "
            "another pod."
        )


async def check_bookable(services: Services, pod: Pod) -> None:
    """Refuse a pod out of service; for one with a smart lock believed online, ask Seam
    (its answer kept LOCK_STATUS_CACHE_SECONDS) and refuse it if the lock is offline."""
    reason = pod.out_of_service
    if reason is not None:
        raise PodOutOfService(pod.name, reason)
    if services.seam is None or pod.seam_device_id is None:
        return
    try:
        async with asyncio.timeout(LOCK_READ_SECONDS):
            state = await services.lock_states.get(
                services.seam,
                device_id=pod.seam_device_id,
                max_age=services.settings.LOCK_STATUS_CACHE_SECONDS,
            )
    except (TimeoutError, LockError) as error:
        reason_read = error.reason if isinstance(error, LockError) else "timeout"
        logger.warning("pod.lock_unread pod=%s reason=%s", pod.name, reason_read)
        return
    if state.online:
        return
    await record_lock_health(
        services,
        LockHealth(device_id=pod.seam_device_id, occurred_at=datetime.now(UTC), online=False),
    )
    raise PodOutOfService(pod.name, "its door lock is offline")


def _incident(health: LockHealth) -> str | None:
    if health.online is False:
        return "offline"
    if health.battery_low:
        return "low_battery"
    if health.tampered:
        return "tampered"
    return None


async def record_lock_health(
    services: Services,
    health: LockHealth,
    *,
    event_id: str | None = None,
    event_type: str | None = None,
) -> str:
    """Keep what Seam says of a lock on its pods; the operator's e-mail goes with a new
    incident only (the database decides, so a repeat tells nobody again)."""
    settings = services.settings
    alert = None
    incident = _incident(health)
    if incident is not None:
        pods = [
            pod.name
            for pod in await services.db.list_pods()
            if pod.seam_device_id == health.device_id
        ]
        # Unique per report: the database queues it only when the report is a new incident.
        key = f"lock_{incident}:{health.device_id}:{event_id or uuid4()}"
        alerts = email_manager.lock_incident_alert(
            dedupe_key=key,
            operator=settings.OPERATOR_EMAIL,
            incident=incident,
            device_id=health.device_id,
            pod_names=pods,
            battery_level=health.battery_level,
        )
        alert = alerts[0] if alerts else None
    outcome = await services.db.record_lock_health(
        health, alert=alert, event_id=event_id, event_type=event_type
    )
    if outcome == "alerted":
        services.outbox.wake()
    logger.info(
        "pod.lock_health device=%s online=%s battery_low=%s tampered=%s outcome=%s",
        health.device_id,
        health.online,
        health.battery_low,
        health.tampered,
        outcome,
    )
    return outcome
