"""Backup codes: when a session's code does not reach the lock, a code from the lock's own
backup pool (pre-programmed on the lock, so it works at once) is handed to the session and
e-mailed to its customer; the session goes on and is billed as usual.

Codes are created with the pool on (seam_accessor.ensure_access_code). Pulling a backup
for a code is safe to repeat (Seam answers the same backup for the same code), the database
leases the pull to one replica at a time and keeps each backup code for one session only
(a unique index), so a session gets at most one backup code and no two sessions share one.
"""

import asyncio
import logging
from enum import StrEnum

from svc import email_manager, seam_accessor
from svc.models.records import BackupCode, SessionRecord
from svc.seam_accessor import LockError, LockServiceUnavailable
from svc.services import Services
from svc.utils import short_id

logger = logging.getLogger(__name__)

# One replica asks Seam for a session's backup at a time; a replica that dies lets go then.
LEASE_SECONDS = 30
# Well inside the lease, so no other replica asks while this one may still be answered.
ATTEMPT_SECONDS = 20
# Attempts while Seam cannot be reached, before the session is given up.
PULL_ATTEMPTS = 5


class Fallback(StrEnum):
    IN_USE = "in_use"
    """The session has its backup code now."""
    NOT_NOW = "not_now"
    """Another replica is asking, Seam is unreachable for now, or the session is past it."""
    NONE_AVAILABLE = "none_available"
    """No backup code is to be had: the session cannot go on."""


async def hand_out_backup_code(services: Services, session: SessionRecord) -> Fallback:
    """Pull a backup code for the session's code and record it with its e-mail, once."""
    db, seam = services.db, services.seam
    if seam is None or session.access_code_id is None:
        # No code on Seam, so none to pull a backup for (Seam pulls one per code).
        return Fallback.NONE_AVAILABLE
    attempt = await db.claim_backup_code_work(session.id, lease_seconds=LEASE_SECONDS)
    if attempt is None:
        return Fallback.NOT_NOW
    error: LockError
    try:
        async with asyncio.timeout(ATTEMPT_SECONDS):
            backup = await seam_accessor.pull_backup_code(
                seam, access_code_id=session.access_code_id
            )
    except TimeoutError:
        error = LockServiceUnavailable(f"no answer from Seam within {ATTEMPT_SECONDS} s")
    except LockError as raised:
        error = raised
    else:
        return await _record(services, session, backup)
    if error.retryable and attempt < PULL_ATTEMPTS:
        logger.warning(
            "lock.backup_retry session=%s attempt=%s reason=%s",
            short_id(session.id),
            attempt,
            error.reason,
        )
        return Fallback.NOT_NOW
    logger.error("lock.backup_unavailable session=%s reason=%s", short_id(session.id), error.reason)
    return Fallback.NONE_AVAILABLE


async def _record(services: Services, session: SessionRecord, backup: BackupCode) -> Fallback:
    emails = email_manager.backup_code_emails(
        session,
        backup_code=backup.code,
        end_session_url=services.settings.end_session_link(session.id),
        operator=services.settings.OPERATOR_EMAIL,
    )
    outcome = await services.db.record_backup_code(session.id, backup, emails=emails)
    if outcome == "recorded":
        services.outbox.wake()
        logger.warning(
            "lock.backup_in_use session=%s backup_access_code_id=%s",
            short_id(session.id),
            backup.access_code_id,
        )
        return Fallback.IN_USE
    if outcome == "taken":
        # Seam answered a backup code another session holds: never hand it out twice.
        logger.error(
            "lock.backup_taken session=%s backup_access_code_id=%s",
            short_id(session.id),
            backup.access_code_id,
        )
        return Fallback.NONE_AVAILABLE
    return Fallback.NOT_NOW
