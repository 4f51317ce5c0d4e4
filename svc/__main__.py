"""The operator's command line: ``python -m svc pods add|list|update|disable|enable``,
``db init``, ``sessions refund``, and ``sessions list|show|end`` and ``admin hash-password``
(in `svc.operator_cli`).

It reads the same settings as the service, so ``DATABASE_URL=... python -m svc pods list``
works against any database, and with nothing set it uses local mode's embedded Postgres.
"""

import argparse
import asyncio
import re
import sys
from contextlib import AsyncExitStack
from decimal import Decimal, InvalidOperation
from typing import NoReturn

from svc import operator_cli, refunds, runtime
from svc.database_accessor import Database, apply_migrations
from svc.env import ConfigurationError, load_settings
from svc.errors import ServiceError
from svc.local import LocalServiceError
from svc.models.records import NewPod, Pod, PodChanges
from svc.services import Services
from svc.sessions import find_session
from svc.utils import format_money

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_PRICE = Decimal("99999999.9999")


class UsageError(Exception):
    """Bad input from the operator: one line saying what is wrong."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage and error: `--help` shows the usage."""
        self.exit(2, f"error: {message}\n")


def pod_name(value: str) -> str:
    if not _NAME.match(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a pod name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def price_per_minute(value: str) -> Decimal:
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number (e.g. 0.25)") from None
    if not price.is_finite() or price < 0:
        raise argparse.ArgumentTypeError(f"the price per minute cannot be {value}")
    if price > _MAX_PRICE:
        raise argparse.ArgumentTypeError(f"the price per minute {value} is too large")
    if price != price.quantize(Decimal("0.0001")):
        raise argparse.ArgumentTypeError(
            f"the price per minute {value} has more than 4 decimal places"
        )
    return price


def currency(value: str) -> str:
    code = value.strip().lower()
    if not re.fullmatch(r"[a-z]{3}", code):
        raise argparse.ArgumentTypeError(f"{value!r} is not a three-letter currency code")
    return code


def positive_pence(value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value.strip()) or int(value) <= 0:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an amount in pence: a whole number above 0 (263 for £2.63)"
        )
    return int(value)


def out_of_service_reason(value: str) -> str:
    reason = " ".join(value.split())
    if not reason or len(reason) > 200:
        raise argparse.ArgumentTypeError("the reason is 1-200 characters, shown to customers")
    return reason


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m svc", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True, parser_class=Parser)

    pods = groups.add_parser("pods", help="list, add and change pods")
    pod_commands = pods.add_subparsers(dest="command", required=True)
    pod_commands.add_parser("list", help="list the pods")

    add = pod_commands.add_parser("add", help="add a pod")
    add.add_argument("name", type=pod_name)
    add.add_argument("--address", required=True)
    add.add_argument("--price-per-minute", type=price_per_minute, required=True)
    add.add_argument("--currency", type=currency, default=None, help="default: CURRENCY")
    add.add_argument("--seam-device-id", default=None)

    update = pod_commands.add_parser("update", help="change a pod")
    update.add_argument("name", type=pod_name)
    update.add_argument("--address")
    update.add_argument("--price-per-minute", type=price_per_minute)
    update.add_argument("--currency", type=currency)
    lock = update.add_mutually_exclusive_group()
    lock.add_argument("--seam-device-id")
    lock.add_argument("--no-seam-device", action="store_true", help="forget the pod's smart lock")

    session_commands = operator_cli.add_commands(groups)
    refund = session_commands.add_parser(
        "refund", help="refund what a session paid (all of it unless --amount-pence)"
    )
    refund.add_argument("session_id", type=operator_cli.session_id)
    refund.add_argument("--amount-pence", type=positive_pence, default=None)
    refund.add_argument("--reason", default=None, help="for the operator's records and e-mail")
    disable = pod_commands.add_parser(
        "disable", help="take a pod out of service: it cannot be booked until enabled"
    )
    disable.add_argument("name", type=pod_name)
    disable.add_argument(
        "--reason", type=out_of_service_reason, required=True, help="shown to customers"
    )
    enable = pod_commands.add_parser("enable", help="put a pod back in service")
    enable.add_argument("name", type=pod_name)

    db = groups.add_parser("db", help="the database schema")
    db_commands = db.add_subparsers(dest="command", required=True)
    db_commands.add_parser(
        "init", help="apply the migrations not yet recorded in supabase_migrations"
    )
    return parser


