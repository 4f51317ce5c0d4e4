"""Door codes on smart locks: put on the pod's Seam lock once a session starts, taken off
once it ends, and what the page and the operator can ask about them.

Neither Stripe's webhook nor the page waits for Seam. The session and its access-code
e-mail commit first, in one transaction (the code is chosen beforehand, so the e-mail
carries it at once); then the lock worker of the replica that started the session is
woken and programs the lock. Every replica runs a lock worker and the database leases each
session to one of them at a time, so a replica that dies half-way is taken over when its
lease runs out. A code is looked up by its name before it is created, so an attempt after
a lost answer adopts the code instead of adding a second one.
"""

import asyncio
import logging
from datetime import timedelta
from uuid import UUID

from svc import backup_codes, email_manager, seam_accessor
from svc.background import retry_delay
from svc.backup_codes import Fallback
from svc.errors import ServiceError
from svc.models.records import BackupCode, SessionRecord
from svc.models.schemas import LockStatus, SessionStatus
from svc.seam_accessor import LockError, LockServiceUnavailable
from svc.services import Services
from svc.sessions import find_session
from svc.types import AccessCodeStatus, PaymentStatus, SessionState
from svc.utils import format_local_time, short_id

logger = logging.getLogger(__name__)

LOCK_BATCH = 20
LEASE_SECONDS = 120
# The longest one attempt talks to Seam: well inside the lease, so no other replica takes the
# session over while this one may still create its code.
ATTEMPT_SECONDS = 60
# Attempts at putting a code on the lock before the session is given up; attempts at taking
# it off before the operator is told (taking it off goes on until the code's window is over).
CODE_ATTEMPTS = 5
MAX_RETRY_SECONDS = 600
# A page asking whether the lock has the code gets the last known answer rather than wait.
STATUS_READ_SECONDS = 5


class NoSmartLock(ServiceError):
    status_code = 404

    def __init__(self, pod_name: str) -> None:
        super().__init__(f"Pod {pod_name!r} has no smart lock configured.")


class SmartLocksNotEnabled(ServiceError):
    status_code = 404

    def __init__(self, pod_name: str) -> None:
        super().__init__(
            f"Pod {pod_name!r} has a smart lock, but smart locks are not enabled on this service."
        )


# What the page and the operator ask


def code_status_of(
    session: SessionRecord, *, smart_locks: bool, backup: BackupCode | None = None
) -> SessionStatus:
    """Where the session's code is, from what the database knows. A backup code, pulled
    from the lock's own pool, opens the door whatever became of the first code."""
    stored = session.access_code_status
    on_a_lock = session.access_code_id is not None or stored is not None
    if not on_a_lock and not (smart_locks and session.seam_device_id is not None):
        status: str = AccessCodeStatus.LOCAL
    elif stored in (AccessCodeStatus.FAILED, AccessCodeStatus.REMOVED, AccessCodeStatus.EXPIRED):
        status = stored
    elif session.end_time is not None:
        status = AccessCodeStatus.REMOVING if session.access_code_id else AccessCodeStatus.REMOVED
    else:
        status = stored or AccessCodeStatus.PENDING
    smart_lock = status != AccessCodeStatus.LOCAL
    return SessionStatus(
        session_id=session.id,
        pod_name=session.pod_name,
        is_complete=session.end_time is not None,
        smart_lock=smart_lock,
        access_code_status=status,
        lock_has_code=(
            (status == AccessCodeStatus.SET or backup is not None) if smart_lock else None
        ),
        backup_code_in_use=backup is not None,
    )


