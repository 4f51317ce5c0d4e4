"""An HTTP proxy in front of localstripe that can add latency, or play dead upstream.

It runs its own event loop in a thread, so the tests' loops stay free.
"""

import asyncio
import threading

import aiohttp
import uvloop
from aiohttp import web

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class LatencyProxy:
    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port
        self.delay_before = 0.0  # seconds added before every forwarded request
        # (method, path prefix) -> seconds to hold the upstream's answer back
        self.delay_after: dict[tuple[str, str], float] = {}
        self.requests = 0
        # (method, path, Idempotency-Key header or None) of every request forwarded
        self.seen: list[tuple[str, str, str | None]] = []
        # (path, body) of every request forwarded
        self.bodies: list[tuple[str, bytes]] = []
        self._loop = uvloop.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LatencyProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._session:
                await self._session.close()
            if self._runner:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_post("/__latency", self._configure)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _configure(self, request: web.Request) -> web.StreamResponse:
        """Set the delays from another process: {"delay_before": seconds}."""
        settings = await request.json()
        self.delay_before = float(settings.get("delay_before", 0))
        return web.json_response({"delay_before": self.delay_before})

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.seen.append((request.method, request.path, request.headers.get("Idempotency-Key")))
        if self.delay_before:
            await asyncio.sleep(self.delay_before)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        assert self._session is not None
        sent = await request.read()
        self.bodies.append((request.path, sent))
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=sent,
            ) as upstream:
                body = await upstream.read()
                status = upstream.status
                answer_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
                }
        except aiohttp.ClientError:
            return web.json_response({"error": {"message": "upstream unreachable"}}, status=502)
        for (method, prefix), seconds in self.delay_after.items():
            if request.method == method and request.path.startswith(prefix):
                await asyncio.sleep(seconds)
        return web.Response(status=status, body=body, headers=answer_headers)
