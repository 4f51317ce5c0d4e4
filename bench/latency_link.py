"""A TCP link with latency, between the service and localstripe, for the benchmark.

It behaves like a long network path: bytes go through untouched and in order, and every
chunk is held for half the configured delay on its way to localstripe and for the other
half on its way back, as if Stripe were that far away. A lone call takes the whole delay
longer either way; the split matters when many calls are in flight. localstripe answers
one request at a time, in about a millisecond of CPU on the cores the service also uses,
where Stripe answers each in its own time on its own machines. Held on the way in,
localstripe's work happens while the service waits for its answers, instead of competing
with the service for the cores while it is still sending charges; and the answers then
come back the way Stripe's would.

The link parses nothing, so the CPU it takes from the machine's cores is a small fraction
of an HTTP proxy's. The delay is read from shared memory at each chunk, so the benchmark
can change it while the link runs.
"""

import asyncio
import multiprocessing
import time
from collections import deque
from typing import Any, cast

import uvloop

from svc.local import port_is_open


class _Delayed:
    """Writes chunks to a transport `delay` seconds after they were handed over, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        self.loop = loop
        self.transport = transport
        self.queue: deque[tuple[float, bytes]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    def send(self, data: bytes, delay: float) -> None:
        if delay <= 0 and not self.queue:
            self.transport.write(data)
            return
        self.queue.append((self.loop.time() + delay, data))
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def close(self) -> None:
        self.closing = True
        if not self.queue:
            self.transport.close()

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            self.transport.write(self.queue.popleft()[1])
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)
        elif self.closing:
            self.transport.close()


class _Upstream(asyncio.Protocol):
    def __init__(self, downstream: "_Downstream") -> None:
        self.downstream = downstream

    def data_received(self, data: bytes) -> None:
        self.downstream.answer(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.downstream.upstream_closed()


class _Downstream(asyncio.Protocol):
    def __init__(self, upstream: tuple[str, int], delay: Any) -> None:
        self.upstream_address = upstream
        self.delay = delay
        self.pending: list[bytes] = []
        self.upstream: asyncio.Transport | None = None
        self.forth: _Delayed | None = None
        self.back: _Delayed | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        loop = asyncio.get_running_loop()
        self.back = _Delayed(loop, self.transport)
        self.connecting = loop.create_task(self._connect(loop))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(self), *self.upstream_address
            )
        except OSError:
            self.transport.close()
            return
        self.upstream = cast(asyncio.Transport, upstream)
        if self.closed:
            self.upstream.close()
            return
        self.forth = _Delayed(loop, self.upstream)
        for data in self.pending:
            self.forth.send(data, self.delay.value / 2)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.forth is None:
            self.pending.append(data)
        else:
            self.forth.send(data, self.delay.value / 2)

    def answer(self, data: bytes) -> None:
        assert self.back is not None
        self.back.send(data, self.delay.value / 2)

    def upstream_closed(self) -> None:
        assert self.back is not None
        self.back.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.forth is not None:
            self.forth.close()  # once what is still on its way has arrived


def _serve(port: int, upstream: tuple[str, int], delay: Any) -> None:
    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: _Downstream(upstream, delay), "127.0.0.1", port, backlog=512
        )
        await server.serve_forever()

    uvloop.run(run())


class LatencyLink:
    """The link in a process of its own; `delay` seconds are added to every round trip."""

    def __init__(self, port: int, upstream_host: str, upstream_port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._delay = context.Value("d", 0.0, lock=False)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process = context.Process(
            target=_serve, args=(port, (upstream_host, upstream_port), self._delay), daemon=True
        )
        self.process.start()
        deadline = time.monotonic() + 20
        while not port_is_open("127.0.0.1", port):
            if not self.process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the latency link did not listen on port {port}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def set_delay(self, seconds: float) -> None:
        self._delay.value = seconds

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)
