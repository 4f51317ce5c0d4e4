"""The operator's console over HTTP, in process: who may use it, the forms' guards, and
what its pages show and do, against Postgres, localstripe and the test SMTP server.

What it looks like in a browser is tested in tests/browser/test_console.py."""

import logging
import re
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

import asyncpg
import httpx
import pytest
import stripe
from fastapi import FastAPI

from svc.console.auth import hash_password
from svc.console.sign_in import SIGN_IN_ATTEMPTS, SIGN_IN_WINDOW_SECONDS
from svc.database_accessor import PostgresDatabase
from svc.main import create_app
from svc.models.records import LockHealth, NewPod
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
            r'<td class="admin-money" data-refunded>£0.00</td>\s*'
            r'<td class="admin-money" data-net>£0.00</td>\s*'
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


def cell(page: str, pod: str, name: str) -> str:
    """The text of a pod's cell (data-state, data-lock) on the overview, tags and all."""
    match = re.search(rf'<tr data-pod="{pod}">.*?<td {name}>(.*?)</td>', page, re.DOTALL)
    assert match is not None, page
    return match[1]


async def test_the_overview_shows_each_pod_free_in_use_or_out_of_service_and_its_lock(
    console_app: FastAPI, pod1: int, db: PostgresDatabase, stripe_client: stripe.StripeClient
) -> None:
    for name, lock in (("pod2", "lock_2"), ("pod3", None), ("pod4", "lock_4")):
        await db.insert_pod(NewPod(name, "2 Demo Street", Decimal("0.25"), "gbp", lock))
    at = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    online = LockHealth("lock_2", at, online=True, battery_level=Decimal("0.45"), battery_low=False)
    offline = LockHealth("lock_4", at, online=False, battery_level=Decimal("0.1"), battery_low=True)
    assert await db.record_lock_health(online, alert=None) == "recorded"
    assert await db.record_lock_health(offline, alert=None) == "recorded"
    assert await db.set_pod_disabled("pod3", reason="the heater is broken")
    async with running(console_app) as http:
        await book(http, stripe_client)
        assert await db.set_pod_disabled("pod1", reason="cleaning after this session")
        await signed_in(http)
        page = (await http.get("/admin")).text
    in_use = '<span class="state state--in-use">In use</span>'
    out = '<span class="state state--out">Out of service</span>'
    assert cell(page, "pod1", "data-state") == (
        f'{in_use}<br><span class="hint" data-out-of-service>out of service: '
        "cleaning after this session</span>"
    )
    assert cell(page, "pod1", "data-lock") == "no smart lock"
    assert cell(page, "pod2", "data-state") == '<span class="state state--free">Free</span>'
    assert cell(page, "pod2", "data-lock") == "online, battery 45%"
    assert cell(page, "pod3", "data-state") == (
        f'{out}<br><span class="hint" data-out-of-service>the heater is broken</span>'
    )
    assert cell(page, "pod4", "data-state") == (
        f'{out}<br><span class="hint" data-out-of-service>its door lock is offline</span>'
    )
    assert cell(page, "pod4", "data-lock") == "offline, battery 10% (low)"


async def ended_and_paid(
    http: httpx.AsyncClient, stripe_client: stripe.StripeClient, sql: asyncpg.Connection
) -> UUID:
    """A session of 10 min 30 s at £0.25 a minute, ended from the console: £2.63 charged."""
    session_id = await book(http, stripe_client)
    await sql.execute(
        "update pod_sessions set start_time = now() - interval '630 seconds' where id = $1",
        session_id,
    )
    page = f"/admin/sessions/{session_id}"
    token = csrf_in((await http.get(page)).text)
    ended = await http.post(f"{page}/end", data={"csrf_token": token})
    assert (ended.status_code, ended.headers["location"]) == (303, f"{page}?done=ended")
    return session_id


def facts_of(page: str) -> dict[str, str]:
    return dict(re.findall(r"<dt>([^<]+)</dt>\s*<dd[^>]*>([^<]*)</dd>", page))