def describe(pod: Pod) -> str:
    lock = f"  lock {pod.seam_device_id}" if pod.seam_device_id else ""
    state = "in use" if pod.in_use else "free"
    reason = pod.out_of_service
    service = f"  out of service: {reason}" if reason is not None else ""
    return (
        f"{pod.name:<16} {pod.price} {pod.currency}/min  {state:<6}  id {pod.id}  "
        f"{pod.address}{lock}{service}"
    )


async def run(args: argparse.Namespace) -> str:
    if args.group == "admin":
        return operator_cli.hash_password_command()
    settings = load_settings()
    async with AsyncExitStack() as stack:
        if (args.group, args.command) == ("sessions", "refund"):
            services, _ = await runtime.open_services(settings, stack)
            return await run_refund(services, args)
        if args.group in operator_cli.GROUPS:
            return await operator_cli.run(args, settings, stack)
        if (args.group, args.command) == ("db", "init"):
            dsn, description = await runtime.database_url(settings, stack)
            applied = await apply_migrations(dsn)
            if not applied:
                return f"nothing to apply: every migration is recorded on {description}"
            return f"applied {', '.join(applied)} to {description}"
        db, _ = await runtime.open_database(settings, stack)
        return await run_pod_command(db, args, default_currency=settings.CURRENCY)


async def run_refund(services: Services, args: argparse.Namespace) -> str:
    session = await find_session(services.db, args.session_id)
    done = await refunds.refund_session(
        services, args.session_id, amount_pence=args.amount_pence, reason=args.reason
    )
    amount = format_money(done.refunded_pence, session.currency)
    ids = ", ".join(done.stripe_refund_ids) or "none"
    left = format_money(done.refundable_pence, session.currency)
    if done.resumed:
        return (
            f"completed the refund of {amount} that an earlier run reserved and did not finish "
            f"(Stripe {ids}); nothing else was refunded; {left} can still be refunded"
        )
    return f"refunded {amount} (Stripe {ids}); {left} can still be refunded"


async def run_pod_command(db: Database, args: argparse.Namespace, *, default_currency: str) -> str:
    if args.command == "list":
        pods = await db.list_pods()
        return "\n".join(describe(pod) for pod in pods) or "no pods yet"
    if args.command == "add":
        pod = await db.insert_pod(
            NewPod(
                name=args.name,
                address=args.address,
                price=args.price_per_minute,
                currency=args.currency or default_currency,
                seam_device_id=args.seam_device_id,
            )
        )
        return f"added {describe(pod)}"
    if args.command in ("disable", "enable"):
        reason = args.reason if args.command == "disable" else None
        if not await db.set_pod_disabled(args.name, reason=reason):
            raise UsageError(f"no pod named {args.name!r}")
        changed = await db.get_pod_by_name(args.name)
        assert changed is not None
        return f"{args.command}d {describe(changed)}"
    changes = PodChanges(
        address=args.address,
        price=args.price_per_minute,
        currency=args.currency,
        seam_device_id=args.seam_device_id,
        clear_seam_device_id=args.no_seam_device,
    )
    if changes == PodChanges():
        raise UsageError("nothing to change: give --address, --price-per-minute, ...")
    updated = await db.update_pod(args.name, changes)
    if updated is None:
        raise UsageError(f"no pod named {args.name!r}")
    return f"updated {describe(updated)}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(asyncio.run(run(args)))
    except (
        UsageError,
        operator_cli.UsageError,
        ServiceError,
        ConfigurationError,
        LocalServiceError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
