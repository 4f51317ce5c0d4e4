"""The operator's session commands, run as operators run them (`python -m svc sessions
...` in a subprocess), on sessions booked through the app, against Postgres, localstripe
and the test SMTP server."""

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import stripe
from argon2 import PasswordHasher

from svc import email_manager
from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import BackupCode, NewPod
from svc.utils import compute_cost_pence, elapsed_seconds, format_duration, format_money
from tests.integration.conftest import SettingsFactory, running
from tests.support import booking
from tests.support.mail import Mailbox
from tests.support.processes import clean_environment
from tests.support.settings import service_settings
from tests.support.stripe_helpers import payment_intents_of

Cli = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]
NOBODY = str(UUID(int=1))


@pytest.fixture
def cli(clean_database: str, localstripe_url: str, smtp_server: Mailbox, tmp_path: Path) -> Cli:
    """`python -m svc ...` with the settings of the app under test (HOLD_MINUTES as given)."""

    async def run(*args: str, hold_minutes: int = 0, stdin: str = "") -> Any:
        settings = service_settings(
            app_env="local",
            database_url=clean_database,
            stripe_api_base=localstripe_url,
            smtp_port=smtp_server.port,
            public_url="http://qwip.test",
        )
        settings["HOLD_MINUTES"] = str(hold_minutes)
        env = clean_environment(**settings, LOCAL_DATA_DIR=str(tmp_path / "local"))
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "svc", *args],
            cwd=tmp_path,  # no .env here
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture
async def pods(db: PostgresDatabase) -> None:
    for name in ("pod1", "pod2"):
        await db.insert_pod(NewPod(name, f"{name} street", Decimal("0.25"), "gbp"))


async def book(
    http: httpx.AsyncClient, stripe_client: stripe.StripeClient, *, pod: str, email: str
) -> tuple[UUID, str]:
    """A session started as the booking page starts one; its id and Stripe Customer."""
    card = await booking.save_card(http, stripe_client, pod=pod, email=email)
    booked = await booking.confirm_booking(http, card)
    return UUID(booked["session_id"]), card.customer_id


async def aged(sql: asyncpg.Connection, session_id: UUID) -> None:
    """Started 10 min 30 s ago: 263p at £0.25 a minute, and more by the time it ends."""
    await sql.execute(
        "update pod_sessions set start_time = now() - interval '10 minutes 30 seconds' "
        "where id = $1",
        session_id,
    )


async def duration(sql: asyncpg.Connection, session_id: UUID) -> tuple[int, str]:
    """An ended session's cost at £0.25 a minute, and its length in words."""
    row = await sql.fetchrow(
        "select start_time, end_time from pod_sessions where id = $1", session_id
    )
    cost = compute_cost_pence(
        start=row["start_time"],
        end=row["end_time"],
        price_per_minute=Decimal("0.25"),
        free_minutes=0,
    )
    return cost, format_duration(elapsed_seconds(row["start_time"], row["end_time"]))


def cells(table: str) -> list[list[str]]:
    """The table's rows cut where its header's columns start; fails unless every row's
    cells are aligned on them (two spaces before each column, none starting blank)."""
    header, *rows = table.splitlines()
    starts = [0] + [
        i + 2 for i in range(len(header) - 2) if header[i : i + 2] == "  " and header[i + 2] != " "
    ]
    found = []
    for line in [header, *rows]:
        for start in starts[1:]:
            assert line[start - 2 : start] == "  " and line[start] != " ", (line, start)
        found.append([line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)])
    return found


