"""Every query of the service, behind one small async interface.

`Database` is what the rest of the service calls. `PostgresDatabase` implements it on
asyncpg with a pool (any Postgres: Supabase's, the embedded one of local mode, the
tests'). The rules that need several statements at once are SQL functions in
``supabase/migrations``, so each backend runs the same definition of them.
"""

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg

from svc.errors import ServiceError
from svc.models import (
    NewPod,
    OutboxEmail,
    Pod,
    PodChanges,
    QueuedEmail,
    SessionRecord,
    StartOutcome,
    StartSessionRequest,
)
from svc.types import PaymentStatus

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"


class DatabaseUnavailable(ServiceError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__("The database cannot be reached right now; please try again shortly.")


class PodNameTaken(ServiceError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(f"A pod named {name!r} already exists.")


class InvalidPod(ServiceError):
    status_code = 422


class Database(Protocol):
    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    # Pods

    async def list_pods(self) -> list[Pod]: ...

    async def get_pod_by_name(self, name: str) -> Pod | None: ...

    async def get_pod_by_id(self, pod_id: int) -> Pod | None: ...

    async def insert_pod(self, pod: NewPod) -> Pod: ...

    async def update_pod(self, name: str, changes: PodChanges) -> Pod | None: ...

    # Sessions

    async def get_session_by_id(self, session_id: UUID) -> SessionRecord | None: ...

    async def get_session_by_setup_intent(self, setup_intent_id: str) -> SessionRecord | None: ...

    async def start_session(self, request: StartSessionRequest) -> StartOutcome: ...

    async def close_session(self, session_id: UUID, *, max_minutes: int) -> bool: ...

    async def set_session_cost(self, session_id: UUID, cost_pence: int) -> None: ...

    async def claim_charge(self, session_id: UUID, *, lease_seconds: int) -> bool: ...

    async def release_charge(self, session_id: UUID) -> None: ...

    async def record_payment(
        self,
        session_id: UUID,
        *,
        status: PaymentStatus,
        payment_intent_id: str | None,
        error: str | None,
        emails: Sequence[QueuedEmail],
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> str: ...

    async def list_unsettled_sessions(self, *, idle_seconds: int) -> list[UUID]: ...

    async def list_overdue_sessions(self, *, max_minutes: int) -> list[UUID]: ...

    # Access codes on smart locks

    async def list_access_code_work(self, *, limit: int) -> list[UUID]: ...

    async def claim_access_code_work(
        self, session_id: UUID, *, lease_seconds: int
    ) -> int | None: ...

    async def retry_access_code_work(
        self, session_id: UUID, *, retry_in_seconds: float
    ) -> None: ...

    async def record_access_code(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool: ...

    async def update_access_code_status(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool: ...

    async def fail_access_code(self, session_id: UUID) -> bool: ...

    # Stripe events

    async def is_event_processed(self, event_id: str) -> bool: ...

    async def record_event(
        self, event_id: str, event_type: str, emails: Sequence[QueuedEmail] = ()
    ) -> bool: ...

    # E-mail outbox

    async def queue_emails(self, emails: Sequence[QueuedEmail]) -> None: ...

    async def claim_emails(self, *, limit: int, lease_seconds: int) -> list[OutboxEmail]: ...

    async def mark_email_sent(self, email_id: int) -> None: ...

    async def mark_email_failed(
        self, email_id: int, *, retry_in_seconds: int, error: str
    ) -> None: ...


_POD_COLUMNS = "id, name, address, price, currency, in_use, seam_device_id"

_SESSION_SELECT = """
    select s.id, s.pod_id, p.name as pod_name, p.address as pod_address, p.seam_device_id,
           s.user_email, s.start_time, s.end_time, s.price_per_minute, s.currency,
           s.stripe_customer_id, s.stripe_payment_method, s.setup_intent_id, s.access_code,
           s.access_code_id, s.access_code_status, s.cost_pence, s.payment_intent_id,
           s.payment_status, s.payment_error, now() as now
    from pod_sessions s join pods p on p.id = s.pod_id
"""

# Connection trouble, as opposed to a query the database refused.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # what a connection the server has just ended can raise
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def _pod(row: asyncpg.Record) -> Pod:
    return Pod(
        id=row["id"],
        name=row["name"],
        address=row["address"],
        price=row["price"],
        currency=row["currency"],
        in_use=row["in_use"],
        seam_device_id=row["seam_device_id"],
    )


def _session(row: asyncpg.Record) -> SessionRecord:
    status = row["payment_status"]
    return SessionRecord(
        id=row["id"],
        pod_id=row["pod_id"],
        pod_name=row["pod_name"],
        pod_address=row["pod_address"],
        seam_device_id=row["seam_device_id"],
        user_email=row["user_email"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        price_per_minute=row["price_per_minute"],
        currency=row["currency"],
        stripe_customer_id=row["stripe_customer_id"],
        stripe_payment_method=row["stripe_payment_method"],
        setup_intent_id=row["setup_intent_id"],
        access_code=row["access_code"],
        access_code_id=row["access_code_id"],
        access_code_status=row["access_code_status"],
        cost_pence=row["cost_pence"],
        payment_intent_id=row["payment_intent_id"],
        payment_status=PaymentStatus(status) if status is not None else None,
        payment_error=row["payment_error"],
        now=row["now"],
    )


def _emails_json(emails: Sequence[QueuedEmail]) -> list[dict[str, Any]]:
    return [email.as_json() for email in emails]


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


def _uses_transaction_pooler(dsn: str) -> bool:
    # Supabase's transaction pooler (port 6543) cannot keep prepared statements
    # from one transaction to the next.
    return urlsplit(dsn).port == 6543


class PostgresDatabase:
    """The asyncpg backend: a pool of connections to one Postgres database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, pool_size: int = 10) -> "PostgresDatabase":
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                init=_init_connection,
                statement_cache_size=0 if _uses_transaction_pooler(dsn) else 100,
                command_timeout=30,
                server_settings={"application_name": "qwipsvc"},
            )
        except _UNAVAILABLE as error:
            logger.error("database.connect_failed error=%s", type(error).__name__)
            raise DatabaseUnavailable() from error
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            connection = await self._pool.acquire()
        except (*_UNAVAILABLE, asyncpg.PostgresError) as error:
            # No connection at all: down, restarting, refusing connections, out of slots.
            logger.warning("database.unavailable error=%s", type(error).__name__)
            raise DatabaseUnavailable() from error
        try:
            yield connection
        except _UNAVAILABLE as error:
            logger.warning("database.unavailable error=%s", type(error).__name__)
            raise DatabaseUnavailable() from error
        finally:
            await self._pool.release(connection)

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        async with self._connection() as connection:
            rows: list[asyncpg.Record] = await connection.fetch(query, *args)
            return rows

    async def _fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        async with self._connection() as connection:
            row: asyncpg.Record | None = await connection.fetchrow(query, *args)
            return row

    async def _fetchval(self, query: str, *args: object) -> Any:
        async with self._connection() as connection:
            return await connection.fetchval(query, *args)

    async def _execute(self, query: str, *args: object) -> str:
        async with self._connection() as connection:
            status: str = await connection.execute(query, *args)
            return status

    async def ping(self) -> None:
        await self._fetchval("select 1")

    # Pods

    async def list_pods(self) -> list[Pod]:
        rows = await self._fetch(f"select {_POD_COLUMNS} from pods order by name")
        return [_pod(row) for row in rows]

    async def get_pod_by_name(self, name: str) -> Pod | None:
        row = await self._fetchrow(f"select {_POD_COLUMNS} from pods where name = $1", name)
        return _pod(row) if row else None

    async def get_pod_by_id(self, pod_id: int) -> Pod | None:
        row = await self._fetchrow(f"select {_POD_COLUMNS} from pods where id = $1", pod_id)
        return _pod(row) if row else None

    async def insert_pod(self, pod: NewPod) -> Pod:
        try:
            row = await self._fetchrow(
                f"""insert into pods (name, address, price, currency, seam_device_id)
                    values ($1, $2, $3, $4, $5) returning {_POD_COLUMNS}""",
                pod.name,
                pod.address,
                pod.price,
                pod.currency,
                pod.seam_device_id,
            )
        except asyncpg.UniqueViolationError:
            raise PodNameTaken(pod.name) from None
        except asyncpg.CheckViolationError as error:
            raise InvalidPod(_check_message(error.constraint_name)) from None
        assert row is not None
        return _pod(row)

    async def update_pod(self, name: str, changes: PodChanges) -> Pod | None:
        try:
            row = await self._fetchrow(
                f"""update pods set
                        address = coalesce($2, address),
                        price = coalesce($3, price),
                        currency = coalesce($4, currency),
                        seam_device_id = case when $6 then null
                                              else coalesce($5, seam_device_id) end
                    where name = $1 returning {_POD_COLUMNS}""",
                name,
                changes.address,
                changes.price,
                changes.currency,
                changes.seam_device_id,
                changes.clear_seam_device_id,
            )
        except asyncpg.CheckViolationError as error:
            raise InvalidPod(_check_message(error.constraint_name)) from None
        return _pod(row) if row else None

    # Sessions

    async def get_session_by_id(self, session_id: UUID) -> SessionRecord | None:
        row = await self._fetchrow(f"{_SESSION_SELECT} where s.id = $1", session_id)
        return _session(row) if row else None

    async def get_session_by_setup_intent(self, setup_intent_id: str) -> SessionRecord | None:
        row = await self._fetchrow(
            f"{_SESSION_SELECT} where s.setup_intent_id = $1", setup_intent_id
        )
        return _session(row) if row else None

    async def start_session(self, request: StartSessionRequest) -> StartOutcome:
        result = await self._fetchval(
            "select qwip_start_session($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            request.event_id,
            request.event_type,
            request.session_id,
            request.setup_intent_id,
            request.pod_id,
            request.user_email,
            request.customer_id,
            request.payment_method,
            request.access_code,
            request.started_email.as_json() if request.started_email else None,
            request.unavailable_email.as_json() if request.unavailable_email else None,
        )
        session_id = result.get("session_id")
        return StartOutcome(
            outcome=result["outcome"], session_id=UUID(session_id) if session_id else None
        )

    async def close_session(self, session_id: UUID, *, max_minutes: int) -> bool:
        found: bool = await self._fetchval(
            "select qwip_close_session($1, $2)", session_id, max_minutes
        )
        return found

    async def set_session_cost(self, session_id: UUID, cost_pence: int) -> None:
        # The first computation wins; a later one (another replica, a retry) keeps it.
        await self._execute(
            "update pod_sessions set cost_pence = $2, updated_at = now() "
            "where id = $1 and cost_pence is null and end_time is not null",
            session_id,
            cost_pence,
        )

    async def claim_charge(self, session_id: UUID, *, lease_seconds: int) -> bool:
        claimed: bool = await self._fetchval(
            "select qwip_claim_charge($1, $2)", session_id, lease_seconds
        )
        return claimed

    async def release_charge(self, session_id: UUID) -> None:
        await self._execute(
            "update pod_sessions set charge_locked_until = null where id = $1", session_id
        )

    async def record_payment(
        self,
        session_id: UUID,
        *,
        status: PaymentStatus,
        payment_intent_id: str | None,
        error: str | None,
        emails: Sequence[QueuedEmail],
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> str:
        outcome: str = await self._fetchval(
            "select qwip_record_payment($1, $2, $3, $4, $5, $6, $7)",
            session_id,
            status.value,
            payment_intent_id,
            error,
            _emails_json(emails),
            event_id,
            event_type,
        )
        return outcome

    async def list_unsettled_sessions(self, *, idle_seconds: int) -> list[UUID]:
        rows = await self._fetch(
            """select id from pod_sessions
               where payment_status = 'pending' and end_time is not null
                 and updated_at < now() - make_interval(secs => $1)
                 and (charge_locked_until is null or charge_locked_until < now())
               order by end_time limit 100""",
            idle_seconds,
        )
        return [row["id"] for row in rows]

    async def list_overdue_sessions(self, *, max_minutes: int) -> list[UUID]:
        rows = await self._fetch(
            """select id from pod_sessions
               where end_time is null and start_time < now() - make_interval(mins => $1)
               order by start_time limit 100""",
            max_minutes,
        )
        return [row["id"] for row in rows]

    # Access codes on smart locks

    async def list_access_code_work(self, *, limit: int) -> list[UUID]:
        """Sessions whose code must go onto their pod's lock, or come off it, or whose
        giving up was left half-done; none whose lease (or retry delay) is still running."""
        rows = await self._fetch(
            """select s.id from pod_sessions s join pods p on p.id = s.pod_id
               where (s.access_code_locked_until is null or s.access_code_locked_until < now())
                 and ((s.end_time is null and s.access_code_id is null
                       and s.access_code_status is null and p.seam_device_id is not null)
                   or (s.end_time is not null and s.access_code_id is not null
                       and s.access_code_status is distinct from 'removed'
                       and s.access_code_status is distinct from 'expired')
                   or (s.access_code_status = 'failed'
                       and (s.end_time is null or s.payment_status = 'pending')))
               order by s.start_time limit $1""",
            limit,
        )
        return [row["id"] for row in rows]

    async def claim_access_code_work(self, session_id: UUID, *, lease_seconds: int) -> int | None:
        """The lease on a session's lock work: this attempt's number, or None while another
        replica holds it (or a retry delay runs)."""
        attempt: int | None = await self._fetchval(
            """update pod_sessions
               set access_code_locked_until = now() + make_interval(secs => $2),
                   access_code_attempts = access_code_attempts + 1
               where id = $1
                 and (access_code_locked_until is null or access_code_locked_until < now())
               returning access_code_attempts""",
            session_id,
            lease_seconds,
        )
        return attempt

    async def retry_access_code_work(self, session_id: UUID, *, retry_in_seconds: float) -> None:
        await self._execute(
            "update pod_sessions "
            "set access_code_locked_until = now() + make_interval(secs => $2) where id = $1",
            session_id,
            retry_in_seconds,
        )

    async def record_access_code(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool:
        """Keep the id of the code made on the lock; false if the session has one already
        or was given up on meanwhile."""
        result = await self._execute(
            """update pod_sessions
               set access_code_id = $2, access_code_status = $3,
                   access_code_attempts = 0, access_code_locked_until = null
               where id = $1 and access_code_id is null
                 and access_code_status is distinct from 'failed'""",
            session_id,
            access_code_id,
            status,
        )
        return result == "UPDATE 1"

    async def update_access_code_status(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool:
        """A newer status of the same code; a code taken off (or expired) stays so."""
        result = await self._execute(
            """update pod_sessions set access_code_status = $3
               where id = $1 and access_code_id = $2
                 and access_code_status is distinct from 'removed'
                 and access_code_status is distinct from 'expired'""",
            session_id,
            access_code_id,
            status,
        )
        return result == "UPDATE 1"

    async def fail_access_code(self, session_id: UUID) -> bool:
        """Give up putting the code on the lock: true for the one caller that did, while the
        session is open and has no code on its lock."""
        result = await self._execute(
            """update pod_sessions set access_code_status = 'failed'
               where id = $1 and end_time is null
                 and access_code_id is null and access_code_status is null""",
            session_id,
        )
        return result == "UPDATE 1"

    # Stripe events

    async def is_event_processed(self, event_id: str) -> bool:
        found: bool = await self._fetchval(
            "select exists (select 1 from stripe_events where id = $1)", event_id
        )
        return found

    async def record_event(
        self, event_id: str, event_type: str, emails: Sequence[QueuedEmail] = ()
    ) -> bool:
        is_new: bool = await self._fetchval(
            "select qwip_record_event($1, $2, $3)", event_id, event_type, _emails_json(emails)
        )
        return is_new

    # E-mail outbox

    async def queue_emails(self, emails: Sequence[QueuedEmail]) -> None:
        if emails:
            await self._execute("select qwip_queue_emails($1)", _emails_json(emails))

    async def claim_emails(self, *, limit: int, lease_seconds: int) -> list[OutboxEmail]:
        rows = await self._fetch(
            "select id, dedupe_key, kind, recipient, payload, attempts "
            "from qwip_claim_emails($1, $2)",
            limit,
            lease_seconds,
        )
        return [
            OutboxEmail(
                id=row["id"],
                dedupe_key=row["dedupe_key"],
                kind=row["kind"],
                recipient=row["recipient"],
                payload=row["payload"],
                attempts=row["attempts"],
            )
            for row in rows
        ]

    async def mark_email_sent(self, email_id: int) -> None:
        await self._execute(
            "update email_outbox set sent_at = now(), locked_until = null, last_error = null "
            "where id = $1",
            email_id,
        )

    async def mark_email_failed(self, email_id: int, *, retry_in_seconds: int, error: str) -> None:
        await self._execute(
            "update email_outbox set locked_until = null, last_error = $3, "
            "next_attempt_at = now() + make_interval(secs => $2) where id = $1",
            email_id,
            retry_in_seconds,
            error[:500],
        )


def _check_message(constraint: str | None) -> str:
    return {
        "pods_name_shape": "A pod name is 1-64 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit.",
        "pods_price_not_negative": "The price per minute cannot be negative.",
        "pods_currency_code": "The currency must be a three-letter code such as gbp.",
    }.get(constraint or "", f"The pod breaks the rule {constraint}.")


async def apply_migrations(dsn: str) -> list[str]:
    """Apply every SQL file of the migrations folder, in order; each is idempotent.

    An advisory lock keeps two processes starting at once from running the DDL together.
    """
    applied = []
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("select pg_advisory_lock(hashtext('qwipsvc.migrations'))")
        try:
            for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
                await connection.execute(path.read_text())
                applied.append(path.name)
        finally:
            await connection.execute("select pg_advisory_unlock(hashtext('qwipsvc.migrations'))")
    finally:
        await connection.close()
    return applied
