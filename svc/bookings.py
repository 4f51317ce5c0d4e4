"""The booking lifecycle: what happens between the HTTP handlers and the outside world.

Handlers call one function here; these functions call the data layer, Stripe, the
mailer and the locks, which never call each other.
"""

import logging
from uuid import UUID

from svc.database_accessor import Database
from svc.env import Settings
from svc.errors import ServiceError
from svc.models import Pod, SessionPreview, SessionRecord
from svc.utils import compute_cost_pence, elapsed_seconds, pence_to_major

logger = logging.getLogger(__name__)


class PodNotFound(ServiceError):
    status_code = 404

    def __init__(self, description: str) -> None:
        super().__init__(f"No pod {description}.")


class SessionNotFound(ServiceError):
    status_code = 404

    def __init__(self) -> None:
        super().__init__("No session with this id.")


async def find_pod(db: Database, *, name: str | None = None, pod_id: int | None = None) -> Pod:
    if pod_id is not None:
        pod = await db.get_pod_by_id(pod_id)
        if pod is None:
            raise PodNotFound(f"with id {pod_id}")
        return pod
    assert name is not None
    pod = await db.get_pod_by_name(name)
    if pod is None:
        raise PodNotFound(f"named {name!r}")
    return pod


async def find_session(db: Database, session_id: UUID) -> SessionRecord:
    session = await db.get_session_by_id(session_id)
    if session is None:
        raise SessionNotFound()
    return session


def session_cost_pence(session: SessionRecord, settings: Settings) -> int:
    """The fixed cost once recorded; until then the cost up to the end, or up to now."""
    if session.cost_pence is not None:
        return session.cost_pence
    return compute_cost_pence(
        start=session.start_time,
        end=session.end_time or session.now,
        price_per_minute=session.price_per_minute,
        free_minutes=settings.FREE_MINUTES,
    )


def preview_of(session: SessionRecord, settings: Settings) -> SessionPreview:
    pence = session_cost_pence(session, settings)
    end = session.end_time or session.now
    return SessionPreview(
        session_id=session.id,
        pod_name=session.pod_name,
        start_time=session.start_time,
        end_time=session.end_time,
        elapsed_seconds=elapsed_seconds(session.start_time, end),
        cost=pence_to_major(pence),
        cost_pence=pence,
        currency=session.currency,
        is_complete=session.end_time is not None,
        payment_status=session.payment_status,
    )


async def preview_session(db: Database, settings: Settings, session_id: UUID) -> SessionPreview:
    return preview_of(await find_session(db, session_id), settings)
