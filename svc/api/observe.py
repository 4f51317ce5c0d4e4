"""The HTTP edge's record of each request: its id, and its route, status and duration."""

from collections.abc import Awaitable
from time import perf_counter

from svc import request_ids
from svc.api.guards import ASGIApp, Message, Receive, Scope, Send
from svc.metrics import Metrics


class ObserveRequests:
    """Gives each request an id (its X-Request-ID when sane, else a new one), returned in
    the X-Request-ID header and carried by every log line the request causes, and counts
    the request in the metrics by method, route template and status, with its duration.

    Plain ASGI rather than BaseHTTPMiddleware, which would run each request in a task of its
    own and copy its body through a stream: every request passes here (bench/history.md).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self._observe(scope, receive, send)

    async def _observe(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        request_id = request_ids.from_headers(scope["headers"])
        header = (b"x-request-id", request_id.encode())
        status = 500  # unless the app answers: an exception escaping it becomes a 500

        def send_with_id(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            return send(message)

        token = request_ids.REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_ids.REQUEST_ID.reset(token)
            self.metrics.observe_request(scope, status, started)
