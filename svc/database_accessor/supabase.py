"""The Supabase backend: a project's PostgREST API, reached with the official `supabase`
client and the service-role key; every query is one HTTP request."""

import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

import httpx
from postgrest import APIError, ReturnMethod
from supabase import AsyncClient, AsyncClientOptions, AsyncSupabaseException, acreate_client

from svc.database_accessor.base import (
    Database,
    DatabaseUnavailable,
    InvalidPod,
    Params,
    PodNameTaken,
)
from svc.database_accessor.rows import check_message, pod_from_row
from svc.env import ConfigurationError
from svc.models.records import NewPod, Pod, PodChanges

logger = logging.getLogger(__name__)

_POD_FIELDS = (
    "id,name,address,price::text,currency,in_use,seam_device_id,disabled_reason,lock_online,"
    "lock_battery_level::text,lock_battery_low"
)
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


def _price(value: Decimal) -> str:
    # As text, for PostgREST to cast to numeric: JSON numbers are floats to most readers.
    return format(value, "f")


def _json_value(value: object) -> object:
    """A function argument as PostgREST takes it: ids, exact numbers and times as text,
    which Postgres casts to the argument's type; the rest is JSON already."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return _price(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class SupabaseDatabase(Database):
    """The Supabase backend: the project's PostgREST API, with the service-role key.

    Rows are read and written over HTTP; every rule that needs more than one statement or
    the database's clock is one `rpc()` to the same SQL function the asyncpg backend calls
    (`Database`).
    """

    answers_from: ClassVar[str] = "PostgREST"

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
        return self._expect(response.data, list, "rows")

    # The SQL functions, by rpc(), with JSON values.

    async def _call_value(self, function: str, params: Params) -> Any:
        body = {name: _json_value(value) for name, value in params.items()}
        response = await self._send(self._client.rpc(function, body))
        return response.data

    async def _call_rows(self, function: str, params: Params) -> list[dict[str, Any]]:
        return self._expect(await self._call_value(function, params), list, function)

    async def ping(self) -> None:
        await self._rows(self._client.table("pods").select("id").limit(1))

    # Pods

    async def list_pods(self) -> list[Pod]:
        rows = await self._rows(self._client.table("pods").select(_POD_FIELDS).order("name"))
        return [pod_from_row(row) for row in rows]

    async def get_pod_by_name(self, name: str) -> Pod | None:
        rows = await self._rows(self._client.table("pods").select(_POD_FIELDS).eq("name", name))
        return pod_from_row(rows[0]) if rows else None

    async def get_pod_by_id(self, pod_id: int) -> Pod | None:
        rows = await self._rows(self._client.table("pods").select(_POD_FIELDS).eq("id", pod_id))
        return pod_from_row(rows[0]) if rows else None

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
                raise InvalidPod(check_message(_violated_constraint(error))) from None
            raise
        return pod_from_row(rows[0])

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
                raise InvalidPod(check_message(_violated_constraint(error))) from None
            raise
        return pod_from_row(rows[0]) if rows else None

    # Sessions

    async def release_charge(self, session_id: UUID) -> None:
        await self._send(
            self._client.table("pod_sessions")
            .update({"charge_locked_until": None}, returning=ReturnMethod.minimal)
            .eq("id", str(session_id))
        )

    # Stripe events

    async def is_event_processed(self, event_id: str) -> bool:
        rows = await self._rows(self._client.table("stripe_events").select("id").eq("id", event_id))
        return bool(rows)

    # E-mail outbox

    async def mark_emails_sent(self, email_ids: Sequence[int]) -> None:
        await self._send(
            self._client.table("email_outbox")
            .update(
                {"sent_at": _DATABASE_NOW, "locked_until": None, "last_error": None},
                returning=ReturnMethod.minimal,
            )
            .in_("id", list(email_ids))
        )