async def session_status(services: Services, session_id: UUID) -> SessionStatus:
    """Whether the lock has the session's code yet, asking Seam while it is on its way."""
    db = services.db
    session = await find_session(db, session_id)
    if (
        services.seam is not None
        and session.access_code_id is not None
        and session.end_time is None
        and session.access_code_status != AccessCodeStatus.SET
    ):
        try:
            async with asyncio.timeout(STATUS_READ_SECONDS):
                fresh = await seam_accessor.get_access_code_status(
                    services.seam, access_code_id=session.access_code_id
                )
        except TimeoutError:
            logger.warning("lock.status_unread session=%s reason=timeout", short_id(session.id))
        except LockError as error:
            logger.warning(
                "lock.status_unread session=%s reason=%s", short_id(session.id), error.reason
            )
        else:
            if fresh is None:
                logger.warning(
                    "lock.code_missing session=%s access_code_id=%s",
                    short_id(session.id),
                    session.access_code_id,
                )
            elif fresh != session.access_code_status:
                await db.update_access_code_status(
                    session.id, access_code_id=session.access_code_id, status=fresh
                )
                session = await find_session(db, session_id)
    backup = await db.get_backup_code(session.id) if session.access_code_id else None
    status = code_status_of(session, smart_locks=services.seam is not None, backup=backup)
    if not status.smart_lock:
        return status
    unlocks = await db.get_session_unlocks(session.id)
    return status.model_copy(
        update={
            "first_unlocked_at": unlocks.first_unlocked_at,
            "unlock_count": unlocks.unlock_count,
        }
    )