async def test_list_show_and_end_a_session_as_its_customer_would(
    cli: Cli,
    pods: None,
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    mailbox: Mailbox,
) -> None:
    ada, ada_customer = await book(client, stripe_client, pod="pod1", email="ada@example.com")
    grace, _ = await book(client, stripe_client, pod="pod2", email="grace@example.com")
    await aged(sql, ada)
    await mailbox.wait_for("access_code", count=2)

    listed = await cli("sessions", "list", "--open", "--json")
    assert (listed.returncode, listed.stderr) == (0, "")
    assert [
        (s["id"], s["pod_name"], s["email"], s["state"]) for s in json.loads(listed.stdout)
    ] == [
        (str(grace), "pod2", "grace@example.com", "open"),
        (str(ada), "pod1", "ada@example.com", "open"),
    ]

    ended = await cli("sessions", "end", str(ada))
    cost, took = await duration(sql, ada)
    assert cost >= 263
    assert (ended.returncode, ended.stdout, ended.stderr) == (
        0,
        f"ended {ada}: {format_money(cost, 'gbp')}, payment succeeded\n",
        "",
    )
    [charge] = await payment_intents_of(stripe_client, ada_customer)
    assert (charge["amount"], charge["status"]) == (cost, "succeeded")

    still_open = await cli("sessions", "list", "--open")
    [header, row] = cells(still_open.stdout)
    assert header == ["ID", "POD", "E-MAIL", "STARTED", "ENDED", "TIME", "COST", "PAYMENT"]
    assert [row[0], row[1], row[2], row[4], row[7]] == [
        str(grace),
        "pod2",
        "grace@example.com",
        "open",
        "-",
    ]
    every = cells((await cli("sessions", "list", "--email", "ADA@example.com")).stdout)
    assert [r[0] for r in every[1:]] == [str(ada)]
    assert [every[1][5], every[1][6], every[1][7]] == [took, format_money(cost, "gbp"), "succeeded"]

    await mailbox.wait_for("receipt", to="ada@example.com")
    shown = await cli("sessions", "show", str(ada))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:3] == [
        f"session {ada}",
        f"pod pod1, ada@example.com, settled, cost {format_money(cost, 'gbp')}",
        "",
    ]
    assert [line[18:] for line in lines[3:]] == [
        "booked pod1 by ada@example.com, £0.25 per minute",
        "e-mail sent: access code to ada@example.com",
        f"ended after {took}",
        f"{format_money(cost, 'gbp')} charged ({charge['id']})",
        "e-mail sent: receipt to ada@example.com",
    ]
    as_json = json.loads((await cli("sessions", "show", str(ada), "--json")).stdout)
    assert [event["kind"] for event in as_json["timeline"]] == [
        "booked",
        "email",
        "ended",
        "payment",
        "email",
    ]
    assert (as_json["session"]["cost_pence"], as_json["session"]["payment_status"]) == (
        cost,
        "succeeded",
    )


async def test_end_without_charge_releases_the_hold_and_records_the_reason(
    cli: Cli,
    pods: None,
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
) -> None:
    async with running(create_app(make_settings(HOLD_MINUTES=60))) as http:
        ada, customer = await book(http, stripe_client, pod="pod1", email="ada@example.com")
    await aged(sql, ada)

    ended = await cli(
        "sessions",
        "end",
        str(ada),
        "--no-charge",
        "--reason",
        "the heater was broken",
        hold_minutes=60,
    )
    assert (ended.returncode, ended.stdout, ended.stderr) == (
        0,
        f"ended {ada}: £0.00, payment not_charged\n",
        "",
    )
    [hold] = await payment_intents_of(stripe_client, customer)
    assert (hold["amount"], hold["status"]) == (1500, "canceled")
    shown = await cli("sessions", "show", str(ada))
    _, took = await duration(sql, ada)
    assert [line[18:] for line in shown.stdout.splitlines()[3:] if "e-mail" not in line] == [
        "booked pod1 by ada@example.com, £0.25 per minute",
        f"£15.00 held on the card ({hold['id']})",
        f"ended after {took}, without charge: the heater was broken",
        "not charged (£0.00); the £15.00 hold released",
    ]

    again = await cli("sessions", "end", str(ada), "--no-charge", hold_minutes=60)
    assert (again.returncode, again.stdout, again.stderr) == (
        1,
        "",
        "error: This session's payment is settled already: there is no charge to waive.\n",
    )
    assert len(await payment_intents_of(stripe_client, customer)) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["sessions", "show", "nope"], 2, "argument id: 'nope' is not a session id (a UUID)"),
        (["sessions", "end", "12345"], 2, "argument id: '12345' is not a session id (a UUID)"),
        (
            ["sessions", "list", "--since", "yesterday"],
            2,
            "argument --since: 'yesterday' is not a date (YYYY-MM-DD)",
        ),
        (
            ["sessions", "list", "--email", "not an address"],
            2,
            "argument --email: 'not an address' is not an e-mail address: An email address "
            "must have an @-sign.",
        ),
        (["sessions", "list", "--colour"], 2, "unrecognized arguments: --colour"),
        (["sessions", "show", NOBODY], 1, "No session with this id."),
        (["sessions", "end", NOBODY], 1, "No session with this id."),
        (["sessions", "end", NOBODY, "--no-charge"], 1, "No session with this id."),
    ],
)
async def test_bad_input_exits_non_zero_with_one_line(
    cli: Cli, args: list[str], code: int, message: str
) -> None:
    result = await cli(*args)
    assert (result.returncode, result.stdout, result.stderr) == (code, "", f"error: {message}\n")


