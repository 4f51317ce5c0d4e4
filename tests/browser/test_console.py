"""The operator's console in chromium, against the service as a real process in local
mode: sign in with the banner's one-time password, see the open session's running cost and
the pods out of service, end the session, see the charge on the money page, refund part of
it and see the refund there too. A screenshot of the pods goes to test-artifacts/screenshots/
on every run, and to docs/console.png (the README's) only with QWIP_UPDATE_SCREENSHOTS=1, so
that a test run leaves the tree as it was."""

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import asyncpg
import httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect

from svc.database_accessor import PostgresDatabase
from svc.models.records import LockHealth, NewPod
from svc.utils import format_money
from tests.browser.conftest import POD1, POD2, start_service
from tests.browser.test_pages import CUSTOMER, start_session
from tests.conftest import reset_tables
from tests.support.browser import DESKTOP, SCREENSHOTS, OpenTab, snapshot
from tests.support.mail import Mailbox
from tests.support.processes import ROOT, ServiceProcess

pytestmark = pytest.mark.asyncio(loop_scope="session")

SCREENSHOT = SCREENSHOTS / "console.png"
README_SCREENSHOT = ROOT / "docs" / "console.png"
# Pods with a smart lock, for the overview to show what Seam said of each.
POD3 = NewPod("pod3", "3 Quiet Lane, London", Decimal("0.30"), "gbp", "lock_pod3")
POD4 = NewPod("pod4", "4 Market Street, London", Decimal("0.30"), "gbp", "lock_pod4")


@pytest.fixture(scope="module")
def console_service(
    browser_database_url: str,
    localstripe_url: str,
    smtp_server: Mailbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    """The service in local mode, whose console takes the one-time password of its banner."""
    folder = tmp_path_factory.mktemp("console_service")
    process = start_service(
        browser_database_url, localstripe_url, smtp_server, folder, hold_minutes=0
    )
    yield process
    process.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def console_shop(
    console_service: ServiceProcess, browser_database_url: str
) -> AsyncIterator[PostgresDatabase]:
    await reset_tables(browser_database_url)
    db = await PostgresDatabase.connect(browser_database_url, pool_size=2)
    await db.insert_pod(POD1)
    await db.insert_pod(POD2)
    await db.insert_pod(POD3)
    await db.insert_pod(POD4)
    at = datetime.now(UTC)
    online = LockHealth(
        "lock_pod3", at, online=True, battery_level=Decimal("0.8"), battery_low=False
    )
    offline = LockHealth(
        "lock_pod4", at, online=False, battery_level=Decimal("0.05"), battery_low=True
    )
    for health in (online, offline):
        await db.record_lock_health(health, alert=None)
    await db.set_pod_disabled("pod2", reason="deep clean until 2 pm")
    yield db
    await db.close()


def one_time_password(service: ServiceProcess) -> str:
    found = re.search(r"console  : \S+/admin, one-time password (\S+) ", service.output())
    assert found is not None, service.output()
    return found[1]


async def started_minutes_ago(database_url: str, session_id: str, minutes: int) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "update pod_sessions set start_time = now() - make_interval(mins => $2) "
            "where id = $1",
            UUID(session_id),
            minutes,
        )
    finally:
        await connection.close()


