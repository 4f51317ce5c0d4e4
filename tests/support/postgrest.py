"""A stand-in for a Supabase project's PostgREST, backed by the real test Postgres.

No PostgREST can be installed on these machines. `PostgrestOnPostgres` answers the
requests `SupabaseDatabase` sends by running the SQL PostgREST runs for them (rows as
`json_agg`, bodies through `json_populate_record`, functions called with named
arguments), so the behavioural tests exercise the real schema, functions and constraints
over the Supabase client's real requests. It understands only what the backend uses: the
`select` (with `::` casts), `order` and `limit` parameters, the `eq`, `in`, `is` and
`not.is` filters, single-row inserts and updates, and `rpc/`; anything else is answered 400, so a
new kind of request fails loudly instead of being answered wrongly.

Use it as an httpx transport (`httpx.MockTransport(stand_in)`) or serve it on a port
(`serve`) for an app that reaches Supabase over the network.
"""

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import uvicorn

_NAME = re.compile(r"[a-z_][a-z0-9_]*")

# PostgREST's status for a Postgres error, by SQLSTATE (the subset that can happen here).
_STATUS_BY_SQLSTATE = {"23503": 409, "23505": 409, "42501": 403, "42883": 404, "42P01": 404}
_STATUS_BY_CLASS = {"08": 503, "53": 503, "22": 400, "23": 400, "57": 500, "XX": 500}


class Unsupported(Exception):
    """A request outside what the stand-in understands."""


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise Unsupported(f"not a plain identifier: {value!r}")
    return f'"{value}"'


