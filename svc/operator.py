"""What the operator does to a session, from the CLI or the console: read its story, end
it as its customer would, end it without charge, send its access code again."""

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from svc import sessions
from svc.database_accessor import Database
from svc.email_manager.messages import queued
from svc.email_manager.schemas import AccessCodeEmail
from svc.errors import ServiceError
from svc.models.operator import SessionDetails
from svc.models.schemas import EndSessionResult
from svc.services import Services
from svc.timeline import TimelineEvent, build_timeline
from svc.types import SessionState
from svc.utils import short_id

logger = logging.getLogger(__name__)

DEFAULT_NO_CHARGE_REASON = "ended by the operator without charge"


class AlreadySettled(ServiceError):
    status_code = 409

    def __init__(self) -> None:
        super().__init__("This session's payment is settled already: there is no charge to waive.")


class ChargeUnderWay(ServiceError):
    status_code = 409

    def __init__(self) -> None:
        super().__init__(
            "This session's charge is under way right now: it cannot be waived. "
            "Look at its timeline again in a minute."
        )


class SessionEnded(ServiceError):
    status_code = 409

    def __init__(self) -> None:
        super().__init__("This session has ended: its access code no longer opens the door.")


class NoAddress(ServiceError):
    status_code = 409

    def __init__(self) -> None:
        super().__init__("This session has no e-mail address to send its code to.")


@dataclass(frozen=True, slots=True)
class SessionStory:
    details: SessionDetails
    timeline: list[TimelineEvent]


async def find_details(db: Database, session_id: UUID) -> SessionDetails:
    details = await db.get_session_details(session_id)
    if details is None:
        raise sessions.SessionNotFound()
    return details


async def session_story(db: Database, session_id: UUID) -> SessionStory:
    details = await find_details(db, session_id)
    emails = await db.list_session_emails(session_id)
    refunds = await db.list_session_refunds(session_id)
    return SessionStory(details, build_timeline(details, emails, refunds))


async def end_session(services: Services, session_id: UUID) -> EndSessionResult:
    """As the customer's End button does: the same code path, the same charge."""
    logger.info("operator.end session=%s", short_id(session_id))
    return await sessions.end_session(services, session_id)


async def end_without_charge(
    services: Services, session_id: UUID, *, reason: str = DEFAULT_NO_CHARGE_REASON
) -> EndSessionResult:
    """End the session (or take an ended one whose charge has not gone through), fix its
    cost at 0 with the reason, and settle it: the hold released, nothing charged, the
    customer's receipt says so."""
    db, settings = services.db, services.settings
    ended = await db.end_session(
        session_id,
        max_minutes=settings.MAX_SESSION_MINUTES,
        lease_seconds=settings.CHARGE_LEASE_SECONDS,
    )
    if ended is None:
        raise sessions.SessionNotFound()
    if services.seam is not None:
        services.lock_work.wake()
    if ended.session.state is SessionState.SETTLED:
        raise AlreadySettled()
    # Only the holder of the charge lease may fix the cost: nobody is charging meanwhile.
    if not ended.charge_claimed:
        raise ChargeUnderWay()
    if not await db.waive_charge(session_id, reason=reason):
        await db.release_charge(session_id)
        raise ChargeUnderWay()
    logger.info("operator.end_without_charge session=%s", short_id(session_id))
    session = await sessions.find_session(db, session_id)
    return sessions.result_of(await sessions.settle(services, session, claimed=True))


async def resend_access_code(services: Services, session_id: UUID, *, now: datetime) -> str:
    """Queue the access-code e-mail of an open session again; the address it goes to.

    Its key names the minute: a double click sends one, a request a minute later another."""
    session = await sessions.find_session(services.db, session_id)
    if session.end_time is not None:
        raise SessionEnded()
    if not session.user_email:
        raise NoAddress()
    payload = AccessCodeEmail(
        access_code=session.access_code,
        pod_name=session.pod_name,
        pod_address=session.pod_address,
        price_per_minute=session.price_per_minute,
        currency=session.currency,
        end_session_url=services.settings.end_session_link(session.id),
        smart_lock=services.has_smart_lock(session.seam_device_id),
        start_time=session.start_time,
    )
    email = queued(
        payload,
        dedupe_key=f"access_code_resent:{session.id}:{now:%Y%m%dT%H%M}",
        recipient=session.user_email,
    )
    await services.db.queue_emails([email])
    services.outbox.wake()
    logger.info("operator.resend_code session=%s", short_id(session_id))
    return session.user_email
