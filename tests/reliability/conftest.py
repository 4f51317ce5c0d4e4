"""Two replicas of the service (real uvicorn processes) on one Postgres database, with
localstripe behind a latency proxy and an SMTP server, for the reliability scenarios."""

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import stripe
from aiosmtpd.controller import Controller

from svc.local import stop_process
from svc.local.idempotency import HOLD_PATH, LOG_PATH
from svc.local.localstripe import register_localstripe_webhook, start_localstripe
from tests.conftest import free_port, migrated_database, reset_tables
from tests.support import booking
from tests.support.booking import SavedCard
from tests.support.latency_proxy import LatencyProxy
from tests.support.mail import Mailbox, start_smtp_server
from tests.support.processes import ServiceProcess, clean_environment
from tests.support.settings import service_settings
from tests.support.stripe_helpers import sdk, signed_event

STRIPE_SECRET = "sk_test_reliability"
WEBHOOK_SECRET = "whsec_reliability"
SCENARIO_LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCENARIO_LINES:
        terminalreporter.section("reliability scenarios")
        for line in SCENARIO_LINES:
            terminalreporter.write_line(line)


@pytest.fixture
def report() -> Any:
    """Adds a one-line summary of the scenario to the end of `make test`'s output."""
    return SCENARIO_LINES.append


class Localstripe:
    """localstripe that can be stopped and started again with its state kept."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.state = folder / "localstripe.pickle"
        self.log = folder / "localstripe.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.webhook_urls: list[str] = []

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def start(self, *, fresh: bool = False) -> None:
        self.process = start_localstripe(
            self.port, state_file=self.state, log_file=self.log, fresh=fresh
        )
        self.register_webhooks()

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)

    def register_webhooks(self, *, reachable: bool = True) -> None:
        """Point Stripe's events at the replicas, or (`reachable=False`) at nobody: Stripe
        delivers events late at times, and retries for days."""
        for index, url in enumerate(self.webhook_urls):
            register_localstripe_webhook(
                self.url,
                url=url if reachable else "http://127.0.0.1:9/webhook/stripe",
                secret=WEBHOOK_SECRET,
                name=f"replica{index}",
            )

    async def requests(self) -> list[dict[str, Any]]:
        """The stand-in's log of the POSTs it answered (svc/local/idempotency.py)."""
        async with httpx.AsyncClient(base_url=self.url) as http:
            return list((await http.get(LOG_PATH)).json())

    async def hold_answers(self, milliseconds: int, *, path: str = "^/v1/") -> None:
        """Hold back the answers to POSTs whose path matches, once their work is done."""
        async with httpx.AsyncClient(base_url=self.url) as http:
            answer = await http.post(HOLD_PATH, data={"ms": milliseconds, "path": path})
            answer.raise_for_status()


class Smtp:
    """The SMTP server, on a fixed port so it can go down and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mailbox = Mailbox()
        self.controller: Controller | None = None
        self.start()

    def start(self) -> None:
        _, self.controller = start_smtp_server(self.port, self.mailbox)

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()
            self.controller = None


@dataclass
class Cluster:
    database_url: str
    replicas: list[ServiceProcess]
    localstripe: Localstripe
    proxy: LatencyProxy
    smtp: Smtp
    # The test's own Stripe client, new for each test: its HTTP client is bound to the
    # test's event loop.
    stripe: "stripe.StripeClient | None" = None

    @property
    def mailbox(self) -> Mailbox:
        return self.smtp.mailbox

    def url(self, index: int) -> str:
        return self.replicas[index % len(self.replicas)].url


# Production's default: every booking places a hold, every end captures or releases it.
HOLD_MINUTES = 60


@pytest.fixture(scope="session")
def cluster(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The replicas with holds on, as production runs."""
    with migrated_database(postgres_server_url, "qwip_reliability") as database_url:
        yield from _cluster_on(
            database_url, tmp_path_factory.mktemp("cluster"), hold_minutes=HOLD_MINUTES
        )


