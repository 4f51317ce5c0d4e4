import json
import logging
from typing import Any
from uuid import UUID

import pytest

from svc.logs import JsonFormatter, RedactSessionIds, TextFormatter

SESSION = "6a1f2c3e-1111-4222-8333-944455556666"


def access_line(path: str) -> str:
    """The line uvicorn's access log writes for `path`, through the service's filter."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 200),
        None,
    )
    assert RedactSessionIds().filter(record)
    return record.getMessage()


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        (f"/api/session-status?sessionId={SESSION}", "/api/session-status?sessionId=6a1f2c3e…"),
        (f"/api/session-status?session_id={SESSION}", "/api/session-status?session_id=6a1f2c3e…"),
        (
            f"/api/session-status?session%5Fid={SESSION}",
            "/api/session-status?session%5Fid=6a1f2c3e…",
        ),
        (f"/end-session?sessionId=%7B{SESSION}%7D", "/end-session?sessionId=%7B6a1f2c3e…%7D"),
        (
            f"/end-session?sessionId=%7b{SESSION.upper()}%7d",
            "/end-session?sessionId=%7b6A1F2C3E…%7d",
        ),
        (f"/end-session?sessionId={{{SESSION}}}", "/end-session?sessionId={6a1f2c3e…}"),
        (f"/end-session?sessionId=urn:uuid:{SESSION}", "/end-session?sessionId=urn:uuid:6a1f2c3e…"),
        (
            f"/end-session?sessionId=urn%3Auuid%3A{SESSION}",
            "/end-session?sessionId=urn%3Auuid%3A6a1f2c3e…",
        ),
        (f"/end-session?sessionId={SESSION.replace('-', '')}", "/end-session?sessionId=6a1f2c3e…"),
        (
            f"/end-session?sessionId={SESSION.replace('-', '%2D')}",
            "/end-session?sessionId=6a1f2c3e…",
        ),
        (f"/end-session?sessionId=6a-1f-2c-3e{SESSION[8:]}", "/end-session?sessionId=6a-1f-2c-3e…"),
        (f"/end-session?sessionId=%36%61{SESSION[2:]}", "/end-session?sessionId=%36%611f2c3e…"),
        (f"/end-session?x=1&sessionId={SESSION}&y=2", "/end-session?x=1&sessionId=6a1f2c3e…&y=2"),
        (f"/somewhere/{SESSION}/else", "/somewhere/6a1f2c3e…/else"),
        (f"/end-session?a={SESSION}&b={SESSION.upper()}", "/end-session?a=6a1f2c3e…&b=6A1F2C3E…"),
    ],
)
def test_every_uuid_in_a_logged_request_keeps_only_its_first_8_characters(
    path: str, logged: str
) -> None:
    assert access_line(path) == f'127.0.0.1:5000 - "GET {logged} HTTP/1.1" 200'


@pytest.mark.parametrize(
    "value",
    [
        "{" + SESSION + "}",
        "urn:uuid:" + SESSION,
        SESSION.replace("-", "").upper(),
        "6a-1f-2c-3e" + SESSION[8:],
    ],
)
def test_the_redacted_forms_are_forms_the_routes_accept(value: str) -> None:
    assert UUID(value) == UUID(SESSION)


@pytest.mark.parametrize(
    "path",
    [
        "/api/pod?podId=1234567890",
        "/api/pod?podName=deadbeef",
        "/book?podName=pod1&x=0123456789abcdef0123456789abcdef0",  # 33 hex digits
        "/static/app.js",
    ],
)
def test_what_is_not_a_uuid_is_logged_as_it_came(path: str) -> None:
    assert access_line(path) == f'127.0.0.1:5000 - "GET {path} HTTP/1.1" 200'


def record_of(message: str, *, request_id: str | None, error: Exception | None = None) -> Any:
    record = logging.LogRecord(
        "svc.bookings",
        logging.WARNING,
        __file__,
        1,
        message,
        (),
        (type(error), error, None) if error else None,
    )
    record.request_id = request_id
    record.created = 1795000000.25
    return record


def test_a_text_line_ends_with_its_request_id_when_it_has_one() -> None:
    formatter = TextFormatter()
    inside = formatter.format(record_of("booking.started pod=pod1", request_id="ab12"))
    outside = formatter.format(record_of("background.error job=emails", request_id=None))
    assert inside.endswith(" WARNING svc.bookings booking.started pod=pod1 request_id=ab12")
    assert outside.endswith(" WARNING svc.bookings background.error job=emails")


def test_a_json_line_is_one_object_with_the_traceback_when_there_is_one() -> None:
    line = JsonFormatter().format(
        record_of("payment.failed\nsecond line", request_id="ab12", error=ValueError("boom"))
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2026-11-18T11:06:40.250+00:00",
        "level": "WARNING",
        "logger": "svc.bookings",
        "message": "payment.failed\nsecond line",
        "request_id": "ab12",
        "exception": "ValueError: boom",
    }