async def test_the_operator_refunds_from_the_console_in_pounds_or_pence_and_is_told_why_not(
    console_app: FastAPI,
    pod1: int,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    db: PostgresDatabase,
    mailbox: Mailbox,
) -> None:
    async with running(console_app) as http:
        await signed_in(http)
        session_id = await ended_and_paid(http, stripe_client, sql)
        page = f"/admin/sessions/{session_id}"
        shown = (await http.get(page)).text
        assert '<form method="post" action="/admin/sessions/' + str(session_id) + '/refund"' in (
            shown
        )
        assert "empty: all that is left, £2.63." in shown
        token = csrf_in(shown)
        refund = f"{page}/refund"

        assert (await http.post(refund, data={"amount": "1"})).status_code == 403
        too_much = await http.post(refund, data={"csrf_token": token, "amount": "2.64"})
        assert too_much.status_code == 409
        assert (
            '<p class="notice admin-error" role="alert">at most £2.63 (263 pence) can be '
            "refunded for this session; nothing was refunded</p>"
        ) in too_much.text
        for typed in ("abc", "1.234", "0", "-1"):
            bad = await http.post(refund, data={"csrf_token": token, "amount": typed})
            assert bad.status_code == 400, typed
            assert (
                f"&#39;{typed}&#39; is not an amount: write pounds (1.50) or pence (150p), or "
                "leave it empty to refund all that is left. Nothing was refunded."
            ) in bad.text
        assert await sql.fetchval("select count(*) from session_refunds") == 0

        made = await http.post(
            refund, data={"csrf_token": token, "amount": "150p", "reason": "heater broken"}
        )
        assert (made.status_code, made.headers["location"]) == (
            303,
            f"{page}?done=refunded&pence=150",
        )
        after = (await http.get(made.headers["location"])).text
        assert '<p class="notice" role="status">Refund made: £1.50 refunded.</p>' in after
        assert re.search(
            r"<span>refund of £1\.50 by the operator \(CLI or console\), succeeded "
            r"\(re_\w+\): heater broken</span>",
            after,
        ), after
        rest = await http.post(refund, data={"csrf_token": token, "amount": "£1.13"})
        assert rest.headers["location"] == f"{page}?done=refunded&pence=113"
        done = (await http.get(page)).text
        assert "/refund" not in done
        assert {k: facts_of(done)[k] for k in ("Refunded", "Refundable", "Disputed")} == {
            "Refunded": "£2.63",
            "Refundable": "£0.00",
            "Disputed": "no",
        }
        nothing = await http.post(refund, data={"csrf_token": token, "amount": ""})
        assert nothing.status_code == 409
        assert (
            "nothing can be refunded for this session: it paid £2.63 and £2.63 of it is "
            "refunded already"
        ) in nothing.text
        # The customer is told of each refund, as by `sessions refund`.
        told = await mailbox.wait_for("refund", count=2)
        assert [mail.recipients for mail in told] == [["ada@example.com"]] * 2
    assert await sql.fetchval(
        "select refunded_pence from pod_sessions where id = $1", session_id
    ) == (263)


async def test_refunded_and_disputed_sessions_are_filtered_and_told_with_the_net_money(
    console_app: FastAPI,
    pod1: int,
    stripe_client: stripe.StripeClient,
    sql: asyncpg.Connection,
    db: PostgresDatabase,
) -> None:
    async with running(console_app) as http:
        await signed_in(http)
        refunded = await ended_and_paid(http, stripe_client, sql)
        disputed = await ended_and_paid(http, stripe_client, sql)
        page = f"/admin/sessions/{refunded}"
        token = csrf_in((await http.get(page)).text)
        made = await http.post(f"{page}/refund", data={"csrf_token": token, "amount": "1.00"})
        assert made.status_code == 303
        outcome = await db.record_dispute(
            disputed, dispute_id="dp_1", event_id="evt_dispute_1", event_type="x"
        )
        assert outcome == "recorded"

        def listed(page: str) -> list[str]:
            return re.findall(r'<a href="/admin/sessions/([0-9a-f-]+)">', page)

        assert listed((await http.get("/admin/sessions?show=refunded")).text) == [str(refunded)]
        assert listed((await http.get("/admin/sessions?show=disputed")).text) == [str(disputed)]
        every = (await http.get("/admin/sessions")).text
        assert "<td>succeeded, £1.00 refunded</td>" in every
        assert "<td>succeeded, disputed</td>" in every
        story = (await http.get(f"/admin/sessions/{disputed}")).text
        assert (
            "<span>disputed by the customer with their bank (dp_1): answer it in "
            "Stripe&#39;s dashboard</span>"
        ) in story

        money = (await http.get("/admin/money")).text
    assert re.search(
        r'<tr data-period="today">\s*<th scope="row">Today</th>\s*<td>2</td>\s*<td>21</td>\s*'
        r'<td class="admin-money" data-taken>£5.26</td>\s*'
        r'<td class="admin-money" data-refunded>£1.00</td>\s*'
        r'<td class="admin-money" data-net>£4.26</td>\s*'
        r'<td class="admin-money" data-owed>£0.00</td>',
        money,
    ), money