def _literal(value: object) -> str:
    """A value as an untyped SQL literal: Postgres casts it to the column or argument type,
    which is what PostgREST's text parameters amount to."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list):
        text = json.dumps(value)
    else:
        text = str(value)
    return "'" + text.replace("'", "''") + "'"


def _error(
    status: int, code: str | None, message: str, details: str | None = None
) -> httpx.Response:
    return httpx.Response(
        status, json={"code": code, "details": details, "hint": None, "message": message}
    )


class PostgrestOnPostgres:
    """Answers PostgREST requests made with `key` by running their SQL on `dsn`."""

    def __init__(self, dsn: str, key: str) -> None:
        self.dsn = dsn
        self.key = key
        self.requests: list[httpx.Request] = []
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def _connection_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=10)
        return self._pool

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        credentials = (request.headers.get("apikey"), request.headers.get("authorization"))
        if credentials != (self.key, f"Bearer {self.key}"):
            return httpx.Response(401, json={"message": "Invalid API key"})
        path = request.url.path
        if not path.startswith("/rest/v1/"):
            return _error(404, None, f"not a PostgREST path: {path}")
        try:
            resource = path.removeprefix("/rest/v1/")
            if resource.startswith("rpc/") and request.method == "POST":
                return await self._call(resource.removeprefix("rpc/"), request)
            return await self._table(resource, request)
        except Unsupported as error:
            return _error(400, "STAND-IN", f"the PostgREST stand-in cannot answer: {error}")
        except asyncpg.PostgresError as error:
            state = error.sqlstate or "XX000"
            status = _STATUS_BY_SQLSTATE.get(state) or _STATUS_BY_CLASS.get(state[:2], 400)
            return _error(status, state, error.args[0], getattr(error, "detail", None))

    async def _query(self, sql: str, *args: object) -> Any:
        pool = await self._connection_pool()
        async with pool.acquire() as connection:
            return await connection.fetchval(sql, *args)

    async def _call(self, function: str, request: httpx.Request) -> httpx.Response:
        if request.url.params:
            raise Unsupported("query parameters on rpc")
        arguments = json.loads(request.content or b"{}")
        call = (
            f"{_name(function)}("
            + ", ".join(
                f"{_name(argument)} => {_literal(value)}" for argument, value in arguments.items()
            )
            + ")"
        )
        shape = await self._fetch_shape(function)
        if shape is None:
            return _error(404, "PGRST202", f"Could not find the function public.{function}")
        returns_set, returns_void = shape
        if returns_void:
            await self._query(f"select {call}")
            return httpx.Response(204)
        if returns_set:
            sql = f"select coalesce(json_agg(_r), '[]')::text from {call} _r"
        else:
            # PostgREST answers a function's null as the JSON `null`, not an empty body.
            sql = f"select coalesce(to_json({call})::text, 'null')"
        return _json(200, await self._query(sql))

    async def _fetch_shape(self, function: str) -> tuple[bool, bool] | None:
        pool = await self._connection_pool()
        row = await pool.fetchrow(
            "select proretset, prorettype = 'void'::regtype as void from pg_proc "
            "where proname = $1 and pronamespace = 'public'::regnamespace",
            function,
        )
        return None if row is None else (row["proretset"], row["void"])

    async def _table(self, table: str, request: httpx.Request) -> httpx.Response:
        table_name = _name(table)
        columns, where, order, limit = "*", [], "", ""
        for key, value in request.url.params.multi_items():
            if key == "select":
                columns = ", ".join(_select_item(item) for item in value.split(","))
            elif key == "order":
                column, _, direction = value.partition(".")
                if direction not in ("asc", "desc"):
                    raise Unsupported(f"order {value!r}")
                order = f" order by {_name(column)} {direction}"
            elif key == "limit":
                limit = f" limit {int(value)}"
            else:
                where.append(_filter(f"{table_name}.{_name(key)}", value))
        condition = f" where {' and '.join(where)}" if where else ""
        representation = "return=minimal" not in request.headers.get("prefer", "")

        if request.method == "GET":
            rows = f"select {columns} from {table_name}{condition}{order}{limit}"
            return _json(200, await self._query(_as_json(rows)))
        if order or limit:
            raise Unsupported(f"order or limit on {request.method}")
        body = json.loads(request.content)
        if not isinstance(body, dict) or not body:
            raise Unsupported("a body that is not one row")
        names = [_name(column) for column in body]
        record = f"json_populate_record(null::{table_name}, $1::json)"
        if request.method == "POST" and not where:
            change = (
                f"insert into {table_name} ({', '.join(names)}) "
                f"select {', '.join(names)} from {record} returning *"
            )
            status = 201
        elif request.method == "PATCH":
            assignments = ", ".join(f"{name} = _b.{name}" for name in names)
            change = (
                f"update {table_name} set {assignments} from (select * from {record}) _b"
                f"{condition} returning {table_name}.*"
            )
            status = 200
        else:
            raise Unsupported(f"{request.method} with these parameters")
        sql = f"with _changed as ({change}) " + _as_json(f"select {columns} from _changed")
        result = await self._query(sql, json.dumps(body))
        if not representation:
            return httpx.Response(201 if status == 201 else 204)
        return _json(status, result)


def _select_item(item: str) -> str:
    if item == "*":
        return "*"
    column, _, cast = item.partition("::")
    if not cast:
        return _name(column)
    if not _NAME.fullmatch(cast):
        raise Unsupported(f"cast {cast!r}")
    return f"{_name(column)}::{cast} as {_name(column)}"


def _filter(column: str, expression: str) -> str:
    operator, _, value = expression.partition(".")
    if operator == "eq":
        return f"{column} = {_literal(value)}"
    if operator == "is" and value in ("null", "true", "false"):
        return f"{column} is {value}"
    if operator == "not" and value in ("is.null", "is.true", "is.false"):
        return f"{column} is not {value.removeprefix('is.')}"
    if operator == "in" and value.startswith("(") and value.endswith(")"):
        items = [item.strip('"') for item in value[1:-1].split(",")]
        return f"{column} in ({', '.join(_literal(item) for item in items)})"
    raise Unsupported(f"filter {expression!r}")


def _as_json(rows: str) -> str:
    return f"select coalesce(json_agg(_r), '[]')::text from ({rows}) _r"


def _json(status: int, text: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=text.encode(),
        headers={"content-type": "application/json; charset=utf-8"},
    )


@asynccontextmanager
async def serve(stand_in: PostgrestOnPostgres) -> AsyncIterator[str]:
    """The stand-in on a local port, in this event loop; yields its base URL."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        url = f"http://{scope['server'][0]}:{scope['server'][1]}{scope['path']}"
        request = httpx.Request(
            scope["method"],
            f"{url}?{query}" if query else url,
            headers=[(name.decode(), value.decode()) for name, value in scope["headers"]],
            content=body,
        )
        response = await stand_in(request)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k.encode(), v.encode()) for k, v in response.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
