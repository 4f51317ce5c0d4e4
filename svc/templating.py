"""The Jinja2 environments of the pages and the e-mails, built once at import.

The pages and the e-mails' HTML are autoescaped, so that a value from the database, the
settings or a request is always text, never markup; the e-mails' plain text is not.
"""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from svc.utils import format_duration, format_local_time, format_money, format_price_per_minute

TEMPLATES_DIR = Path(__file__).parent / "templates"


def _local_time(moment: datetime | None, timezone: ZoneInfo) -> str:
    return format_local_time(moment, timezone) if moment else ""


def _paragraphs(body: str) -> list[str]:
    """The paragraphs of a text, a blank line apart (Markup stays Markup)."""
    return [paragraph.strip() for paragraph in body.split("\n\n") if paragraph.strip()]


def _environment(*, autoescape: bool) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=autoescape,
        # A misspelt name fails the render instead of showing nothing.
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        money=format_money,
        price_per_minute=format_price_per_minute,
        duration=format_duration,
        local_time=_local_time,
        paragraphs=_paragraphs,
    )
    return environment


html = _environment(autoescape=True)
text = _environment(autoescape=False)
