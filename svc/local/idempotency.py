"""Stripe's idempotency, which localstripe lacks, for the launcher to add to it.

Stripe keeps the first answer to a POST carrying an `Idempotency-Key` and gives it again to
every later request with that key and the same secret key: the same status and body, with
`Idempotent-Replayed: true`, a card error included. A request arriving while the first is
still being processed gets 409 `idempotency_error`; the same key sent with other
parameters gets 400 `idempotency_error`; answers of 5xx are not kept, so a retry runs
again. localstripe ignores the header, so without this a retry after a crash would charge
twice there and not at Stripe: a test could not tell the service's fault from the
stand-in's.

The stand-in also keeps a log of the POSTs it answered (with their idempotency key, their
metadata, whether the answer was a replay, and when), so that a test can tell what reached
Stripe before a crash and what was sent again after it; and it can hold its answers back
for a while after it has done the work, which widens the window in which a client can die
after Stripe acted but before it heard back.
"""

import asyncio
import base64
import hashlib
import pickle
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOG_PATH = "/_config/qwip/requests"
HOLD_PATH = "/_config/qwip/hold"


@dataclass(frozen=True, slots=True)
class KeptAnswer:
    fingerprint: str
    status: int
    body: bytes
    content_type: str


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"type": "idempotency_error", "message": message}}
    return web.json_response(body, status=status)


def _scope(request: web.Request) -> str:
    """Whose key it is: Stripe keeps idempotency keys per account and key mode."""
    kind, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if kind == "Basic":
        try:
            return base64.b64decode(credentials).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            return ""
    return credentials


def _metadata(body: bytes) -> dict[str, str]:
    """The request's `metadata[...]` parameters: what a request was for, for the log."""
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}
    return {
        name.removeprefix("metadata[").removesuffix("]"): value
        for name, value in pairs
        if name.startswith("metadata[")
    }


@dataclass
class Idempotency:
    state_file: Path | None = None
    """Where kept answers survive a restart of the stand-in (as keys do at Stripe)."""
    answers: dict[tuple[str, str], KeptAnswer] = field(default_factory=dict)
    in_flight: set[tuple[str, str]] = field(default_factory=set)
    log: list[dict[str, Any]] = field(default_factory=list)
    hold_seconds: float = 0.0
    hold_pattern: re.Pattern[str] | None = None

    def load(self) -> None:
        if self.state_file is None:
            return
        try:
            with open(self.state_file, "rb") as f:
                self.answers = pickle.load(f)
        except FileNotFoundError:
            pass

    def _save(self) -> None:
        if self.state_file is not None:
            with open(self.state_file, "wb") as f:
                pickle.dump(self.answers, f, protocol=pickle.HIGHEST_PROTOCOL)

    def install(self, app: web.Application) -> None:
        # Outermost, so that the answer kept is the one the client got, errors included.
        app.middlewares.insert(0, self.middleware)
        app.router.add_get(LOG_PATH, self.show_log)
        app.router.add_delete(LOG_PATH, self.clear_log)
        app.router.add_post(HOLD_PATH, self.set_hold)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or not request.path.startswith("/v1/"):
            return await handler(request)
        key = request.headers.get("Idempotency-Key")
        body = await request.read()
        entry: dict[str, Any] = {
            "at": time.time(),
            "path": request.path,
            "host": request.host,
            "idempotency_key": key,
            "metadata": _metadata(body),
            "replayed": False,
        }
        self.log.append(entry)
        if key is None:
            response = await handler(request)
            entry["status"] = response.status
            return await self._held(request, response)

        scoped = (_scope(request), key)
        fingerprint = hashlib.sha256(
            request.method.encode() + b" " + request.path.encode() + b"\n" + body
        ).hexdigest()
        if scoped in self.in_flight:
            entry["status"] = 409
            return _error(
                409,
                "There is currently another in-progress request using this idempotency key "
                "(that probably means you submitted twice, and the other request is still "
                "going through). Please retry this request later.",
            )
        kept = self.answers.get(scoped)
        if kept is not None:
            if kept.fingerprint != fingerprint:
                entry["status"] = 400
                return _error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than {key!r} if you "
                    "meant to execute a different request.",
                )
            entry.update(status=kept.status, replayed=True)
            replay = web.Response(
                status=kept.status, body=kept.body, content_type=kept.content_type
            )
            replay.headers["Idempotent-Replayed"] = "true"
            replay.headers["Idempotency-Key"] = key
            return await self._held(request, replay)

        self.in_flight.add(scoped)
        try:
            response = await handler(request)
            entry["status"] = response.status
            # Kept as soon as the work is done, before any hold: a client that dies while
            # its answer is held back has had its request carried out, as at Stripe.
            if response.status < 500 and isinstance(response, web.Response):
                assert response.body is None or isinstance(response.body, bytes)
                self.answers[scoped] = KeptAnswer(
                    fingerprint=fingerprint,
                    status=response.status,
                    body=response.body or b"",
                    content_type=response.content_type,
                )
                self._save()
            response.headers["Idempotency-Key"] = key
            return await self._held(request, response)
        finally:
            self.in_flight.discard(scoped)

    async def _held(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """The answer, after the hold asked for (the work is done and kept already)."""
        if self.hold_seconds and self.hold_pattern and self.hold_pattern.search(request.path):
            await asyncio.sleep(self.hold_seconds)
        return response

    async def show_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.log)

    async def clear_log(self, request: web.Request) -> web.Response:
        self.log.clear()
        return web.json_response({"deleted": True})

    async def set_hold(self, request: web.Request) -> web.Response:
        """`ms`: how long to hold each answer; `path`: a regular expression of the paths."""
        form = await request.post()
        try:
            milliseconds = int(str(form.get("ms", "0")))
            pattern = re.compile(str(form.get("path", "^/v1/")))
        except (ValueError, re.error) as error:
            return web.json_response({"error": {"message": str(error)}}, status=400)
        self.hold_seconds = max(milliseconds, 0) / 1000
        self.hold_pattern = pattern
        return web.json_response({"ms": milliseconds, "path": pattern.pattern})
