"""The built-in pages in chromium: book pod1, watch the cost, end the session, see the charge."""

import re
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from svc.database_accessor import PostgresDatabase
from svc.utils import format_local_time, format_money
from tests.support.browser import OpenTab, fill_card, snapshot
from tests.support.mail import Mailbox
from tests.support.processes import ServiceProcess
from tests.support.stripe_helpers import (
    CARD_DECLINED,
    CARD_DECLINED_AT_CHARGE,
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    confirm_card,
    payment_intents_of,
    sdk,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

CUSTOMER = "grace@example.com"


async def start_session(
    service: ServiceProcess, localstripe_url: str, *, card: str = CARD_OK
) -> dict[str, Any]:
    """A session in pod1 started over the API, the way the booking page starts one."""
    async with httpx.AsyncClient(base_url=service.url) as http:
        created = await http.get(
            "/api/create-setup-intent", params={"podName": "pod1", "email": CUSTOMER}
        )
        assert created.status_code == 200, created.text
        setup = created.json()
        await confirm_card(sdk(localstripe_url), setup["setup_intent_id"], card=card, email=None)
        booked = await http.post(
            "/api/confirm-booking",
            json={
                "setup_intent_id": setup["setup_intent_id"],
                "client_secret": setup["client_secret"],
            },
        )
        assert booked.status_code == 200, booked.text
        body: dict[str, Any] = booked.json()
        return body


async def fill_booking(page: Page, base_url: str, card: str) -> Locator:
    """pod1's booking page with the e-mail and the card filled in; its book button."""
    await page.goto(f"{base_url}/book?podName=pod1")
    await page.get_by_label("E-mail").fill(CUSTOMER)
    await fill_card(page, card)
    return page.get_by_role("button", name="Save card and book")


async def count_sessions(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval("select count(*) from pod_sessions")
        return count
    finally:
        await connection.close()


async def end_session(service: ServiceProcess, session_id: str) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        ended = await http.post("/api/end-session", json={"sessionId": session_id})
        assert ended.status_code == 200, ended.text


async def test_booking_pod1_shows_the_door_code_that_is_emailed(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase, mailbox: Mailbox
) -> None:
    tab = await open_tab()
    page = tab.page
    await page.goto(f"{service.url}/book?podName=pod1")
    await expect(page.get_by_role("heading", name="pod1")).to_be_visible()
    await expect(page.locator(".pod-price")).to_have_text("£0.50 per minute")
    await expect(page.locator("#consent")).to_contain_text("charge it when your session ends")
    await page.get_by_label("E-mail").fill(CUSTOMER)
    await fill_card(page, CARD_OK)
    await snapshot(page, "book")

    # A double click submits once: the button is disabled before the first request leaves.
    await page.get_by_role("button", name="Save card and book").dblclick()
    await expect(page.get_by_role("heading", name="You're booked")).to_be_visible()
    shown_code = await page.locator("#result-code").inner_text()
    [email] = await mailbox.wait_for("access_code", to=CUSTOMER)
    assert re.fullmatch(r"\d{6}", shown_code)
    assert shown_code == email.access_code()
    link = await page.get_by_role("link", name="See the cost and end the session").get_attribute(
        "href"
    )
    assert link == email.end_session_link()
    assert link is not None and link.startswith(f"{service.url}/end-session?sessionId=")
    session_id = link.split("sessionId=", 1)[1]
    session = await shop.get_session_by_id(UUID(session_id))
    assert session is not None and session.access_code == shown_code
    assert session.user_email == CUSTOMER
    assert tab.calls_to("/api/create-setup-intent") == 1
    assert tab.calls_to("/api/confirm-booking") == 1
    # The page words the start time as the server does (the e-mail says the same).
    started = format_local_time(session.start_time, ZoneInfo("Europe/London"))
    await expect(page.locator("#result-start")).to_have_text(started)
    assert f"Started: {started}" in email.text
    await snapshot(page, "book-booked")

    await page.get_by_role("link", name="See the cost and end the session").click()
    await expect(page.get_by_role("heading", name="Cost so far")).to_be_visible()
    assert tab.problems == []


async def test_end_session_page_shows_the_running_cost_then_the_final_charge(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase, localstripe_url: str
) -> None:
    booked = await start_session(service, localstripe_url)
    tab = await open_tab()
    page = tab.page
    await page.goto(booked["end_session_url"])
    await expect(page.get_by_role("heading", name="pod1")).to_be_visible()
    cost = page.locator("#live-cost")
    first_cost = await cost.inner_text()
    assert re.fullmatch(r"£0\.\d\d", first_cost)
    # While the page is open, the cost follows the clock (a penny every 1.2 s at £0.50/min).
    await expect(cost).not_to_have_text(first_cost, timeout=10_000)
    await snapshot(page, "end-session")

    await page.get_by_role("button", name="End session").click()
    yes = page.get_by_role("button", name="Yes, end and pay")
    await expect(yes).to_be_visible()
    await expect(page.get_by_role("button", name="End session")).to_be_hidden()
    await snapshot(page, "end-session-confirm")
    await yes.click()

    await expect(page.get_by_role("heading", name="Session ended")).to_be_visible()
    session = await shop.get_session_by_id(UUID(booked["session_id"]))
    assert session is not None and session.cost_pence is not None and session.cost_pence > 0
    amount = format_money(session.cost_pence, "gbp")
    await expect(page.locator("#receipt-amount")).to_have_text(amount)
    await expect(page.locator("#receipt-outcome")).to_have_text(
        f"Paid: {amount} was charged to your saved card."
    )
    intents = await payment_intents_of(sdk(localstripe_url), session.stripe_customer_id)
    assert [(intent["amount"], intent["status"]) for intent in intents] == [
        (session.cost_pence, "succeeded")
    ]
    # The receipt the page wrote is the one the server renders for an ended session.
    written = await page.locator("#receipt").inner_text()
    await page.reload()
    await expect(page.get_by_role("heading", name="Session ended")).to_be_visible()
    assert await page.locator("#receipt").inner_text() == written
    await snapshot(page, "end-session-receipt")
    assert tab.problems == []


async def test_a_declined_charge_is_told_in_words_on_the_page_and_in_its_receipt(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase, localstripe_url: str
) -> None:
    booked = await start_session(service, localstripe_url, card=CARD_DECLINED_AT_CHARGE)
    tab = await open_tab()
    page = tab.page
    await page.goto(booked["end_session_url"])
    await expect(page.locator("#live-cost")).not_to_have_text("£0.00", timeout=10_000)
    await page.get_by_role("button", name="End session").click()
    await page.get_by_role("button", name="Yes, end and pay").click()

    await expect(page.get_by_role("heading", name="Session ended")).to_be_visible()
    session = await shop.get_session_by_id(UUID(booked["session_id"]))
    assert session is not None and session.cost_pence is not None
    assert session.payment_error is not None
    reason = session.payment_error.split(": ", 1)[1].rstrip(".")
    amount = format_money(session.cost_pence, "gbp")
    await expect(page.locator("#receipt-outcome")).to_have_text(
        f"The charge of {amount} did not go through. {reason}. "
        "We have e-mailed you about paying it."
    )
    written = await page.locator("#receipt").inner_text()
    await page.reload()
    await expect(page.get_by_role("heading", name="Session ended")).to_be_visible()
    assert await page.locator("#receipt").inner_text() == written
    await snapshot(page, "end-session-receipt-declined")
    assert tab.problems == []


async def test_a_declined_card_is_told_in_words_and_starts_no_session(
    open_tab: OpenTab,
    service: ServiceProcess,
    shop: PostgresDatabase,
    browser_database_url: str,
    mailbox: Mailbox,
) -> None:
    tab = await open_tab()
    page = tab.page
    book = await fill_booking(page, service.url, CARD_DECLINED)
    await book.click()

    status = page.locator("#booking-status")
    await expect(status).to_have_text("Your card was declined. Please try another card.")
    await expect(book).to_be_enabled()
    await snapshot(page, "book-declined")
    pod = await shop.get_pod_by_name("pod1")
    assert pod is not None and pod.in_use is False
    assert await count_sessions(browser_database_url) == 0
    assert mailbox.messages() == []

    # Another card on the same page then books: a fresh card setup, since Stripe ended the
    # declined one.
    await fill_card(page, CARD_OK)
    await book.click()
    await expect(page.get_by_role("heading", name="You're booked")).to_be_visible()
    await mailbox.wait_for("access_code", to=CUSTOMER)
    assert tab.calls_to("/api/create-setup-intent") == 2
    assert tab.problems == []


async def test_failed_card_authentication_is_told_in_words(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase, browser_database_url: str
) -> None:
    tab = await open_tab()
    page = tab.page
    await (await fill_booking(page, service.url, CARD_NEEDS_AUTHENTICATION)).click()
    # localstripe's stand-in for the bank's 3D Secure window.
    await page.get_by_role("button", name="Fail authentication").click()

    await expect(page.locator("#booking-status")).to_have_text(
        "The latest attempt to set up the payment method has failed because authentication "
        "failed."
    )
    assert await count_sessions(browser_database_url) == 0
    assert tab.problems == []


async def test_a_pod_in_use_is_told_in_words(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase, localstripe_url: str
) -> None:
    await start_session(service, localstripe_url)
    tab = await open_tab()
    page = tab.page
    await page.goto(f"{service.url}/book?podName=pod1")
    await expect(page.locator(".notice").first).to_have_text(
        "This pod is in use right now. You can book it as soon as the current session ends."
    )
    await page.get_by_label("E-mail").fill(CUSTOMER)
    await fill_card(page, CARD_OK)
    await page.get_by_role("button", name="Save card and book").click()
    await expect(page.locator("#booking-status")).to_have_text(
        "Pod 'pod1' is in use right now; please try again when it is free."
    )
    assert tab.problems == []


async def test_a_lost_connection_is_told_in_words_and_the_retry_books_once(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase, mailbox: Mailbox
) -> None:
    tab = await open_tab()
    page = tab.page
    book = await fill_booking(page, service.url, CARD_OK)
    # The card is saved, then the connection drops before the session starts.
    await page.route("**/api/confirm-booking", lambda route: route.abort("internetdisconnected"))
    await book.click()
    await expect(page.locator("#booking-status")).to_have_text(
        "Qwip cannot be reached. Check your connection and try again."
    )
    await page.unroute("**/api/confirm-booking")

    await book.click()
    await expect(page.get_by_role("heading", name="You're booked")).to_be_visible()
    [email] = await mailbox.wait_for("access_code", to=CUSTOMER)
    assert await page.locator("#result-code").inner_text() == email.access_code()
    # The retry started the session with the card already saved: one card setup in all.
    assert tab.calls_to("/api/create-setup-intent") == 1
    assert tab.problems == ["console: Failed to load resource: net::ERR_INTERNET_DISCONNECTED"]


async def test_the_pod_list_shows_pod1_in_use_while_a_session_is_open(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase, localstripe_url: str
) -> None:
    tab = await open_tab()
    page = tab.page
    await page.goto(f"{service.url}/")
    pod1 = page.get_by_role("link", name=re.compile(r"^pod1"))
    pod2 = page.get_by_role("link", name=re.compile(r"^pod2"))
    await expect(pod1).to_contain_text("1 Demo Street, London")
    await expect(pod1).to_contain_text("£0.50 per minute")
    await expect(pod1.locator("[data-pod-state]")).to_have_text("Free")
    assert await pod1.get_attribute("href") == "/book?podName=pod1"
    await snapshot(page, "pods")

    booked = await start_session(service, localstripe_url)
    # The open page follows, without a reload.
    await expect(pod1.locator("[data-pod-state]")).to_have_text("In use", timeout=10_000)
    await expect(pod2.locator("[data-pod-state]")).to_have_text("Free")
    await snapshot(page, "pods-in-use")

    await end_session(service, booked["session_id"])
    await expect(pod1.locator("[data-pod-state]")).to_have_text("Free", timeout=10_000)
    assert tab.problems == []


async def test_an_unknown_session_link_shows_a_friendly_not_found(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase
) -> None:
    tab = await open_tab()
    page = tab.page
    response = await page.goto(
        f"{service.url}/end-session?sessionId=00000000-0000-4000-8000-000000000000"
    )
    assert response is not None and response.status == 404
    await expect(page.get_by_role("heading", name="Session not found")).to_be_visible()
    await expect(page.get_by_role("link", name="See all pods")).to_have_attribute("href", "/")
    await snapshot(page, "session-not-found")
    assert tab.problems == []


# With HOLD_MINUTES=60, pod1 (50p a minute) holds £30.00 on the card at booking.
HOLD_WORDS = (
    "£30.00 is held on your card; you pay only for the minutes you use and the rest is "
    "released when you end."
)


async def test_booking_with_a_hold_says_it_before_the_card_then_ending_says_what_was_taken(
    open_tab: OpenTab,
    held_service: ServiceProcess,
    shop: PostgresDatabase,
    mailbox: Mailbox,
    localstripe_url: str,
) -> None:
    tab = await open_tab()
    page = tab.page
    await page.goto(f"{held_service.url}/book?podName=pod1")
    # Said before the card is typed.
    await expect(page.locator("#hold")).to_have_text(HOLD_WORDS)
    await expect(page.locator("#card-element")).to_have_attribute("aria-describedby", "hold")
    await page.get_by_label("E-mail").fill(CUSTOMER)
    await fill_card(page, CARD_OK)
    await snapshot(page, "book-hold")

    await page.get_by_role("button", name="Save card and book").dblclick()
    await expect(page.get_by_role("heading", name="You're booked")).to_be_visible()
    [email] = await mailbox.wait_for("access_code", to=CUSTOMER)
    assert await page.locator("#result-code").inner_text() == email.access_code()
    assert tab.calls_to("/api/create-setup-intent") == 1
    assert tab.calls_to("/api/confirm-booking") == 1

    await page.get_by_role("link", name="See the cost and end the session").click()
    await expect(page.get_by_role("heading", name="Cost so far")).to_be_visible()
    await expect(page.locator(".fact", has_text="Held on your card")).to_have_text(
        "Held on your card£30.00"
    )
    await expect(page.locator("#live-cost")).not_to_have_text("£0.00", timeout=10_000)
    await page.get_by_role("button", name="End session").click()
    await page.get_by_role("button", name="Yes, end and pay").click()

    await expect(page.get_by_role("heading", name="Session ended")).to_be_visible()
    session_id = page.url.split("sessionId=", 1)[1]
    session = await shop.get_session_by_id(UUID(session_id))
    assert session is not None and session.cost_pence is not None and session.cost_pence > 0
    taken = format_money(session.cost_pence, "gbp")
    released = format_money(3000 - session.cost_pence, "gbp")
    await expect(page.locator("#receipt-outcome")).to_have_text(
        f"Paid: {taken} was charged to your saved card."
    )
    await expect(page.locator("#receipt-hold")).to_have_text(
        f"{taken} was taken from the £30.00 held; {released} was released."
    )
    # One PaymentIntent: the hold, captured for the cost.
    intents = await payment_intents_of(sdk(localstripe_url), session.stripe_customer_id)
    assert [(intent["amount"], intent["status"]) for intent in intents] == [(3000, "succeeded")]
    # What the page wrote is what the server renders for the ended session.
    written = await page.locator("#receipt").inner_text()
    await page.reload()
    await expect(page.get_by_role("heading", name="Session ended")).to_be_visible()
    assert await page.locator("#receipt").inner_text() == written
    await snapshot(page, "end-session-receipt-hold")
    assert tab.problems == []


async def book_needing_authentication(page: Page, service: ServiceProcess) -> dict[str, Any]:
    """Book pod1 with a card whose bank asks for authentication at the card setup and again
    at the hold; complete the first. Returns the service's 402 that asks for the second."""
    await (await fill_booking(page, service.url, CARD_NEEDS_AUTHENTICATION)).click()
    async with page.expect_response("**/api/confirm-booking") as answer:
        await page.get_by_role("button", name="Complete authentication").click()
    response = await answer.value
    assert response.status == 402
    body: dict[str, Any] = await response.json()
    # localstripe's stand-in for the bank's window, this time for the hold.
    await expect(page.get_by_role("button", name="Complete authentication")).to_be_visible()
    await expect(page.locator("#booking-status")).to_have_text(body["detail"])
    return body


async def test_a_hold_needing_authentication_is_approved_on_the_page_then_starts_the_session(
    open_tab: OpenTab,
    held_service: ServiceProcess,
    shop: PostgresDatabase,
    mailbox: Mailbox,
    localstripe_url: str,
) -> None:
    tab = await open_tab()
    page = tab.page
    asked = await book_needing_authentication(page, held_service)
    assert asked["requires_action"] is True
    assert asked["payment_intent_client_secret"].startswith("pi_")
    await snapshot(page, "book-hold-authentication")
    await page.get_by_role("button", name="Complete authentication").click()

    await expect(page.get_by_role("heading", name="You're booked")).to_be_visible()
    [email] = await mailbox.wait_for("access_code", to=CUSTOMER)
    assert await page.locator("#result-code").inner_text() == email.access_code()
    assert tab.calls_to("/api/create-setup-intent") == 1
    assert tab.calls_to("/api/confirm-booking") == 2
    link = await page.get_by_role("link", name="See the cost and end the session").get_attribute(
        "href"
    )
    assert link is not None
    session = await shop.get_session_by_id(UUID(link.split("sessionId=", 1)[1]))
    assert session is not None
    intents = await payment_intents_of(sdk(localstripe_url), session.stripe_customer_id)
    assert [(intent["amount"], intent["status"]) for intent in intents] == [
        (3000, "requires_capture")
    ]
    assert tab.problems == []


async def test_a_failed_authentication_of_the_hold_is_told_in_words_and_starts_nothing(
    open_tab: OpenTab,
    held_service: ServiceProcess,
    shop: PostgresDatabase,
    browser_database_url: str,
    mailbox: Mailbox,
) -> None:
    tab = await open_tab()
    page = tab.page
    await book_needing_authentication(page, held_service)
    await page.get_by_role("button", name="Fail authentication").click()

    # localstripe's words for the bank's refusal (real Stripe.js has its own), then ours.
    await expect(page.locator("#booking-status")).to_have_text(
        "The provided PaymentMethod has failed authentication. "
        "Nothing was booked and nothing was taken from your card."
    )
    book = page.get_by_role("button", name="Save card and book")
    await expect(book).to_be_enabled()
    await snapshot(page, "book-hold-authentication-failed")
    # The service was not asked again: nothing started.
    assert tab.calls_to("/api/confirm-booking") == 1
    assert await count_sessions(browser_database_url) == 0
    pod = await shop.get_pod_by_name("pod1")
    assert pod is not None and pod.in_use is False
    assert mailbox.messages() == []
    assert tab.problems == []


async def test_a_declined_hold_is_told_in_words_and_starts_no_session(
    open_tab: OpenTab,
    held_service: ServiceProcess,
    shop: PostgresDatabase,
    browser_database_url: str,
) -> None:
    tab = await open_tab()
    page = tab.page
    # Saved without trouble; the bank refuses every payment, the hold included.
    book = await fill_booking(page, held_service.url, CARD_DECLINED_AT_CHARGE)
    async with page.expect_response("**/api/confirm-booking") as answer:
        await book.click()
    response = await answer.value
    assert response.status == 402
    refused = await response.json()
    assert not refused.get("requires_action")
    assert "declined" in refused["detail"]

    status = page.locator("#booking-status")
    await expect(status).to_have_text(refused["detail"])
    await expect(status).to_have_class("status is-error")
    await expect(book).to_be_enabled()
    await snapshot(page, "book-hold-declined")
    assert await count_sessions(browser_database_url) == 0
    pod = await shop.get_pod_by_name("pod1")
    assert pod is not None and pod.in_use is False
    assert tab.problems == []


async def test_a_pod_out_of_service_is_shown_so_and_cannot_be_booked(
    open_tab: OpenTab, service: ServiceProcess, shop: PostgresDatabase
) -> None:
    tab = await open_tab()
    page = tab.page
    await page.goto(f"{service.url}/")
    pod2 = page.get_by_role("link", name=re.compile(r"^pod2"))
    await expect(pod2.locator("[data-pod-state]")).to_have_text("Free")
    try:
        assert await shop.set_pod_disabled("pod2", reason="cleaning until 3 pm")
        # The open page follows, without a reload.
        await expect(pod2.locator("[data-pod-state]")).to_have_text(
            "Out of service", timeout=10_000
        )
        await page.goto(f"{service.url}/book?podName=pod2")
        await expect(page.locator("#out-of-service")).to_have_text(
            "This pod is out of service: cleaning until 3 pm. It cannot be booked right now; "
            "please choose another pod."
        )
        await expect(page.locator("#booking-form")).to_have_count(0)
        await snapshot(page, "book-out-of-service")
    finally:
        await shop.set_pod_disabled("pod2", reason=None)
    await page.goto(f"{service.url}/")
    await expect(pod2.locator("[data-pod-state]")).to_have_text("Free")
    assert tab.problems == []