async def test_no_sessions_is_said_in_words_and_as_an_empty_list(cli: Cli) -> None:
    assert (await cli("sessions", "list")).stdout == "no sessions\n"
    assert (await cli("sessions", "list", "--owed", "--json")).stdout == "[]\n"


async def test_hash_password_prints_an_argon2_hash_of_the_password_read(cli: Cli) -> None:
    result = await cli("admin", "hash-password", stdin="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert printed.startswith("$argon2id$")
    assert PasswordHasher().verify(printed, "correct horse battery")
    short = await cli("admin", "hash-password", stdin="hunter2\n")
    assert (short.returncode, short.stdout, short.stderr) == (
        1,
        "",
        "error: the password must have at least 12 characters\n",
    )


async def test_refunded_and_disputed_sessions_are_listed_and_their_story_told(
    cli: Cli,
    pods: None,
    client: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    db: PostgresDatabase,
) -> None:
    ada, _ = await book(client, stripe_client, pod="pod1", email="ada@example.com")
    grace, _ = await book(client, stripe_client, pod="pod2", email="grace@example.com")
    # What Seam's events, the backup-code round and the reminder round record of grace's.
    assert await db.record_access_code(grace, access_code_id="ac_grace", status="setting")
    session = await db.get_session_by_id(grace)
    assert session is not None
    backup = email_manager.backup_code_emails(
        session, backup_code="4321", end_session_url="http://qwip.test/end", operator=None
    )
    assert await db.record_backup_code(grace, BackupCode("ac_backup_1", "4321"), emails=backup)
    opened = datetime.now(UTC) - timedelta(minutes=5)
    for n, at in enumerate((opened + timedelta(minutes=1), opened)):
        assert await db.record_unlock(
            f"ev_{n}", "lock.unlocked", access_code_id="ac_grace", occurred_at=at
        ) == ("recorded")
    assert await db.record_reminder(grace, emails=[])
    for session_id in (ada, grace):
        await aged(sql, session_id)
        assert (await cli("sessions", "end", str(session_id))).returncode == 0
    refunded = await cli(
        "sessions", "refund", str(ada), "--amount-pence", "100", "--reason", "cold pod"
    )
    assert refunded.returncode == 0, refunded.stderr
    assert await db.record_dispute(
        grace, dispute_id="dp_1", event_id="evt_dispute_1", event_type="charge.dispute.created"
    ) == ("recorded")

    def ids(result: subprocess.CompletedProcess[str]) -> list[str]:
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        return [found["id"] for found in json.loads(result.stdout)]

    assert ids(await cli("sessions", "list", "--refunded", "--json")) == [str(ada)]
    assert ids(await cli("sessions", "list", "--disputed", "--json")) == [str(grace)]
    assert ids(await cli("sessions", "list", "--refunded", "--disputed", "--json")) == []
    [_, first, second] = cells((await cli("sessions", "list")).stdout)
    assert (first[0], first[7]) == (str(grace), "succeeded, disputed")
    assert (second[0], second[7]) == (str(ada), "succeeded, £1.00 refunded")
    [listed] = json.loads(
        (await cli("sessions", "list", "--email", "ada@example.com", "--json")).stdout
    )
    assert (listed["refunded_pence"], listed["disputed_at"]) == (100, None)

    ada_story = (await cli("sessions", "show", str(ada))).stdout.splitlines()
    assert re.fullmatch(
        r"refund of £1\.00 by the operator \(CLI or console\), succeeded \(re_\w+\): cold pod",
        [line[18:] for line in ada_story if "refund of" in line][0],
    ), ada_story
    grace_story = json.loads((await cli("sessions", "show", str(grace), "--json")).stdout)
    told = {event["kind"]: event for event in grace_story["timeline"]}
    assert told["unlock"] == {
        "at": opened.isoformat(),
        "kind": "unlock",
        "text": "first unlock of the door with the code; 2 unlocks in all",
    }
    assert told["backup_code"]["text"] == (
        "backup code handed out from the lock's pool (ac_backup_1): the session's own code did "
        "not reach the lock"
    )
    assert told["backup_code"]["at"] is not None
    assert told["reminder"]["text"] == (
        "overstay reminder sent to grace@example.com: the session nears its time limit"
    )
    assert told["dispute"]["text"] == (
        "disputed by the customer with their bank (dp_1): answer it in Stripe's dashboard"
    )
    kinds = [event["kind"] for event in grace_story["timeline"] if event["kind"] != "email"]
    assert kinds == [
        "booked",
        "unlock",
        "backup_code",
        "reminder",
        "ended",
        "payment",
        "dispute",
    ]
