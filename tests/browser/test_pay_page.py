"""The pay page in chromium: a session whose charge failed, paid from the link on its page."""

from typing import Any
from uuid import UUID

import asyncpg
import pytest
from playwright.async_api import expect

from svc.database_accessor import PostgresDatabase
from tests.browser.test_pages import CUSTOMER, end_session, start_session
from tests.support.browser import OpenTab, fill_card, snapshot
from tests.support.mail import Mailbox
from tests.support.processes import ServiceProcess
from tests.support.stripe_helpers import (
    CARD_DECLINED_AT_CHARGE,
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    payment_intents_of,
    sdk,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def owed_session(
    service: ServiceProcess, localstripe_url: str, database_url: str, *, card: str
) -> dict[str, Any]:
    """A ten-minute session in pod1 (£5.00) whose charge to `card` failed."""
    booked = await start_session(service, localstripe_url, card=card)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "update pod_sessions set start_time = now() - interval '600 seconds' where id = $1",
            UUID(booked["session_id"]),
        )
    finally:
        await connection.close()
    await end_session(service, booked["session_id"])
    return booked


async def recovery_payments(localstripe_url: str, customer_id: str) -> list[tuple[int, str]]:
    return [
        (intent["amount"], intent["status"])
        for intent in await payment_intents_of(sdk(localstripe_url), customer_id)
        if intent["metadata"].get("purpose") == "recovery"
    ]


async def test_a_failed_charge_is_paid_with_another_card_from_the_end_page_link(
    open_tab: OpenTab,
    service: ServiceProcess,
    shop: PostgresDatabase,
    localstripe_url: str,
    browser_database_url: str,
    mailbox: Mailbox,
) -> None:
    booked = await owed_session(
        service, localstripe_url, browser_database_url, card=CARD_DECLINED_AT_CHARGE
    )
    tab = await open_tab()
    page = tab.page
    await page.goto(booked["end_session_url"])
    await page.get_by_role("link", name="Pay what is owed").click()
    await expect(page.get_by_role("heading", name="Pay £5.00")).to_be_visible()
    await expect(page.locator("#owed")).to_have_text("£5.00")
    await snapshot(page, "pay")

    # The saved card is declined again: said in words, and another card is offered.
    await page.get_by_role("button", name="Pay £5.00 with your saved card").click()
    await expect(page.locator("#pay-status")).to_have_text(
        "Your card was declined. Try again or use another card."
    )
    await fill_card(page, CARD_OK)
    await page.get_by_role("button", name="Pay £5.00 with this card").click()
    await expect(page.get_by_role("heading", name="Paid, thank you")).to_be_visible()
    await snapshot(page, "pay-paid")

    session = await shop.get_session_by_id(UUID(booked["session_id"]))
    assert session is not None and session.payment_status == "succeeded"
    customer = session.stripe_customer_id
    assert sorted(await recovery_payments(localstripe_url, customer)) == [
        (500, "requires_payment_method"),
        (500, "succeeded"),
    ]
    [receipt] = await mailbox.wait_for("receipt", to=CUSTOMER)
    assert "Paid: £5.00 on the payment page" in receipt.text
    assert tab.problems == []


async def test_the_banks_authentication_is_completed_on_the_pay_page(
    open_tab: OpenTab,
    service: ServiceProcess,
    shop: PostgresDatabase,
    localstripe_url: str,
    browser_database_url: str,
) -> None:
    booked = await owed_session(
        service, localstripe_url, browser_database_url, card=CARD_NEEDS_AUTHENTICATION
    )
    tab = await open_tab()
    page = tab.page
    await page.goto(f"{service.url}/pay?sessionId={booked['session_id']}")
    await page.get_by_role("button", name="Pay £5.00 with your saved card").click()
    # localstripe's stand-in for the bank's 3-D Secure window.
    await page.get_by_role("button", name="Complete authentication").click()
    await expect(page.get_by_role("heading", name="Paid, thank you")).to_be_visible()
    session = await shop.get_session_by_id(UUID(booked["session_id"]))
    assert session is not None and session.payment_status == "succeeded"
    assert await recovery_payments(localstripe_url, session.stripe_customer_id) == [
        (500, "succeeded")
    ]
    assert tab.problems == []


async def test_the_booking_page_of_a_customer_who_owes_says_why_and_links_to_the_pay_page(
    open_tab: OpenTab,
    service: ServiceProcess,
    shop: PostgresDatabase,
    localstripe_url: str,
    browser_database_url: str,
) -> None:
    booked = await owed_session(
        service, localstripe_url, browser_database_url, card=CARD_DECLINED_AT_CHARGE
    )
    pay_url = f"{service.url}/pay?sessionId={booked['session_id']}"
    refusal = (
        "You owe £5.00 for an earlier session whose payment did not go through, so a new "
        "session cannot start. Nothing was charged or held for this booking. Pay what is "
        "owed, then book again."
    )
    tab = await open_tab()
    page = tab.page
    for email, card in ((CUSTOMER, CARD_OK), ("other@example.com", CARD_DECLINED_AT_CHARGE)):
        # By the e-mail (any case) before the card is saved; by the card once it is.
        await page.goto(f"{service.url}/book?podName=pod1")
        await page.get_by_label("E-mail").fill(email.upper())
        await fill_card(page, card)
        await page.get_by_role("button", name="Save card and book").click()
        await expect(page.locator("#booking-status")).to_have_text(refusal)
        link = page.get_by_role("link", name="Pay what is owed")
        await expect(link).to_have_attribute("href", pay_url)
    await snapshot(page, "book-owed")
    await page.get_by_role("link", name="Pay what is owed").click()
    await expect(page.get_by_role("heading", name="Pay £5.00")).to_be_visible()
    pod = await shop.get_pod_by_name("pod1")
    assert pod is not None and pod.in_use is False
    connection = await asyncpg.connect(browser_database_url)
    try:
        assert await connection.fetchval("select count(*) from pod_sessions") == 1
    finally:
        await connection.close()
    assert tab.problems == []
