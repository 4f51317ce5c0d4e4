"""Every query of the service, behind one small async interface.

`Database` is what the rest of the service calls. Two backends implement it:

- `PostgresDatabase`, on asyncpg with a pool, for a connection string (any Postgres:
  Supabase's, the embedded one of local mode, the tests');
- `SupabaseDatabase`, on the official `supabase` client, for a project's URL and
  service-role key: every query is an HTTP request to the project's PostgREST API.

The rules that need several statements at once, or the database's clock, are SQL
functions in ``supabase/migrations``: the asyncpg backend calls them with ``select``, the
Supabase one with ``rpc()``, so both run the same definition of every rule.
"""

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import httpx
from postgrest import APIError, ReturnMethod
from supabase import AsyncClient, AsyncClientOptions, AsyncSupabaseException, acreate_client

from svc.env import ConfigurationError
from svc.errors import ServiceError
from svc.records import (
    ChargeClaim,
    EndedSession,
    NewPod,
    OutboxEmail,
    Pod,
    PodChanges,
    QueuedEmail,
    SessionRecord,
    StartOutcome,
    StartSessionRequest,
)
from svc.types import PaymentRecorded, PaymentStatus, StartOutcomeKind

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

    async def end_session(
        self, session_id: UUID, *, max_minutes: int, lease_seconds: int
    ) -> EndedSession | None:
        """Fix the session's end if it is still open (the first call's end counts), free
        its pod, and take its charge lease if nobody holds it; the session as it then
        stands, or None for an unknown id."""
        ...

    async def claim_charge(
        self, session_id: UUID, *, cost_pence: int, lease_seconds: int
    ) -> ChargeClaim | None:
        """Fix the cost unless it was fixed before, and take the charge lease if free.
        None once the session is settled (or if it has not ended)."""
        ...

    async def release_charge(self, session_id: UUID) -> None: ...

    async def record_payment(
        self,
        session_id: UUID,
        *,
        cost_pence: int,
        status: PaymentStatus,
        payment_intent_id: str | None,
        error: str | None,
        emails: Sequence[QueuedEmail],
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> PaymentRecorded:
        """Record a payment outcome with the session's cost (a cost fixed before stands)
        and queue its e-mails, once: "recorded", "unchanged" (settled before) or
        "duplicate" (the event was seen before)."""
        ...

    async def list_unsettled_sessions(self, *, idle_seconds: int) -> list[UUID]: ...

    async def list_overdue_sessions(self, *, max_minutes: int) -> list[UUID]: ...

    # Access codes on smart locks: each rule is a function of 0002_access_code_work.sql

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

    async def mark_emails_sent(self, email_ids: Sequence[int]) -> None: ...

    async def mark_email_failed(
        self, email_id: int, *, retry_in_seconds: int, error: str
    ) -> None: ...


_POD_COLUMNS = "id, name, address, price, currency, in_use, seam_device_id"

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


# Rows reach these as asyncpg records (Decimal, datetime, UUID) or as PostgREST's JSON
# (strings for all three); each converter takes either.


def _decimal(value: object) -> Decimal:
    # A JSON number would already be a binary float: prices are read as text instead.
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        return Decimal(value)
    raise TypeError(f"expected an exact decimal, got {type(value).__name__}")


def _timestamp(value: object) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(parsed, datetime) or parsed.tzinfo is None:
        raise TypeError(f"expected a timestamp with a time zone, got {value!r}")
    return parsed


def _optional_timestamp(value: object) -> datetime | None:
    return None if value is None else _timestamp(value)


def _uuid(value: object) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def _pod(row: Mapping[str, Any]) -> Pod:
    return Pod(
        id=row["id"],
        name=row["name"],
        address=row["address"],
        price=_decimal(row["price"]),
        currency=row["currency"],
        in_use=row["in_use"],
        seam_device_id=row["seam_device_id"],
    )


def _session(row: Mapping[str, Any]) -> SessionRecord:
    status = row["payment_status"]
    return SessionRecord(
        id=_uuid(row["id"]),
        pod_id=row["pod_id"],
        pod_name=row["pod_name"],
        pod_address=row["pod_address"],
        seam_device_id=row["seam_device_id"],
        user_email=row["user_email"],
        start_time=_timestamp(row["start_time"]),
        end_time=_optional_timestamp(row["end_time"]),
        price_per_minute=_decimal(row["price_per_minute"]),
        free_minutes=row["free_minutes"],
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
        now=_timestamp(row["now"]),
    )


def _ended_session(row: Mapping[str, Any]) -> EndedSession:
    claimed = row["charge_claimed"]
    if not isinstance(claimed, bool):
        raise TypeError(f"expected a flag for the charge lease, got {claimed!r}")
    return EndedSession(_session(row), charge_claimed=claimed)


def _charge_claim(row: Mapping[str, Any]) -> ChargeClaim:
    cost, claimed = row["cost_pence"], row["claimed"]
    if not isinstance(cost, int) or not isinstance(claimed, bool):
        raise TypeError(f"expected a cost in pence and a flag, got {dict(row)!r}")
    return ChargeClaim(cost_pence=cost, claimed=claimed)


def _outbox_email(row: Mapping[str, Any]) -> OutboxEmail:
    return OutboxEmail(
        id=row["id"],
        dedupe_key=row["dedupe_key"],
        kind=row["kind"],
        recipient=row["recipient"],
        payload=row["payload"],
        attempts=row["attempts"],
    )


def _start_outcome(result: Mapping[str, Any]) -> StartOutcome:
    session_id = result.get("session_id")
    return StartOutcome(
        outcome=StartOutcomeKind(result["outcome"]),
        session_id=_uuid(session_id) if session_id else None,
    )


def _emails_json(emails: Sequence[QueuedEmail]) -> list[dict[str, Any]]:
    return [email.as_json() for email in emails]


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Nothing to undo when a connection goes back to the pool: the service never changes
    session state (no SET, LISTEN or advisory lock on pooled connections), so the default
    reset query would be one wasted round trip per request."""


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
                reset=_keep_session,
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

    async def _run(self, method: str, query: str, *args: object) -> Any:
        """One statement on a pooled connection; trouble reaching the database becomes
        DatabaseUnavailable, anything the database refused stays as it is."""
        try:
            connection = await self._pool.acquire()
        except (*_UNAVAILABLE, asyncpg.PostgresError) as error:
            # No connection at all: down, restarting, refusing connections, out of slots.
            logger.warning("database.unavailable error=%s", type(error).__name__)
            raise DatabaseUnavailable() from error
        try:
            return await getattr(connection, method)(query, *args)
        except _UNAVAILABLE as error:
            logger.warning("database.unavailable error=%s", type(error).__name__)
            raise DatabaseUnavailable() from error
        finally:
            await self._pool.release(connection)

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._run("fetch", query, *args)
        return rows

    async def _fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run("fetchrow", query, *args)
        return row

    async def _fetchval(self, query: str, *args: object) -> Any:
        return await self._run("fetchval", query, *args)

    async def _execute(self, query: str, *args: object) -> str:
        status: str = await self._run("execute", query, *args)
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
        row = await self._fetchrow("select * from qwip_get_session(p_session_id => $1)", session_id)
        return _session(row) if row else None

    async def get_session_by_setup_intent(self, setup_intent_id: str) -> SessionRecord | None:
        row = await self._fetchrow(
            "select * from qwip_get_session(p_setup_intent_id => $1)", setup_intent_id
        )
        return _session(row) if row else None

    async def start_session(self, request: StartSessionRequest) -> StartOutcome:
        result = await self._fetchval(
            "select qwip_start_session($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            request.event_id,
            request.event_type,
            request.session_id,
            request.setup_intent_id,
            request.pod_id,
            request.user_email,
            request.customer_id,
            request.payment_method,
            request.access_code,
            request.free_minutes,
            request.started_email.as_json() if request.started_email else None,
            request.unavailable_email.as_json() if request.unavailable_email else None,
        )
        return _start_outcome(result)

    async def end_session(
        self, session_id: UUID, *, max_minutes: int, lease_seconds: int
    ) -> EndedSession | None:
        row = await self._fetchrow(
            "select * from qwip_end_session($1, $2, $3)", session_id, max_minutes, lease_seconds
        )
        return _ended_session(row) if row else None

    async def claim_charge(
        self, session_id: UUID, *, cost_pence: int, lease_seconds: int
    ) -> ChargeClaim | None:
        row = await self._fetchrow(
            "select * from qwip_claim_charge($1, $2, $3)", session_id, cost_pence, lease_seconds
        )
        return _charge_claim(row) if row else None

    async def release_charge(self, session_id: UUID) -> None:
        await self._execute(
            "update pod_sessions set charge_locked_until = null where id = $1", session_id
        )

    async def record_payment(
        self,
        session_id: UUID,
        *,
        cost_pence: int,
        status: PaymentStatus,
        payment_intent_id: str | None,
        error: str | None,
        emails: Sequence[QueuedEmail],
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> PaymentRecorded:
        outcome: str = await self._fetchval(
            "select qwip_record_payment($1, $2, $3, $4, $5, $6, $7, $8)",
            session_id,
            cost_pence,
            status.value,
            payment_intent_id,
            error,
            _emails_json(emails),
            event_id,
            event_type,
        )
        return PaymentRecorded(outcome)

    async def list_unsettled_sessions(self, *, idle_seconds: int) -> list[UUID]:
        ids: list[UUID] = await self._fetchval(
            "select qwip_list_unsettled_sessions($1)", idle_seconds
        )
        return ids

    async def list_overdue_sessions(self, *, max_minutes: int) -> list[UUID]:
        ids: list[UUID] = await self._fetchval("select qwip_list_overdue_sessions($1)", max_minutes)
        return ids

    # Access codes on smart locks

    async def list_access_code_work(self, *, limit: int) -> list[UUID]:
        ids: list[UUID] = await self._fetchval("select qwip_list_access_code_work($1)", limit)
        return ids

    async def claim_access_code_work(self, session_id: UUID, *, lease_seconds: int) -> int | None:
        attempt: int | None = await self._fetchval(
            "select qwip_claim_access_code_work($1, $2)", session_id, lease_seconds
        )
        return attempt

    async def retry_access_code_work(self, session_id: UUID, *, retry_in_seconds: float) -> None:
        await self._execute(
            "select qwip_retry_access_code_work($1, $2)", session_id, retry_in_seconds
        )

    async def record_access_code(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool:
        recorded: bool = await self._fetchval(
            "select qwip_record_access_code($1, $2, $3)", session_id, access_code_id, status
        )
        return recorded

    async def update_access_code_status(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool:
        updated: bool = await self._fetchval(
            "select qwip_update_access_code_status($1, $2, $3)", session_id, access_code_id, status
        )
        return updated

    async def fail_access_code(self, session_id: UUID) -> bool:
        failed: bool = await self._fetchval("select qwip_fail_access_code($1)", session_id)
        return failed

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
        return [_outbox_email(row) for row in rows]

    async def mark_emails_sent(self, email_ids: Sequence[int]) -> None:
        await self._execute(
            "update email_outbox set sent_at = now(), locked_until = null, last_error = null "
            "where id = any($1::bigint[])",
            list(email_ids),
        )

    async def mark_email_failed(self, email_id: int, *, retry_in_seconds: int, error: str) -> None:
        await self._execute(
            "select qwip_postpone_email($1, $2, $3)", email_id, retry_in_seconds, error
        )


# The Supabase backend.

_POD_FIELDS = "id,name,address,price::text,currency,in_use,seam_device_id"
"""The pod's columns as PostgREST returns them: the price cast to text, so it stays exact."""

# Postgres reads the timestamp input 'now' as the transaction's time: a PATCH body can set
# a column to the database's clock, the same clock the functions and the asyncpg backend use.
_DATABASE_NOW = "now"

# Requests run in each caller's time: a stuck request is an unavailable database.
_HTTP_TIMEOUT = httpx.Timeout(20.0, connect=5.0)

_UNIQUE_VIOLATION = "23505"
_CHECK_VIOLATION = "23514"
# No such function or table, from PostgREST's schema cache or from Postgres: the project
# lacks the migration, or an older version of it.
_SCHEMA_MISSING = ("PGRST202", "PGRST205", "42883", "42P01")

_T = TypeVar("_T")
_R = TypeVar("_R", covariant=True)


class _Query(Protocol[_R]):
    """A built PostgREST request of the supabase client, sent by `execute()`."""

    def execute(self) -> Awaitable[_R]: ...


class _ServerUnavailable(Exception):
    """PostgREST or the gateway in front of it answered 5xx: down, overloaded, timing out."""


class _KeyRefused(Exception):
    """The project refused the key (401/403): not the service-role key, or revoked."""


async def _check_status(response: httpx.Response) -> None:
    # The supabase client keeps no HTTP status on its errors, and builds a 5xx without a
    # JSON body into the same APIError as a refused query; decide here, by status.
    if response.status_code >= 500:
        raise _ServerUnavailable(response.status_code)
    if response.status_code in (401, 403):
        await response.aread()
        raise _KeyRefused(response.status_code, _error_code(response))


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return str(code) if code is not None else None


def _key_role(key: str) -> str | None:
    """The role a Supabase API key acts as, when the key says so."""
    if key.startswith("sb_publishable_"):
        return "anon"
    if key.startswith("sb_secret_"):
        return "service_role"
    parts = key.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    role = claims.get("role") if isinstance(claims, dict) else None
    return role if isinstance(role, str) else None


def _violated_constraint(error: APIError) -> str | None:
    found = re.search(r'constraint "([^"]+)"', error.message or "")
    return found.group(1) if found else None


def _expect(value: object, kind: type[_T], operation: str) -> _T:
    if not isinstance(value, kind):
        raise TypeError(f"{operation}: expected {kind.__name__} from PostgREST, got {value!r}")
    return value


def _price(value: Decimal) -> str:
    # As text, for PostgREST to cast to numeric: JSON numbers are floats to most readers.
    return format(value, "f")


class SupabaseDatabase:
    """The Supabase backend: the project's PostgREST API, with the service-role key.

    Rows are read and written over HTTP; every rule that needs more than one statement or
    the database's clock is one `rpc()` to the same SQL function the asyncpg backend calls.
    """

    def __init__(self, client: AsyncClient, http: httpx.AsyncClient) -> None:
        self._client = client
        self._http = http

    @classmethod
    async def connect(
        cls,
        url: str,
        key: str,
        *,
        pool_size: int = 10,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> "SupabaseDatabase":
        """A client of the project at `url`; nothing is sent until the first query.

        `transport` replaces the network (a test's stand-in for PostgREST).
        """
        role = _key_role(key)
        if role in ("anon", "authenticated"):
            # With the anon (publishable) key every table would look empty: row level
            # security hides all rows from it. Refuse to start rather than serve that.
            raise ConfigurationError(
                "SUPABASE_KEY is the project's anon (publishable) key; the service needs the "
                "service-role (secret) key, or a DATABASE_URL connection string"
            )
        http = httpx.AsyncClient(
            transport=transport,
            http2=True,
            timeout=_HTTP_TIMEOUT,
            limits=httpx.Limits(max_connections=pool_size),
            event_hooks={"response": [_check_status]},
        )
        options = AsyncClientOptions(
            httpx_client=http,
            # The callers retry already (Stripe redelivers, pages and the background round
            # call again); the client's own retries would stall a request for 7 seconds.
            postgrest_client_retry=False,
            auto_refresh_token=False,
            persist_session=False,
        )
        try:
            client = await acreate_client(url, key, options)
        except AsyncSupabaseException as error:
            await http.aclose()
            raise ConfigurationError(f"SUPABASE_URL {url!r}: {error.message}") from None
        return cls(client, http)

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, query: _Query[_T]) -> _T:
        try:
            return await query.execute()
        except (httpx.TransportError, _ServerUnavailable) as error:
            # Unreachable, timed out, or down: the same 503 as the asyncpg backend's.
            logger.warning("database.unavailable error=%s %s", type(error).__name__, error)
            raise DatabaseUnavailable() from error
        except _KeyRefused as error:
            status, code = error.args
            logger.error(
                "database.key_refused status=%s code=%s: SUPABASE_KEY must be the project's "
                "service-role key and the migration must be applied",
                status,
                code,
            )
            raise DatabaseUnavailable() from error
        except APIError as error:
            if error.code not in _SCHEMA_MISSING:
                raise
            logger.error(
                "database.schema_missing code=%s message=%s: apply "
                "supabase/migrations/*.sql to the project, in order",
                error.code,
                error.message,
            )
            raise DatabaseUnavailable() from error

    async def _rows(self, query: _Query[Any]) -> list[dict[str, Any]]:
        response = await self._send(query)
        return _expect(response.data, list, "rows")

    async def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        response = await self._send(self._client.rpc(function, params))
        return response.data

    async def ping(self) -> None:
        await self._rows(self._client.table("pods").select("id").limit(1))

    # Pods

    async def list_pods(self) -> list[Pod]:
        rows = await self._rows(self._client.table("pods").select(_POD_FIELDS).order("name"))
        return [_pod(row) for row in rows]

    async def get_pod_by_name(self, name: str) -> Pod | None:
        rows = await self._rows(self._client.table("pods").select(_POD_FIELDS).eq("name", name))
        return _pod(rows[0]) if rows else None

    async def get_pod_by_id(self, pod_id: int) -> Pod | None:
        rows = await self._rows(self._client.table("pods").select(_POD_FIELDS).eq("id", pod_id))
        return _pod(rows[0]) if rows else None

    async def insert_pod(self, pod: NewPod) -> Pod:
        body = {
            "name": pod.name,
            "address": pod.address,
            "price": _price(pod.price),
            "currency": pod.currency,
            "seam_device_id": pod.seam_device_id,
        }
        try:
            rows = await self._rows(self._client.table("pods").insert(body).select(_POD_FIELDS))
        except APIError as error:
            if error.code == _UNIQUE_VIOLATION:
                raise PodNameTaken(pod.name) from None
            if error.code == _CHECK_VIOLATION:
                raise InvalidPod(_check_message(_violated_constraint(error))) from None
            raise
        return _pod(rows[0])

    async def update_pod(self, name: str, changes: PodChanges) -> Pod | None:
        body: dict[str, Any] = {}
        if changes.address is not None:
            body["address"] = changes.address
        if changes.price is not None:
            body["price"] = _price(changes.price)
        if changes.currency is not None:
            body["currency"] = changes.currency
        if changes.clear_seam_device_id:
            body["seam_device_id"] = None
        elif changes.seam_device_id is not None:
            body["seam_device_id"] = changes.seam_device_id
        if not body:
            return await self.get_pod_by_name(name)
        query = self._client.table("pods").update(body).eq("name", name).select(_POD_FIELDS)
        try:
            rows = await self._rows(query)
        except APIError as error:
            if error.code == _CHECK_VIOLATION:
                raise InvalidPod(_check_message(_violated_constraint(error))) from None
            raise
        return _pod(rows[0]) if rows else None

    # Sessions

    async def _first_row(self, function: str, params: dict[str, Any]) -> Any:
        """The first row a set-returning function answers, or None when it answers none."""
        rows = _expect(await self._rpc(function, params), list, function)
        return rows[0] if rows else None

    async def _get_session(self, params: dict[str, str]) -> SessionRecord | None:
        row = await self._first_row("qwip_get_session", params)
        return _session(row) if row else None

    async def get_session_by_id(self, session_id: UUID) -> SessionRecord | None:
        return await self._get_session({"p_session_id": str(session_id)})

    async def get_session_by_setup_intent(self, setup_intent_id: str) -> SessionRecord | None:
        return await self._get_session({"p_setup_intent_id": setup_intent_id})

    async def start_session(self, request: StartSessionRequest) -> StartOutcome:
        result = await self._rpc(
            "qwip_start_session",
            {
                "p_event_id": request.event_id,
                "p_event_type": request.event_type,
                "p_session_id": str(request.session_id),
                "p_setup_intent_id": request.setup_intent_id,
                "p_pod_id": request.pod_id,
                "p_user_email": request.user_email,
                "p_customer_id": request.customer_id,
                "p_payment_method": request.payment_method,
                "p_access_code": request.access_code,
                "p_free_minutes": request.free_minutes,
                "p_started_email": (
                    request.started_email.as_json() if request.started_email else None
                ),
                "p_unavailable_email": (
                    request.unavailable_email.as_json() if request.unavailable_email else None
                ),
            },
        )
        return _start_outcome(_expect(result, dict, "qwip_start_session"))

    async def end_session(
        self, session_id: UUID, *, max_minutes: int, lease_seconds: int
    ) -> EndedSession | None:
        row = await self._first_row(
            "qwip_end_session",
            {
                "p_session_id": str(session_id),
                "p_max_minutes": max_minutes,
                "p_lease_seconds": lease_seconds,
            },
        )
        return _ended_session(row) if row else None

    async def claim_charge(
        self, session_id: UUID, *, cost_pence: int, lease_seconds: int
    ) -> ChargeClaim | None:
        row = await self._first_row(
            "qwip_claim_charge",
            {
                "p_session_id": str(session_id),
                "p_cost_pence": cost_pence,
                "p_lease_seconds": lease_seconds,
            },
        )
        return _charge_claim(row) if row else None

    async def release_charge(self, session_id: UUID) -> None:
        await self._send(
            self._client.table("pod_sessions")
            .update({"charge_locked_until": None}, returning=ReturnMethod.minimal)
            .eq("id", str(session_id))
        )

    async def record_payment(
        self,
        session_id: UUID,
        *,
        cost_pence: int,
        status: PaymentStatus,
        payment_intent_id: str | None,
        error: str | None,
        emails: Sequence[QueuedEmail],
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> PaymentRecorded:
        outcome = await self._rpc(
            "qwip_record_payment",
            {
                "p_session_id": str(session_id),
                "p_cost_pence": cost_pence,
                "p_status": status.value,
                "p_payment_intent_id": payment_intent_id,
                "p_error": error,
                "p_emails": _emails_json(emails),
                "p_event_id": event_id,
                "p_event_type": event_type,
            },
        )
        return PaymentRecorded(_expect(outcome, str, "qwip_record_payment"))

    async def _session_ids(self, function: str, params: dict[str, Any]) -> list[UUID]:
        return [
            _uuid(value) for value in _expect(await self._rpc(function, params), list, function)
        ]

    async def list_unsettled_sessions(self, *, idle_seconds: int) -> list[UUID]:
        return await self._session_ids(
            "qwip_list_unsettled_sessions", {"p_idle_seconds": idle_seconds}
        )

    async def list_overdue_sessions(self, *, max_minutes: int) -> list[UUID]:
        return await self._session_ids("qwip_list_overdue_sessions", {"p_max_minutes": max_minutes})

    # Access codes on smart locks

    async def list_access_code_work(self, *, limit: int) -> list[UUID]:
        return await self._session_ids("qwip_list_access_code_work", {"p_limit": limit})

    async def claim_access_code_work(self, session_id: UUID, *, lease_seconds: int) -> int | None:
        attempt = await self._rpc(
            "qwip_claim_access_code_work",
            {"p_session_id": str(session_id), "p_lease_seconds": lease_seconds},
        )
        # null: another replica holds the lease, or a retry delay runs
        return None if attempt is None else _expect(attempt, int, "qwip_claim_access_code_work")

    async def retry_access_code_work(self, session_id: UUID, *, retry_in_seconds: float) -> None:
        await self._rpc(
            "qwip_retry_access_code_work",
            {"p_session_id": str(session_id), "p_retry_in_seconds": retry_in_seconds},
        )

    async def record_access_code(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool:
        recorded = await self._rpc(
            "qwip_record_access_code",
            {
                "p_session_id": str(session_id),
                "p_access_code_id": access_code_id,
                "p_status": status,
            },
        )
        return _expect(recorded, bool, "qwip_record_access_code")

    async def update_access_code_status(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool:
        updated = await self._rpc(
            "qwip_update_access_code_status",
            {
                "p_session_id": str(session_id),
                "p_access_code_id": access_code_id,
                "p_status": status,
            },
        )
        return _expect(updated, bool, "qwip_update_access_code_status")

    async def fail_access_code(self, session_id: UUID) -> bool:
        failed = await self._rpc("qwip_fail_access_code", {"p_session_id": str(session_id)})
        return _expect(failed, bool, "qwip_fail_access_code")

    # Stripe events

    async def is_event_processed(self, event_id: str) -> bool:
        rows = await self._rows(self._client.table("stripe_events").select("id").eq("id", event_id))
        return bool(rows)

    async def record_event(
        self, event_id: str, event_type: str, emails: Sequence[QueuedEmail] = ()
    ) -> bool:
        is_new = await self._rpc(
            "qwip_record_event",
            {"p_event_id": event_id, "p_event_type": event_type, "p_emails": _emails_json(emails)},
        )
        return _expect(is_new, bool, "qwip_record_event")

    # E-mail outbox

    async def queue_emails(self, emails: Sequence[QueuedEmail]) -> None:
        if emails:
            await self._rpc("qwip_queue_emails", {"p_emails": _emails_json(emails)})

    async def claim_emails(self, *, limit: int, lease_seconds: int) -> list[OutboxEmail]:
        rows = await self._rpc(
            "qwip_claim_emails", {"p_limit": limit, "p_lease_seconds": lease_seconds}
        )
        return [_outbox_email(row) for row in _expect(rows, list, "qwip_claim_emails")]

    async def mark_emails_sent(self, email_ids: Sequence[int]) -> None:
        await self._send(
            self._client.table("email_outbox")
            .update(
                {"sent_at": _DATABASE_NOW, "locked_until": None, "last_error": None},
                returning=ReturnMethod.minimal,
            )
            .in_("id", list(email_ids))
        )

    async def mark_email_failed(self, email_id: int, *, retry_in_seconds: int, error: str) -> None:
        await self._rpc(
            "qwip_postpone_email",
            {"p_email_id": email_id, "p_retry_in_seconds": retry_in_seconds, "p_error": error},
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
