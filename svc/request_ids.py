"""The id of the request being served, for every log line it causes.

A context variable: set by the HTTP edge for each request, read by the log records, by the
outbox when the request queues an e-mail, and set again by the e-mail sender for the lines
about that e-mail.
"""

import random
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

HEADER = b"x-request-id"

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# What a proxy's id may look like to be taken as ours: short, and nothing a log line or a
# JSON string would have to escape.
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_UUID_DIGITS = re.compile(r"[0-9A-Fa-f]{32}")


def current() -> str | None:
    return REQUEST_ID.get()


def new() -> str:
    """16 hex digits. An id to find a request's lines by, not a secret: Python's fast
    generator (seeded from the OS at start) rather than the OS's, a system call per request."""
    return f"{random.getrandbits(64):016x}"


def sane(value: str) -> bool:
    """Whether `value` may serve as a request id. A UUID may not: it could be a session id,
    the bearer secret that the logs never show whole."""
    return _SANE.fullmatch(value) is not None and not _UUID_DIGITS.search(value.replace("-", ""))


def from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's (or the proxy's) X-Request-ID when sane, else a new id."""
    for name, value in headers:
        if name == HEADER:
            given = value.decode("latin-1")
            return given if sane(given) else new()
    return new()


@contextmanager
def bound(request_id: str | None) -> Iterator[None]:
    """Log lines inside the block carry `request_id` (none with None)."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)
