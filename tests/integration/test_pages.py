"""The built-in pages over HTTP: what the server renders, and the headers that guard it.

What the pages do in a browser is tested in tests/browser/.
"""

import asyncio
import re
from decimal import Decimal
from uuid import uuid4

import httpx
import pytest

from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import NewPod
from svc.utils import format_money
from tests.integration.conftest import SettingsFactory, running
from tests.support.stripe_helpers import confirm_card, sdk

ONLY_THE_SERVICE = (
    "default-src 'self'; script-src 'self'; connect-src 'self'; frame-src 'none'; "
    "style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@pytest.fixture
async def pod1(db: PostgresDatabase) -> int:
    pod = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp")
    )
    return pod.id


async def test_pod_list_shows_each_pod_with_its_price_and_state(
    client: httpx.AsyncClient, db: PostgresDatabase, pod1: int
) -> None:
    await db.insert_pod(
        NewPod(name="mews", address='<b>"Mews" & Co</b>', price=Decimal("0.125"), currency="gbp")
    )
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert (
        f'<a class="pod" href="/book?podName=pod1" data-pod-id="{pod1}">'
        '<span class="pod__name">pod1</span>'
        '<span class="state state--free" data-pod-state>Free</span>'
        '<span class="pod__address">1 Demo Street</span>'
        '<span class="pod__price">£0.25 per minute</span></a>'
    ) in response.text
    # An address is text, never markup (MarkupSafe writes a quote as &#34;).
    assert (
        '<span class="pod__address">&lt;b&gt;&#34;Mews&#34; &amp; Co&lt;/b&gt;</span>'
        '<span class="pod__price">£0.125 per minute</span>'
    ) in response.text
    assert "<b>" not in response.text


async def test_pages_allow_only_the_service_and_never_cache(
    client: httpx.AsyncClient, pod1: int
) -> None:
    response = await client.get("/")
    assert {
        name: response.headers[name]
        for name in (
            "content-security-policy",
            "referrer-policy",
            "x-content-type-options",
            "cache-control",
        )
    } == {
        "content-security-policy": ONLY_THE_SERVICE,
        "referrer-policy": "same-origin",
        "x-content-type-options": "nosniff",
        "cache-control": "no-store",
    }


@pytest.mark.parametrize(
    ("path", "scripts"),
    [("/", 1), ("/book?podName=pod1", 2), ("/book?podName=nope", 0), ("/end-session", 0)],
)
async def test_pages_have_no_inline_script_or_style(
    client: httpx.AsyncClient, pod1: int, path: str, scripts: int
) -> None:
    """The policy would block them: every script is a file, every style in the stylesheet."""
    text = (await client.get(path)).text
    tags = re.findall(r"<script[^>]*>", text)
    assert len(tags) == scripts and all(" src=" in tag for tag in tags), tags
    assert re.search(r"<script[^>]*>[^<]", text) is None
    assert re.search(r"<[^>]+\son[a-z]+=", text) is None
    assert re.search(r"<[^>]+\sstyle=", text) is None
    assert "<style" not in text