async def test_sign_in_see_the_running_cost_end_the_session_and_see_the_charge(
    open_tab: OpenTab,
    console_service: ServiceProcess,
    console_shop: PostgresDatabase,
    localstripe_url: str,
    browser_database_url: str,
) -> None:
    booked = await start_session(console_service, localstripe_url)
    session_id = booked["session_id"]
    # Ten minutes at £0.50 a minute: £5.00 and counting.
    await started_minutes_ago(browser_database_url, session_id, 10)
    tab = await open_tab()
    page = tab.page
    await page.set_viewport_size(DESKTOP)

    await page.goto(f"{console_service.url}/admin")
    await expect(page.get_by_role("heading", name="Operator console")).to_be_visible()
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Wrong password.")
    await page.get_by_label("Password").fill(one_time_password(console_service))
    await page.get_by_role("button", name="Sign in").click()

    await expect(page.get_by_role("heading", name="Pods")).to_be_visible()
    pod1 = page.locator('tr[data-pod="pod1"]')
    await expect(pod1.locator(".state")).to_have_text("In use")
    await expect(pod1.get_by_role("link", name=CUSTOMER)).to_be_visible()
    running = await pod1.locator("[data-running-cost]").inner_text()
    assert re.fullmatch(r"£\d+\.\d\d", running), running
    assert int(running[1:].replace(".", "")) >= 500
    pod2 = page.locator('tr[data-pod="pod2"]')
    await expect(pod2.locator(".state")).to_have_text("Out of service")
    await expect(pod2.locator("[data-out-of-service]")).to_have_text("deep clean until 2 pm")
    await expect(page.locator('tr[data-pod="pod3"] [data-lock]')).to_have_text(
        "online, battery 80%"
    )
    pod4 = page.locator('tr[data-pod="pod4"]')
    await expect(pod4.locator("[data-out-of-service]")).to_have_text("its door lock is offline")
    await expect(pod4.locator("[data-lock]")).to_have_text("offline, battery 5% (low)")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=SCREENSHOT, full_page=True)
    if os.environ.get("QWIP_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(SCREENSHOT, README_SCREENSHOT)
    await snapshot(page, "console-pods")

    await pod1.get_by_role("link", name=CUSTOMER).click()
    timeline = page.get_by_role("list", name="Timeline")
    await expect(timeline.locator('[data-kind="booked"]')).to_contain_text(
        f"booked pod1 by {CUSTOMER}, £0.50 per minute"
    )
    await page.get_by_role("button", name="End session", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text("Session ended.")
    session = await console_shop.get_session_by_id(UUID(session_id))
    assert session is not None and session.cost_pence is not None and session.cost_pence >= 500
    charged = format_money(session.cost_pence, "gbp")
    await expect(timeline.locator('[data-kind="payment"]')).to_contain_text(f"{charged} charged")
    await expect(page.locator("#admin-state")).to_have_text("settled")
    await snapshot(page, "console-session")

    await page.get_by_role("link", name="Money").click()
    today = page.locator('tr[data-period="today"]')
    await expect(today.locator("[data-taken]")).to_have_text(charged)
    await expect(today.locator("[data-refunded]")).to_have_text("£0.00")
    await expect(today.locator("td").first).to_have_text("1")
    await expect(page.locator(".admin-chart__bar")).to_have_count(30)
    await snapshot(page, "console-money")

    # A pound back, from the session's page, as `sessions refund` would make it.
    await page.get_by_role("link", name="Sessions").click()
    await page.get_by_role("link", name="Refunded").click()
    await expect(page.get_by_text("No sessions match.")).to_be_visible()
    await page.get_by_role("link", name="All", exact=True).click()
    await page.get_by_role("link", name=CUSTOMER).click()
    await page.get_by_label("Amount").fill("1.00")
    await page.get_by_label("Reason", exact=True).fill("the light was out")
    await page.get_by_role("button", name="Refund").click()
    await expect(page.get_by_role("status")).to_have_text("Refund made: £1.00 refunded.")
    await expect(timeline.locator('[data-kind="refund"]')).to_contain_text(
        "refund of £1.00 by the operator (CLI or console), succeeded"
    )
    await expect(page.locator("#admin-refunded")).to_have_text("£1.00")
    await snapshot(page, "console-refunded")

    await page.get_by_role("link", name="Money").click()
    await expect(today.locator("[data-refunded]")).to_have_text("£1.00")
    await expect(today.locator("[data-net]")).to_have_text(
        format_money(session.cost_pence - 100, "gbp")
    )

    await page.get_by_role("link", name="Pods").click()
    await expect(page.locator('tr[data-pod="pod1"] .state')).to_have_text("Free")
    assert tab.problems == []


async def test_the_consoles_pages_send_the_customer_pages_csp(
    console_service: ServiceProcess, console_shop: PostgresDatabase
) -> None:
    async with httpx.AsyncClient(base_url=console_service.url) as http:
        customer = await http.get("/")
        sign_in = await http.get("/admin/sign-in")
    assert sign_in.status_code == 200
    names = ("content-security-policy", "referrer-policy", "x-content-type-options")
    assert [sign_in.headers[name] for name in names] == [customer.headers[name] for name in names]
