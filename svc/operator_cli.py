"""The operator's session commands (``python -m svc sessions list|show|end``) and the
console's password (``python -m svc admin hash-password``): tables for people, ``--json``
for scripts."""

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import date, datetime, time
from typing import Any
from uuid import UUID

from svc import operator, runtime
from svc.addresses import InvalidRecipient, check_recipient
from svc.env import Settings
from svc.models.operator import SessionDetails
from svc.models.schemas import EndSessionResult
from svc.operator import SessionStory
from svc.sessions import session_cost_pence
from svc.utils import elapsed_seconds, format_duration, format_money

GROUPS = ("sessions",)
MIN_PASSWORD_LENGTH = 12


class UsageError(Exception):
    """Bad input from the operator: one line saying what is wrong."""


def session_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a session id (a UUID)") from None


def day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def email(value: str) -> str:
    try:
        return check_recipient(value)
    except InvalidRecipient as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_commands(groups: "argparse._SubParsersAction[Any]") -> "argparse._SubParsersAction[Any]":
    """The `sessions` and `admin` groups; the sessions' commands, for others to join."""
    sessions = groups.add_parser("sessions", help="see sessions, end and refund them")
    commands: argparse._SubParsersAction[Any] = sessions.add_subparsers(
        dest="command", required=True
    )
    listing = commands.add_parser("list", help="sessions, newest first")
    listing.add_argument("--open", action="store_true", help="only the open ones")
    listing.add_argument("--owed", action="store_true", help="only those whose charge failed")
    listing.add_argument("--refunded", action="store_true", help="only those refunded (in part)")
    listing.add_argument("--disputed", action="store_true", help="only those disputed")
    listing.add_argument("--since", type=day, help="started on or after DATE (YYYY-MM-DD)")
    listing.add_argument("--email", type=email, help="booked with this e-mail address")
    show = commands.add_parser("show", help="a session and its whole timeline")
    show.add_argument("id", type=session_id)
    end = commands.add_parser("end", help="end a session as its customer would")
    end.add_argument("id", type=session_id)
    end.add_argument("--no-charge", action="store_true", help="charge nothing (hold released)")
    end.add_argument(
        "--reason", default=operator.DEFAULT_NO_CHARGE_REASON, help="recorded with --no-charge"
    )
    for command in (listing, show, end):
        command.add_argument("--json", action="store_true", help="print JSON, for scripts")

    admin = groups.add_parser("admin", help="the web console")
    admin_commands = admin.add_subparsers(dest="command", required=True)
    admin_commands.add_parser(
        "hash-password", help="read a password (stdin or prompt), print its ADMIN_PASSWORD_HASH"
    )
    return commands


def hash_password_command() -> str:
    """The password from the terminal without echo, or the first line of stdin when piped;
    its hash, for ADMIN_PASSWORD_HASH."""
    if sys.stdin.isatty():
        password = getpass.getpass("Console password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    # Here, not at the top: the console's package brings the web app, which no other
    # command needs.
    from svc.console.auth import hash_password

    return hash_password(password)


async def run(args: argparse.Namespace, settings: Settings, stack: AsyncExitStack) -> str:
    if args.command == "end":
        services, _ = await runtime.open_services(settings, stack)
        if args.no_charge:
            result = await operator.end_without_charge(services, args.id, reason=args.reason)
        else:
            result = await operator.end_session(services, args.id)
        return _dump(result.model_dump(mode="json")) if args.json else describe_end(result)
    db, _ = await runtime.open_database(settings, stack)
    if args.command == "show":
        story = await operator.session_story(db, args.id)
        return _dump(story_json(story)) if args.json else describe_story(story, settings)
    since = None
    if args.since is not None:
        since = datetime.combine(args.since, time.min, tzinfo=settings.timezone)
    found = await db.list_session_details(
        open_only=args.open,
        owed_only=args.owed,
        refunded_only=args.refunded,
        disputed_only=args.disputed,
        since=since,
        email=args.email,
    )
    if args.json:
        return _dump([session_json(details) for details in found])
    return table(found, settings) if found else "no sessions"


def _dump(value: object) -> str:
    return json.dumps(value, indent=2)


def session_json(details: SessionDetails) -> dict[str, Any]:
    session = details.session
    return {
        "id": str(session.id),
        "pod_name": session.pod_name,
        "email": session.user_email,
        "state": session.state.value,
        "start_time": session.start_time.isoformat(),
        "end_time": session.end_time.isoformat() if session.end_time else None,
        "elapsed_seconds": elapsed_seconds(session.start_time, session.end_time or session.now),
        "cost_pence": session_cost_pence(session),
        "currency": session.currency,
        "payment_status": session.payment_status.value if session.payment_status else None,
        "payment_error": session.payment_error,
        "hold_pence": session.hold_pence,
        "captured_pence": session.captured_pence,
        "released_pence": session.released_pence,
        "no_charge_reason": details.no_charge_reason,
        "refunded_pence": details.refunded_pence,
        "disputed_at": details.disputed_at.isoformat() if details.disputed_at else None,
    }


def story_json(story: SessionStory) -> dict[str, Any]:
    return {
        "session": session_json(story.details),
        "timeline": [event.as_json() for event in story.timeline],
    }


def _when(moment: datetime | None, settings: Settings) -> str:
    return moment.astimezone(settings.timezone).strftime("%Y-%m-%d %H:%M") if moment else "-"


def table(found: Sequence[SessionDetails], settings: Settings) -> str:
    header = ("ID", "POD", "E-MAIL", "STARTED", "ENDED", "TIME", "COST", "PAYMENT")
    rows = [header]
    for details in found:
        session = details.session
        seconds = elapsed_seconds(session.start_time, session.end_time or session.now)
        rows.append(
            (
                str(session.id),
                session.pod_name,
                session.user_email or "-",
                _when(session.start_time, settings),
                _when(session.end_time, settings) if session.end_time else "open",
                format_duration(seconds),
                format_money(session_cost_pence(session), session.currency),
                _payment(details),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _payment(details: SessionDetails) -> str:
    session = details.session
    words = [session.payment_status.value if session.payment_status else "-"]
    if details.refunded_pence:
        words.append(f"{format_money(details.refunded_pence, session.currency)} refunded")
    if details.disputed_at is not None:
        words.append("disputed")
    return ", ".join(words)


def describe_story(story: SessionStory, settings: Settings) -> str:
    session = story.details.session
    cost = format_money(session_cost_pence(session), session.currency)
    lines = [
        f"session {session.id}",
        f"pod {session.pod_name}, {session.user_email or 'no e-mail'}, {session.state.value}, "
        f"cost {cost}",
        "",
    ]
    lines += [f"{_when(event.at, settings):<16}  {event.text}" for event in story.timeline]
    return "\n".join(lines)


def describe_end(result: EndSessionResult) -> str:
    cost = format_money(result.final_cost_pence, result.currency)
    text = f"ended {result.session_id}: {cost}, payment {result.payment_status.value}"
    return f"{text} ({result.error})" if result.error else text
