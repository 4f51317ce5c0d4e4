"""The overstay reminder: REMINDER_MINUTES before MAX_SESSION_MINUTES, where the service ends
a session still open, its customer gets one e-mail with the running cost and the end link.

Every replica runs the round; the database marks a session reminded in the transaction that
queues its e-mail, and only for the first caller, so the e-mail goes out once.
"""

import logging
from uuid import UUID

from svc import email_manager
from svc.services import Services
from svc.sessions import find_session, session_cost_pence
from svc.utils import short_id

logger = logging.getLogger(__name__)


async def remind_sessions_near_the_limit(services: Services) -> None:
    settings = services.settings
    if settings.REMINDER_MINUTES == 0:
        return
    for session_id in await services.db.list_reminders_due(
        max_minutes=settings.MAX_SESSION_MINUTES, before_minutes=settings.REMINDER_MINUTES
    ):
        await _remind(services, session_id)


async def _remind(services: Services, session_id: UUID) -> None:
    settings = services.settings
    session = await find_session(services.db, session_id)
    emails = email_manager.reminder_email(
        session,
        cost_pence=session_cost_pence(session),
        max_minutes=settings.MAX_SESSION_MINUTES,
        end_session_url=settings.end_session_link(session.id),
    )
    if await services.db.record_reminder(session.id, emails=emails):
        services.outbox.wake()
        logger.info("session.reminded session=%s", short_id(session.id))