class NotThePodsSession(ServiceError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__(
            "The lock's state is shown only with an open session of this pod: give the "
            "sessionId from its booking e-mail."
        )


async def lock_status(
    services: Services, *, name: str | None, pod_id: int | None, session_id: UUID
) -> LockStatus:
    """Seam's word on the pod's lock, for the holder of the pod's open session only.

    An unknown id, another pod's session and an ended one get the same 403, before any pod
    is looked up: the answer tells a caller without the session nothing (not whether the
    session or the pod exists, nor whether it has a lock) and costs no call to Seam.
    """
    session = await services.db.get_session_by_id(session_id)
    if (
        session is None
        or session.end_time is not None
        or (session.pod_id != pod_id if pod_id is not None else session.pod_name != name)
    ):
        raise NotThePodsSession()
    if session.seam_device_id is None:
        raise NoSmartLock(session.pod_name)
    if services.seam is None:
        raise SmartLocksNotEnabled(session.pod_name)
    state = await services.lock_states.get(
        services.seam,
        device_id=session.seam_device_id,
        max_age=services.settings.LOCK_STATUS_CACHE_SECONDS,
    )
    return LockStatus(locked=state.locked, online=state.online)


# The lock worker


async def put_on_and_take_off_codes(services: Services) -> None:
    """The lock job's round: codes onto locks and off them until no work is left."""
    while await do_lock_work(services) == LOCK_BATCH:
        pass


async def do_lock_work(services: Services) -> int:
    session_ids = await services.db.list_access_code_work(limit=LOCK_BATCH)
    # Side by side: one lock that answers slowly holds up no other pod.
    await asyncio.gather(*(_work_on(services, session_id) for session_id in session_ids))
    return len(session_ids)


async def _work_on(services: Services, session_id: UUID) -> None:
    db = services.db
    attempt = await db.claim_access_code_work(session_id, lease_seconds=LEASE_SECONDS)
    if attempt is None:
        return  # another replica has it, or its retry is not due
    try:
        session = await find_session(db, session_id)
        if (
            session.access_code_status == AccessCodeStatus.FAILED
            and session.state is not SessionState.SETTLED
        ):
            # A replica gave up on this code but stopped before it had ended the session.
            await _give_up(services, session, reason="the lock did not take the code")
            if session.access_code_id is not None:
                # Its code is on the lock: taken off in the next round, not after the lease.
                await db.retry_access_code_work(session.id, retry_in_seconds=0)
                services.lock_work.wake()
        elif session.access_code_id is not None and session.end_time is not None:
            await _take_off(services, session, attempt)
        elif session.access_code_id is None and session.end_time is None:
            await _put_on(services, session, attempt)
    except Exception:
        logger.exception("lock.error session=%s", short_id(session_id))


async def _put_on(services: Services, session: SessionRecord, attempt: int) -> None:
    db, settings, seam = services.db, services.settings, services.seam
    assert seam is not None
    if session.seam_device_id is None:
        return  # the operator took the lock off the pod meanwhile
    start = session.start_time.replace(microsecond=0)
    error: LockError
    try:
        async with asyncio.timeout(ATTEMPT_SECONDS):
            code = await seam_accessor.ensure_access_code(
                seam,
                device_id=session.seam_device_id,
                name=seam_accessor.access_code_name(session.id),
                code=session.access_code,
                starts_at=start,
                # The session cannot outlast this: it is ended there if still open.
                ends_at=start + timedelta(minutes=settings.MAX_SESSION_MINUTES),
            )
    except TimeoutError:
        error = LockServiceUnavailable(f"no answer from Seam within {ATTEMPT_SECONDS} s")
    except LockError as raised:
        error = raised
    else:
        await _record(services, session, code)
        return

    if error.retryable and attempt < CODE_ATTEMPTS:
        delay = retry_delay(settings.SEAM_RETRY_BASE_SECONDS, attempt, at_most=MAX_RETRY_SECONDS)
        logger.warning(
            "lock.code_retry session=%s attempt=%s in_seconds=%s reason=%s",
            short_id(session.id),
            attempt,
            delay,
            error.reason,
        )
        await db.retry_access_code_work(session.id, retry_in_seconds=delay)
        return
    logger.error(
        "lock.code_failed session=%s attempts=%s reason=%s",
        short_id(session.id),
        attempt,
        error.reason,
    )
    await code_did_not_set(services, session, reason=error.reason)


async def code_did_not_set(services: Services, session: SessionRecord, *, reason: str) -> None:
    """The failure path of a session's code (Seam failed to set it, or it is still not set
    CODE_FALLBACK_SECONDS after the start): a backup code from the lock's pool when there is
    one, and the session goes on; only without one is it ended without charge.

    Safe to call from any replica, any number of times: the lock worker, the background
    round and Seam's events all lead here."""
    fallback = await backup_codes.hand_out_backup_code(services, session)
    if fallback is not Fallback.NONE_AVAILABLE:
        return
    db = services.db
    if session.access_code_id is None:
        failed = await db.fail_access_code(session.id)
    else:
        failed = await db.fail_access_code_without_backup(session.id)
        reason += ", and no backup code was to be had"
    if failed:
        await _give_up(services, session, reason=reason)
        services.lock_work.wake()  # a code on the lock comes off


async def _record(
    services: Services, session: SessionRecord, code: seam_accessor.ProgrammedCode
) -> None:
    db = services.db
    if await db.record_access_code(
        session.id, access_code_id=code.access_code_id, status=code.status
    ):
        logger.info(
            "lock.code_created session=%s access_code_id=%s status=%s",
            short_id(session.id),
            code.access_code_id,
            code.status,
        )
        # Ended while the code was being made? Then it comes off in the next round.
        services.lock_work.wake()
        return
    current = await find_session(db, session.id)
    if current.access_code_id == code.access_code_id:
        return
    # Only if this attempt outlived its lease and the session was given up meanwhile.
    logger.error(
        "lock.code_unwanted session=%s access_code_id=%s",
        short_id(session.id),
        code.access_code_id,
    )
    assert services.seam is not None
    try:
        await seam_accessor.delete_access_code(services.seam, access_code_id=code.access_code_id)
    except LockError as error:
        logger.error(
            "lock.code_left_on_lock access_code_id=%s reason=%s",
            code.access_code_id,
            error.reason,
        )


async def _give_up(services: Services, session: SessionRecord, *, reason: str) -> None:
    """End a session whose code never reached the lock, charging nothing.

    Each step is safe to repeat, so a replica that finds this half-done finishes it.
    """
    db, settings = services.db, services.settings
    await db.queue_emails(
        email_manager.lock_failed_emails(session, reason=reason, operator=settings.OPERATOR_EMAIL)
    )
    services.outbox.wake()
    await db.end_session(
        session.id,
        max_minutes=settings.MAX_SESSION_MINUTES,
        lease_seconds=settings.CHARGE_LEASE_SECONDS,
    )
    await db.record_payment(
        session.id,
        cost_pence=0,
        status=PaymentStatus.NOT_CHARGED,
        payment_intent_id=None,
        error=None,
        emails=(),
    )
    logger.info("lock.session_given_up session=%s", short_id(session.id))


async def _take_off(services: Services, session: SessionRecord, attempt: int) -> None:
    db, settings, seam = services.db, services.settings, services.seam
    assert seam is not None and session.access_code_id is not None
    error: LockError
    backup = await db.get_backup_code(session.id)
    try:
        async with asyncio.timeout(ATTEMPT_SECONDS):
            if backup is not None:
                # Seam keeps a pulled backup until the first code's window ends: it must
                # not open the door after the session.
                await seam_accessor.delete_access_code(seam, access_code_id=backup.access_code_id)
            deleted = await seam_accessor.delete_access_code(
                seam, access_code_id=session.access_code_id
            )
    except TimeoutError:
        error = LockServiceUnavailable(f"no answer from Seam within {ATTEMPT_SECONDS} s")
    except LockError as raised:
        error = raised
    else:
        await db.update_access_code_status(
            session.id, access_code_id=session.access_code_id, status=AccessCodeStatus.REMOVED
        )
        logger.info(
            "lock.code_removed session=%s access_code_id=%s already_gone=%s",
            short_id(session.id),
            session.access_code_id,
            not deleted,
        )
        return

    expires = session.start_time.replace(microsecond=0) + timedelta(
        minutes=settings.MAX_SESSION_MINUTES
    )
    if session.now >= expires:
        await db.update_access_code_status(
            session.id, access_code_id=session.access_code_id, status=AccessCodeStatus.EXPIRED
        )
        logger.warning(
            "lock.code_expired session=%s access_code_id=%s reason=%s",
            short_id(session.id),
            session.access_code_id,
            error.reason,
        )
        return
    if attempt == CODE_ATTEMPTS:
        await db.queue_emails(
            email_manager.code_not_removed_alert(
                session,
                reason=error.reason,
                expires=format_local_time(expires, settings.timezone),
                operator=settings.OPERATOR_EMAIL,
            )
        )
        services.outbox.wake()
    delay = retry_delay(settings.SEAM_RETRY_BASE_SECONDS, attempt, at_most=MAX_RETRY_SECONDS)
    logger.warning(
        "lock.remove_retry session=%s attempt=%s in_seconds=%s reason=%s",
        short_id(session.id),
        attempt,
        delay,
        error.reason,
    )
    await db.retry_access_code_work(session.id, retry_in_seconds=delay)


# Codes the lock is slow to set


async def replace_unset_codes(services: Services) -> None:
    """The fallback round: a code still not set CODE_FALLBACK_SECONDS after its session's
    start, as Seam sees it now, goes down the failure path (a backup code)."""
    session_ids = await services.db.list_backup_code_work(
        after_seconds=services.settings.CODE_FALLBACK_SECONDS, limit=LOCK_BATCH
    )
    await asyncio.gather(*(_replace_if_unset(services, session_id) for session_id in session_ids))


async def _replace_if_unset(services: Services, session_id: UUID) -> None:
    db, seam = services.db, services.seam
    assert seam is not None
    try:
        session = await find_session(db, session_id)
        assert session.access_code_id is not None
        try:
            async with asyncio.timeout(STATUS_READ_SECONDS):
                fresh = await seam_accessor.get_access_code_status(
                    seam, access_code_id=session.access_code_id
                )
        except (TimeoutError, LockError):
            fresh = None  # Seam unreachable: pulling a backup says so, and is retried
        if fresh == AccessCodeStatus.SET:
            await db.update_access_code_status(
                session.id, access_code_id=session.access_code_id, status=fresh
            )
            return
        after = services.settings.CODE_FALLBACK_SECONDS
        await code_did_not_set(
            services, session, reason=f"the lock had not set the code {after} s after the start"
        )
    except Exception:
        logger.exception("lock.backup_error session=%s", short_id(session_id))