@pytest.fixture(scope="session")
def charge_cluster(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Replicas with holds off (HOLD_MINUTES=0: the off-session charge at the end), on a
    database and a localstripe of their own; the service reads HOLD_MINUTES at start."""
    with migrated_database(postgres_server_url, "qwip_reliability_charges") as database_url:
        yield from _cluster_on(database_url, tmp_path_factory.mktemp("charges"), hold_minutes=0)


def _cluster_on(database_url: str, folder: Path, *, hold_minutes: int) -> Iterator[Cluster]:
    smtp = Smtp()
    localstripe = Localstripe(folder)
    proxy = LatencyProxy(localstripe.url, free_port()).start()
    ports = [free_port(), free_port()]
    localstripe.webhook_urls = [f"http://127.0.0.1:{port}/webhook/stripe" for port in ports]
    localstripe.start(fresh=True)
    settings = service_settings(
        # production's rules (no stand-in, every secret required) on local peers
        app_env="test",
        database_url=database_url,
        stripe_api_base=proxy.url,
        smtp_port=smtp.port,
        public_url="http://qwip.test",
        # its own, so that the log checks look for secrets that nothing else uses
        stripe_secret=STRIPE_SECRET,
        webhook_secret=WEBHOOK_SECRET,
    )
    env = clean_environment(
        **{**settings, "HOLD_MINUTES": str(hold_minutes)},
        SMTP_TIMEOUT_SECONDS="2",
        BACKGROUND_INTERVAL_SECONDS="0.5",
        EMAIL_RETRY_BASE_SECONDS="0.5",
        CHARGE_LEASE_SECONDS="8",
        SETTLE_RETRY_SECONDS="2",
    )
    replicas = [
        # with the access log on, as the Procfile runs it
        ServiceProcess(port, env, cwd=folder, log=folder / f"replica{i}.log", access_log=True)
        for i, port in enumerate(ports)
    ]
    try:
        for replica in replicas:
            replica.start()
        yield Cluster(database_url, replicas, localstripe, proxy, smtp)
    finally:
        for replica in replicas:
            replica.stop()
        localstripe.stop()
        proxy.stop()
        smtp.stop()


@pytest.fixture
async def fresh(cluster: Cluster) -> AsyncIterator[Cluster]:
    """The cluster (holds on) with an empty database, pods seeded, and an empty inbox."""
    async for ready in _freshen(cluster):
        yield ready


@pytest.fixture
async def fresh_charges(charge_cluster: Cluster) -> AsyncIterator[Cluster]:
    """The cluster with holds off, freshened the same way."""
    async for ready in _freshen(charge_cluster):
        yield ready


async def _freshen(cluster: Cluster) -> AsyncIterator[Cluster]:
    await reset_tables(cluster.database_url)
    connection = await asyncpg.connect(cluster.database_url)
    try:
        await connection.executemany(
            "insert into pods (name, address, price) values ($1, $2, $3)",
            [(f"pod{i}", f"{i} Quiet Lane", Decimal("0.25")) for i in range(10)],
        )
    finally:
        await connection.close()
    cluster.mailbox.clear()
    cluster.stripe = sdk(cluster.localstripe.url)
    cluster.proxy.delay_before = 0
    cluster.proxy.delay_after.clear()
    cluster.proxy.seen.clear()
    await cluster.localstripe.hold_answers(0)
    yield cluster


@pytest.fixture
async def sql(fresh: Cluster) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh.database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def sql_charges(fresh_charges: Cluster) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_charges.database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # Idle connections are dropped after 2 s, well before the replicas' uvicorn closes them
    # (5 s, as httpx's own default): a request sent on a connection at the instant the server
    # closes it fails with a read error, which would be the harness's fault, not the service's.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        yield client


async def save_card(
    cluster: Cluster, http: httpx.AsyncClient, *, pod: str, email: str, replica: int = 0
) -> SavedCard:
    """What a customer does on the booking page, up to the card being confirmed."""
    assert cluster.stripe is not None
    return await booking.save_card(
        http, cluster.stripe, pod=pod, email=email, card_email=email, base_url=cluster.url(replica)
    )


def setup_succeeded(
    card: SavedCard, *, event_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Stripe's signed event for the card's SetupIntent, as the webhook receives it."""
    return signed_event(
        "setup_intent.succeeded", card.setup_intent, WEBHOOK_SECRET, event_id=event_id
    )