async def test_booking_page_in_local_mode_loads_the_emulator_stripe_js(
    client: httpx.AsyncClient, pod1: int, localstripe_url: str
) -> None:
    response = await client.get("/book?podName=pod1")
    assert response.status_code == 200
    assert (
        f'<script defer src="{localstripe_url}/js.stripe.com/v3/"></script>'
        '<script type="module" src="/static/book.js"></script>'
    ) in response.text
    assert (
        '<main id="main" data-page="book" data-pod-name="pod1" '
        'data-publishable-key="pk_test_qwip" data-timezone="Europe/London">'
    ) in response.text
    assert response.headers["content-security-policy"] == (
        f"default-src 'self'; script-src 'self' {localstripe_url}; "
        f"connect-src 'self' {localstripe_url}; frame-src {localstripe_url}; "
        "style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    assert "Use 4242 4242 4242 4242, any future date and any CVC." in response.text


async def test_booking_page_with_stripe_keys_loads_stripe_js_from_stripe(
    make_settings: SettingsFactory, pod1: int
) -> None:
    settings = make_settings(STRIPE_API_BASE=None, STRIPE_PUBLISHABLE_KEY="pk_test_real")
    async with running(create_app(settings)) as client:
        response = await client.get("/book?podName=pod1")
    assert response.status_code == 200
    assert '<script defer src="https://js.stripe.com/v3/"></script>' in response.text
    assert 'data-publishable-key="pk_test_real"' in response.text
    assert response.headers["content-security-policy"] == (
        "default-src 'self'; script-src 'self' https://js.stripe.com https://*.js.stripe.com; "
        "connect-src 'self' https://api.stripe.com; "
        "frame-src https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com; "
        "style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    assert "Test mode" not in response.text


async def test_booking_page_asks_consent_to_charge_the_card_off_session(
    client: httpx.AsyncClient, pod1: int
) -> None:
    response = await client.get("/book?podName=pod1")
    assert (
        "By booking, you allow Qwip to save this card and charge it when your session ends, "
        "without you being present, for the minutes you use pod1 at £0.25 per minute."
    ) in " ".join(response.text.split())
    assert '<label for="email">E-mail</label>' in response.text
    assert "This pod is in use right now" not in response.text


async def test_booking_page_for_an_unknown_pod_is_a_friendly_404(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/book", params={"podName": "<script>alert(1)</script>"})
    assert response.status_code == 404
    assert "<h1>Pod not found</h1>" in response.text
    assert (
        "<p>There is no pod called “&lt;script&gt;alert(1)&lt;/script&gt;”. "
        "Pick one from the list of pods.</p>"
    ) in response.text
    assert response.headers["content-security-policy"] == ONLY_THE_SERVICE


async def test_booking_page_for_a_name_with_a_nul_is_the_same_404(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/book?podName=pod%001")
    assert response.status_code == 404
    assert "<h1>Pod not found</h1>" in response.text


async def test_booking_page_naming_no_pod_asks_for_one(client: httpx.AsyncClient) -> None:
    response = await client.get("/book")
    assert response.status_code == 404
    assert "<h1>Choose a pod</h1>" in response.text


@pytest.mark.parametrize(
    "query",
    [
        f"?sessionId={uuid4()}",
        f"?session_id={uuid4()}",
        "?sessionId=not-a-uuid",
        "?sessionId=" + "9" * 500,
        "",
    ],
)
async def test_end_session_page_for_a_link_naming_no_session_is_a_friendly_404(
    client: httpx.AsyncClient, query: str
) -> None:
    response = await client.get(f"/end-session{query}")
    assert response.status_code == 404
    assert "<h1>Session not found</h1>" in response.text
    assert '<a class="button" href="/">See all pods</a>' in response.text


async def test_end_session_page_of_an_ended_session_shows_its_receipt(
    client: httpx.AsyncClient, pod1: int, localstripe_url: str
) -> None:
    created = (await client.get("/api/create-setup-intent?podName=pod1")).json()
    await confirm_card(sdk(localstripe_url), created["setup_intent_id"], email="ada@example.com")
    booked = await client.post(
        "/api/confirm-booking",
        json={
            "setup_intent_id": created["setup_intent_id"],
            "client_secret": created["client_secret"],
        },
    )
    session_id = booked.json()["session_id"]
    open_page = await client.get(f"/end-session?sessionId={session_id}")
    assert open_page.status_code == 200
    assert 'data-state="open"' in open_page.text
    assert '<section id="receipt" class="panel result" aria-labelledby="receipt-title" inert>' in (
        open_page.text
    )

    ended = (await client.post("/api/end-session", json={"sessionId": session_id})).json()
    assert ended["payment_status"] == "not_charged"  # seconds: below the 30p minimum
    amount = format_money(ended["final_cost_pence"], "gbp")
    response = await client.get(f"/end-session?sessionId={session_id}")
    assert response.status_code == 200
    assert 'data-state="ended" data-payment-status="not_charged"' in response.text
    assert '<section id="live" class="panel" aria-labelledby="live-title" inert>' in response.text
    assert f'<p class="amount" id="receipt-amount">{amount}</p>' in response.text
    assert (
        '<p class="outcome outcome--ok" id="receipt-outcome">'
        f"Nothing to pay: {amount} is below our minimum charge of £0.30.</p>"
    ) in response.text


async def test_the_pages_scripts_are_served_as_javascript(client: httpx.AsyncClient) -> None:
    for name in ("common.js", "pods.js", "book.js", "end-session.js"):
        response = await client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
    assert (await client.get("/static/missing.js")).status_code == 404


HOLD_WORDS = (
    "is held on your card; you pay only for the minutes you use and the rest is released "
    "when you end."
)


async def test_booking_page_says_the_hold_before_the_card_is_entered(
    make_settings: SettingsFactory, pod1: int
) -> None:
    async with running(create_app(make_settings(HOLD_MINUTES="60"))) as client:
        response = await client.get("/book?podName=pod1")
    assert response.status_code == 200
    # 60 minutes at 25p a minute.
    assert f'<p class="hint hold" id="hold">£15.00 {HOLD_WORDS}</p>' in response.text
    assert response.text.index('id="hold"') < response.text.index('id="card-element"')


async def test_booking_page_without_holds_says_nothing_of_one(
    make_settings: SettingsFactory, pod1: int
) -> None:
    async with running(create_app(make_settings(HOLD_MINUTES="0"))) as client:
        response = await client.get("/book?podName=pod1")
    assert response.status_code == 200
    assert "held" not in response.text
    assert (
        '<div id="card-element" class="card-field" role="group" '
        'aria-labelledby="card-label"></div>'
    ) in response.text


async def test_end_session_page_says_what_was_taken_from_the_hold_and_released(
    make_settings: SettingsFactory, db: PostgresDatabase, localstripe_url: str
) -> None:
    # A penny a second, so that a stay of a second or two is charged.
    await db.insert_pod(
        NewPod(name="dear", address="2 Side Road", price=Decimal("0.60"), currency="gbp")
    )
    settings = make_settings(HOLD_MINUTES="60", MINIMUM_CHARGE_PENCE="1")
    async with running(create_app(settings)) as client:
        created = (await client.get("/api/create-setup-intent?podName=dear")).json()
        await confirm_card(
            sdk(localstripe_url), created["setup_intent_id"], email="ada@example.com"
        )
        booked = await client.post(
            "/api/confirm-booking",
            json={
                "setup_intent_id": created["setup_intent_id"],
                "client_secret": created["client_secret"],
            },
        )
        assert booked.status_code == 200, booked.text
        session_id = booked.json()["session_id"]
        open_page = await client.get(f"/end-session?sessionId={session_id}")
        assert '<div class="fact"><dt>Held on your card</dt><dd>£36.00</dd></div>' in (
            open_page.text
        )
        await asyncio.sleep(1.2)
        ended = (await client.post("/api/end-session", json={"sessionId": session_id})).json()
        response = await client.get(f"/end-session?sessionId={session_id}")
    cost = ended["final_cost_pence"]
    assert cost > 0 and ended["payment_status"] == "succeeded", ended
    assert (ended["hold_pence"], ended["captured_pence"], ended["released_pence"]) == (
        3600,
        cost,
        3600 - cost,
    )
    assert (
        '<p class="outcome-hold" id="receipt-hold">'
        f"{format_money(cost, 'gbp')} was taken from the £36.00 held; "
        f"{format_money(3600 - cost, 'gbp')} was released.</p>"
    ) in response.text
