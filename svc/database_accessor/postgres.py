"""The asyncpg backend: a pool of connections to one Postgres database (Supabase's, the
embedded one of local mode, the tests')."""

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg

from svc.database_accessor.base import (
    Database,
    DatabaseUnavailable,
    InvalidPod,
    Params,
    PodNameTaken,
)
from svc.database_accessor.rows import check_message, pod_from_row
from svc.models.records import NewPod, Pod, PodChanges

logger = logging.getLogger(__name__)

_POD_COLUMNS = (
    "id, name, address, price, currency, in_use, seam_device_id, disabled_reason, lock_online, "
    "lock_battery_level, lock_battery_low"
)

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


def _named_call(function: str, params: Params) -> str:
    """`function(p_a => $1, p_b => $2)`: the names are our own ``p_…`` constants, never
    input; the values go as parameters, typed by the function's signature."""
    arguments = ", ".join(f"{name} => ${n}" for n, name in enumerate(params, start=1))
    return f"{function}({arguments})"


class PostgresDatabase(Database):
    """The asyncpg backend: a pool of connections to one Postgres database."""

    answers_from: ClassVar[str] = "Postgres"

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
                # Idle connections stay open: the pool is small, and closing them needs a
                # timer armed at every release and cancelled at every acquire.
                max_inactive_connection_lifetime=0,
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

    # The SQL functions, with native values: asyncpg encodes UUIDs and jsonb itself.

    async def _call_rows(self, function: str, params: Params) -> list[asyncpg.Record]:
        return await self._fetch(f"select * from {_named_call(function, params)}", *params.values())

    async def _call_value(self, function: str, params: Params) -> Any:
        return await self._fetchval(f"select {_named_call(function, params)}", *params.values())

    async def ping(self) -> None:
        await self._fetchval("select 1")

    # Pods

    async def list_pods(self) -> list[Pod]:
        rows = await self._fetch(f"select {_POD_COLUMNS} from pods order by name")
        return [pod_from_row(row) for row in rows]

    async def get_pod_by_name(self, name: str) -> Pod | None:
        row = await self._fetchrow(f"select {_POD_COLUMNS} from pods where name = $1", name)
        return pod_from_row(row) if row else None

    async def get_pod_by_id(self, pod_id: int) -> Pod | None:
        row = await self._fetchrow(f"select {_POD_COLUMNS} from pods where id = $1", pod_id)
        return pod_from_row(row) if row else None

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
            raise InvalidPod(check_message(error.constraint_name)) from None
        assert row is not None
        return pod_from_row(row)

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
            raise InvalidPod(check_message(error.constraint_name)) from None
        return pod_from_row(row) if row else None

    # Sessions

    async def release_charge(self, session_id: UUID) -> None:
        await self._execute(
            "update pod_sessions set charge_locked_until = null where id = $1", session_id
        )

    # Stripe events

    async def is_event_processed(self, event_id: str) -> bool:
        found: bool = await self._fetchval(
            "select exists (select 1 from stripe_events where id = $1)", event_id
        )
        return found

    # E-mail outbox

    async def mark_emails_sent(self, email_ids: Sequence[int]) -> None:
        await self._execute(
            "update email_outbox set sent_at = now(), locked_until = null, last_error = null "
            "where id = any($1::bigint[])",
            list(email_ids),
        )
