"""A real browser against the service running as a real process.

Debian's chromium, driven by Playwright's async API. One API style only: a sync Playwright
session leaves an event loop running on the main thread, which breaks every pytest-asyncio
test that runs after it. The browser and these tests share pytest-asyncio's session loop,
and the browser starts once per test run.

The service runs in local mode against localstripe, the test SMTP server and a database of
its own, so that its background work never touches the rows of the other tests.
"""

import os
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, async_playwright

from svc.database_accessor import PostgresDatabase
from svc.models.records import NewPod
from tests.conftest import free_port, migrated_database, reset_tables, unavailable
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, PHONE, OpenTab, Tab
from tests.support.mail import Mailbox
from tests.support.processes import ServiceProcess, clean_environment
from tests.support.settings import service_settings

# Dear enough that the running cost moves within a second or two of watching it.
POD1 = NewPod(name="pod1", address="1 Demo Street, London", price=Decimal("0.50"), currency="gbp")
POD2 = NewPod(name="pod2", address="2 Side Road, London", price=Decimal("0.10"), currency="gbp")


@pytest.fixture(scope="session")
def browser_database_url(postgres_server_url: str) -> Iterator[str]:
    with migrated_database(postgres_server_url, "qwip_browser") as url:
        yield url


def start_service(
    database_url: str,
    localstripe_url: str,
    smtp_server: Mailbox,
    folder: Path,
    *,
    hold_minutes: int,
    **extra: str,
) -> ServiceProcess:
    """`uvicorn svc.main:app` in local mode, which the browser reaches over HTTP; `extra`:
    more settings."""
    port = free_port()
    settings = {
        **service_settings(
            app_env="local",
            database_url=database_url,
            stripe_api_base=localstripe_url,
            smtp_port=smtp_server.port,
            public_url=f"http://127.0.0.1:{port}",
        ),
        "HOLD_MINUTES": str(hold_minutes),
    }
    env = clean_environment(
        **settings,
        OUTBOX_DIR=str(folder / "outbox"),
        LOCAL_DATA_DIR=str(folder / "local"),
        # A stay of a few seconds is charged, as a longer one would be.
        MINIMUM_CHARGE_PENCE="1",
        BACKGROUND_INTERVAL_SECONDS="0.2",
        EMAIL_RETRY_BASE_SECONDS="0.2",
        **extra,
    )
    # A folder of its own as the working directory: a developer's .env is not read.
    process = ServiceProcess(port, env, cwd=folder, log=folder / "service.log")
    process.start()
    return process


@pytest.fixture(scope="module")
def service(
    browser_database_url: str,
    localstripe_url: str,
    smtp_server: Mailbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    """The service without a hold on the card (HOLD_MINUTES=0), as before holds."""
    folder = tmp_path_factory.mktemp("service")
    process = start_service(
        browser_database_url, localstripe_url, smtp_server, folder, hold_minutes=0
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def held_service(
    browser_database_url: str,
    localstripe_url: str,
    smtp_server: Mailbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    """The same service placing an hour's hold on the card at booking (HOLD_MINUTES=60),
    beside the one without (a second replica of one database, as in production)."""
    folder = tmp_path_factory.mktemp("held_service")
    process = start_service(
        browser_database_url, localstripe_url, smtp_server, folder, hold_minutes=60
    )
    yield process
    process.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def shop(
    service: ServiceProcess, browser_database_url: str
) -> AsyncIterator[PostgresDatabase]:
    """The service's database, emptied, with pod1 and pod2: to see what the pages did."""
    await reset_tables(browser_database_url)
    db = await PostgresDatabase.connect(browser_database_url, pool_size=2)
    await db.insert_pod(POD1)
    await db.insert_pod(POD2)
    yield db
    await db.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(
            f"no chromium at {CHROMIUM}; `make test` installs it (apt-get install chromium)"
        )
    async with async_playwright() as playwright:
        # Debian's own chromium: nothing is downloaded.
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def open_tab(browser: Browser) -> AsyncIterator[OpenTab]:
    """Opens tabs, each in a fresh context (no shared cookies or storage), phone-sized."""
    contexts: list[BrowserContext] = []

    async def open_one() -> Tab:
        context = await browser.new_context(viewport=PHONE, device_scale_factor=1)
        contexts.append(context)
        tab = Tab(await context.new_page())
        await context.expose_function(
            "qwipReportViolation", lambda text: tab.problems.append(f"CSP violation: {text}")
        )
        await context.add_init_script(
            "document.addEventListener('securitypolicyviolation', (e) => "
            "window.qwipReportViolation(`${e.violatedDirective} ${e.blockedURI}`));"
        )
        tab.page.on("console", lambda message: tab.on_console(message.type, message.text))
        tab.page.on("pageerror", lambda error: tab.problems.append(f"page error: {error}"))
        tab.page.on("request", lambda request: tab.requests.append(request.url))
        return tab

    yield open_one
    for context in contexts:
        await context.close()
