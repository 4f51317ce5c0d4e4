"""Guards at the HTTP edge: request size, content type and origin."""

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request
from starlette.middleware.cors import CORSMiddleware

from svc.errors import ServiceError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024  # Stripe's events are far smaller; nothing we accept is larger


class UnsupportedMediaType(ServiceError):
    status_code = 415

    def __init__(self) -> None:
        super().__init__("Send the body as JSON, with Content-Type: application/json.")


async def require_json(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType()


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Answers 413 to a body over `max_bytes`, declared or streamed, before anyone reads it all.

    `__call__` is a plain function returning the awaitable to run: a request without a body
    (most of them) goes straight to the app, with no frame of ours in its await chain for
    every suspension of the request to pass back through.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    return self._refuse(send)
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            return self.app(scope, receive, send)
        return self._counting(scope, receive, send)

    async def _counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False

        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _TooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                # The app's answer to the exception: FastAPI's body parsing catches any
                # exception raised while it reads and answers 400 "error parsing the body".
                # The 413 below replaces it, whatever the route made of the exception.
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            # _TooLarge itself, or whatever the app turned it into.
            if not too_large:
                raise
        if too_large and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"The request body is larger than {self.max_bytes // 1024} KiB."}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


class StrictTransportSecurity:
    """Tells browsers to reach this host (and its subdomains) over HTTPS only, for two
    years: on every answer, pages, API and refusals alike. Production only: local mode
    serves plain http on localhost, where the header would make the browser refuse it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)

        def send_with_hsts(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), HSTS]
            return send(message)

        return self.app(scope, receive, send_with_hsts)


class CrossOrigin(CORSMiddleware):
    """Starlette's CORS, stepping aside for requests without an Origin header (everything
    but browsers calling from another origin): they go straight to the app, as above."""

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:  # type: ignore[override]
        if scope["type"] == "http":
            for name, _ in scope["headers"]:
                if name == b"origin":
                    return super().__call__(scope, receive, send)
        return self.app(scope, receive, send)
