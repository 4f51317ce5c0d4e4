"""The operator's console over HTTP, in process: who may use it, the forms' guards, and
what its pages show and do, against Postgres, localstripe and the test SMTP server.

What it looks like in a browser is tested in tests/browser/test_console.py."""

import logging
import re
from decimal import Decimal
from uuid import UUID

import httpx
import pytest
import stripe
from fastapi import FastAPI

from svc.console.auth import hash_password
from svc.console.sign_in import SIGN_IN_ATTEMPTS, SIGN_IN_WINDOW_SECONDS
from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import NewPod
from tests.integration.conftest import SettingsFactory, running
from tests.integration.test_pages import ONLY_THE_SERVICE
from tests.support import booking
from tests.support.mail import Mailbox

PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)
PAGE_HEADERS = {
    "content-security-policy": ONLY_THE_SERVICE,
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}
NOT_FOUND = {"detail": "Not Found"}


@pytest.fixture
def console_app(make_settings: SettingsFactory) -> FastAPI:
    return create_app(make_settings(ADMIN_PASSWORD_HASH=PASSWORD_HASH))


@pytest.fixture
async def pod1(db: PostgresDatabase) -> int:
    pod = await db.insert_pod(NewPod("pod1", "1 Demo Street", Decimal("0.25"), "gbp"))
    return pod.id


def from_address(app: FastAPI, host: str = "127.0.0.1") -> httpx.AsyncClient:
    """Another browser (its own cookies) on the running app, from `host`."""
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def csrf_in(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None, page
    return match[1]


async def sign_in(http: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    form = await http.get("/admin/sign-in")
    assert form.status_code == 200, form.text
    return await http.post(
        "/admin/sign-in", data={"csrf_token": csrf_in(form.text), "password": password}
    )


async def signed_in(http: httpx.AsyncClient) -> None:
    response = await sign_in(http)
    assert (response.status_code, response.headers["location"]) == (303, "/admin")


async def book(http: httpx.AsyncClient, stripe_client: stripe.StripeClient) -> UUID:
    card = await booking.save_card(http, stripe_client, pod="pod1", email="ada@example.com")
    return UUID((await booking.confirm_booking(http, card))["session_id"])


def headers_of(response: httpx.Response) -> dict[str, str]:
    return {name: response.headers[name] for name in PAGE_HEADERS}


async def test_without_a_password_hash_the_console_is_not_there_outside_local_mode(
    make_settings: SettingsFactory,
) -> None:
    async with running(create_app(make_settings(APP_ENV="test"))) as http:
        for path in ("/admin", "/admin/sign-in", "/admin/sessions", "/admin/money"):
            response = await http.get(path)
            assert (response.status_code, response.json()) == (404, NOT_FOUND), path
        posted = await http.post("/admin/sign-in", data={"password": PASSWORD})
        assert (posted.status_code, posted.json()) == (404, NOT_FOUND)


async def test_outside_local_mode_the_cookie_is_secure(make_settings: SettingsFactory) -> None:
    settings = make_settings(APP_ENV="test", ADMIN_PASSWORD_HASH=PASSWORD_HASH)
    async with running(create_app(settings)) as http:
        response = await http.get("/admin/sign-in")
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert re.fullmatch(
        r"qwip_admin=[^;]+; HttpOnly; Max-Age=28800; Path=/admin; SameSite=strict; Secure",
        cookie,
    ), cookie


async def test_signing_in_opens_every_page_with_the_customer_pages_headers(
    console_app: FastAPI, client: httpx.AsyncClient, pod1: int
) -> None:
    async with running(console_app) as http:
        before = await http.get("/admin")
        assert (before.status_code, before.headers["location"]) == (303, "/admin/sign-in")
        form = await http.get("/admin/sign-in")
        assert headers_of(form) == PAGE_HEADERS
        response = await sign_in(http)
        assert (response.status_code, response.headers["location"]) == (303, "/admin")
        cookie = response.headers["set-cookie"]
        # Local mode serves plain http: the cookie cannot be Secure there.
        assert re.fullmatch(
            r"qwip_admin=[^;]+; HttpOnly; Max-Age=28800; Path=/admin; SameSite=strict", cookie
        ), cookie
        for path in ("/admin", "/admin/sessions", "/admin/sessions?show=owed", "/admin/money"):
            page = await http.get(path)
            assert page.status_code == 200, path
            assert headers_of(page) == PAGE_HEADERS, path
            assert "<script" not in page.text and "style=" not in page.text, path
        missing = await http.get(f"/admin/sessions/{UUID(int=1)}")
        assert missing.status_code == 404
        assert headers_of(missing) == PAGE_HEADERS
        assert (
            '<td>pod1<br><span class="hint">1 Demo Street</span></td>'
            in (await http.get("/admin")).text
        )
        out = await http.post(
            "/admin/sign-out", data={"csrf_token": csrf_in((await http.get("/admin")).text)}
        )
        assert (out.status_code, out.headers["location"]) == (303, "/admin/sign-in")
        after = await http.get("/admin")
        assert (after.status_code, after.headers["location"]) == (303, "/admin/sign-in")


async def test_a_wrong_password_is_refused_and_repeated_failures_are_limited_everywhere(
    console_app: FastAPI, make_settings: SettingsFactory
) -> None:
    async with running(console_app) as http:
        wrong = await sign_in(http, "guess")
        assert wrong.status_code == 401
        assert '<p class="notice admin-error" role="alert">Wrong password.</p>' in wrong.text
        assert (await http.get("/admin")).status_code == 303
        for _ in range(SIGN_IN_ATTEMPTS - 1):
            assert (await sign_in(http, "guess")).status_code == 401
        # Limited: even the right password is not tried now.
        limited = await sign_in(http)
        assert limited.status_code == 429
        assert 0 < int(limited.headers["retry-after"]) <= SIGN_IN_WINDOW_SECONDS
        assert "Too many wrong passwords from this address. Try again in 15 minutes." in (
            limited.text
        )
        # Another replica on the same database counts the same failures.
        async with running(create_app(make_settings(ADMIN_PASSWORD_HASH=PASSWORD_HASH))) as other:
            assert (await sign_in(other)).status_code == 429
        # Another address is not held back by this one's failures.
        async with from_address(console_app, "203.0.113.9") as elsewhere:
            await signed_in(elsewhere)


async def test_signing_in_makes_a_new_cookie_so_a_token_taken_before_is_worthless(
    console_app: FastAPI, pod1: int, stripe_client: stripe.StripeClient
) -> None:
    async with running(console_app) as http:
        session_id = await book(http, stripe_client)
        before = csrf_in((await http.get("/admin/sign-in")).text)
        await signed_in(http)
        end = f"/admin/sessions/{session_id}/end"
        assert (await http.post(end, data={"csrf_token": before})).status_code == 403
        after = csrf_in((await http.get(f"/admin/sessions/{session_id}")).text)
        assert after != before
        assert (await http.post(end, data={"csrf_token": after})).status_code == 303


async def test_a_successful_sign_in_forgets_the_failures_before_it(console_app: FastAPI) -> None:
    async with running(console_app) as http:
        for _ in range(SIGN_IN_ATTEMPTS - 1):
            assert (await sign_in(http, "guess")).status_code == 401
        await signed_in(http)
        async with from_address(console_app) as again:
            for _ in range(SIGN_IN_ATTEMPTS - 1):
                assert (await sign_in(again, "guess")).status_code == 401
            await signed_in(again)


async def test_a_form_without_its_token_or_with_another_sessions_cookie_is_refused(
    console_app: FastAPI, pod1: int, stripe_client: stripe.StripeClient
) -> None:
    async with running(console_app) as mine, from_address(console_app) as theirs:
        session_id = await book(mine, stripe_client)
        await signed_in(mine)
        await signed_in(theirs)
        page = f"/admin/sessions/{session_id}"
        my_token = csrf_in((await mine.get(page)).text)
        end = f"{page}/end"
        refused = await mine.post(end, data={})
        assert refused.status_code == 403
        assert "This form was not sent from your console page" in refused.text
        assert headers_of(refused) == PAGE_HEADERS
        assert (await theirs.post(end, data={"csrf_token": my_token})).status_code == 403
        async with from_address(console_app) as stranger:
            assert (await stranger.post(end, data={"csrf_token": my_token})).status_code == 403
            # A cookie that is not signed in, with its own token, may not act either.
            anonymous = csrf_in((await stranger.get("/admin/sign-in")).text)
            assert (await stranger.post(end, data={"csrf_token": anonymous})).status_code == 403
        assert (await mine.post("/admin/sign-in", data={"password": PASSWORD})).status_code == 403
        preview = await mine.get("/api/end-session-preview", params={"sessionId": session_id})
        assert preview.json()["is_complete"] is False

        done = await mine.post(end, data={"csrf_token": my_token})
        assert (done.status_code, done.headers["location"]) == (303, f"{page}?done=ended")
        preview = await mine.get("/api/end-session-preview", params={"sessionId": session_id})
        assert preview.json()["is_complete"] is True


async def test_the_operator_sees_an_open_session_resends_its_code_and_waives_its_charge(
    console_app: FastAPI, pod1: int, stripe_client: stripe.StripeClient, mailbox: Mailbox
) -> None:
    async with running(console_app) as http:
        session_id = await book(http, stripe_client)
        [first] = await mailbox.wait_for("access_code")
        await signed_in(http)
        overview = (await http.get("/admin")).text
        assert '<span class="state state--in-use">In use</span>' in overview
        assert f'<a href="/admin/sessions/{session_id}">ada@example.com</a>' in overview
        assert '<td class="admin-money" data-running-cost>£0.00</td>' in overview
        assert "ada@example.com" in (await http.get("/admin/sessions?show=open")).text
        assert "No sessions match." in (await http.get("/admin/sessions?show=owed")).text
        assert (
            "No sessions match."
            in (await http.get("/admin/sessions", params={"email": "grace@example.com"})).text
        )

        page = f"/admin/sessions/{session_id}"
        token = csrf_in((await http.get(page)).text)
        resent = await http.post(f"{page}/resend-code", data={"csrf_token": token})
        assert (resent.status_code, resent.headers["location"]) == (303, f"{page}?done=resent")
        [_, again] = await mailbox.wait_for("access_code", count=2)
        assert again.access_code() == first.access_code()
        assert again.end_session_link() == first.end_session_link()
        assert again.recipients == ["ada@example.com"]
        shown = await http.get(f"{page}?done=resent")
        assert '<p class="notice" role="status">The access code was sent again.</p>' in shown.text

        waived = await http.post(
            f"{page}/end-without-charge", data={"csrf_token": token, "reason": "heater <broken>"}
        )
        assert (waived.status_code, waived.headers["location"]) == (303, f"{page}?done=waived")
        story = (await http.get(page)).text
        assert "without charge: heater &lt;broken&gt;</span>" in story
        assert "not charged (£0.00)</span>" in story
        # Ended now: no code to resend, and a second waiver finds nothing to waive.
        late = await http.post(f"{page}/resend-code", data={"csrf_token": token})
        assert late.status_code == 409
        assert "This session has ended: its access code no longer opens the door." in late.text
        twice = await http.post(f"{page}/end-without-charge", data={"csrf_token": token})
        assert twice.status_code == 409
        assert "settled already: there is no charge to waive." in twice.text

        money = (await http.get("/admin/money")).text
        assert re.search(
            r'<tr data-period="today">\s*<th scope="row">Today</th>\s*<td>1</td>\s*<td>0</td>\s*'
            r'<td class="admin-money" data-taken>£0.00</td>\s*'
            r'<td class="admin-money" data-owed>£0.00</td>',
            money,
        ), money
        assert money.count('class="admin-chart__bar"') == 30


async def test_local_mode_prints_a_one_time_password_that_signs_in(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings())
    with caplog.at_level(logging.WARNING, logger="svc.main"):
        async with running(app) as http:
            [banner] = [r.getMessage() for r in caplog.records if "LOCAL MODE" in r.getMessage()]
            match = re.search(
                r"^  console  : http://qwip.test/admin, one-time password (\S+) "
                r"\(this start only\)$",
                banner,
                re.MULTILINE,
            )
            assert match is not None, banner
            assert (await sign_in(http, "not it")).status_code == 401
            response = await sign_in(http, match[1])
            assert (response.status_code, response.headers["location"]) == (303, "/admin")
    # Each start has its own.
    assert create_app(make_settings()).state.console.one_time_password != match[1]


async def test_a_charge_under_way_elsewhere_is_not_waived(
    console_app: FastAPI,
    pod1: int,
    stripe_client: stripe.StripeClient,
    db: PostgresDatabase,
) -> None:
    async with running(console_app) as http:
        session_id = await book(http, stripe_client)
        # Another request ended it and holds its charge lease: it is charging right now.
        ended = await db.end_session(session_id, max_minutes=180, lease_seconds=120)
        assert ended is not None and ended.charge_claimed
        await signed_in(http)
        page = f"/admin/sessions/{session_id}"
        token = csrf_in((await http.get(page)).text)
        refused = await http.post(f"{page}/end-without-charge", data={"csrf_token": token})
        assert refused.status_code == 409
        assert "This session&#39;s charge is under way right now: it cannot be waived." in (
            refused.text
        )
    details = await db.get_session_details(session_id)
    assert details is not None
    assert (details.session.cost_pence, details.no_charge_reason) == (None, None)
