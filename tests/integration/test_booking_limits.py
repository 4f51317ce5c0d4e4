"""The booking endpoint is no card-testing tool: POST from our own pages only, a valid
e-mail, limits per address and per e-mail kept in Postgres, reuse of the browser's own
unconfirmed SetupIntent, and Cloudflare Turnstile when it is on. In process, against
Postgres, localstripe and a local stand-in of Turnstile's siteverify."""

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import stripe
from aiohttp import web
from fastapi import FastAPI

from svc.database_accessor import Database, PostgresDatabase
from svc.main import create_app
from svc.models.records import NewPod
from tests.conftest import free_port, supabase_over
from tests.integration.conftest import SettingsFactory
from tests.support.stripe_helpers import confirm_card

URL = "/api/create-setup-intent"
ADA = "ada@example.com"


@pytest.fixture
async def pods(db: PostgresDatabase) -> dict[str, int]:
    pod1 = await db.insert_pod(
        NewPod(name="pod1", address="1 Demo Street", price=Decimal("0.25"), currency="gbp")
    )
    pod2 = await db.insert_pod(
        NewPod(name="pod2", address="2 Side Road", price=Decimal("0.10"), currency="gbp")
    )
    return {"pod1": pod1.id, "pod2": pod2.id}


@asynccontextmanager
async def serving(app: FastAPI, *, peer: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, reached from `peer` (the address the connection comes from)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def customers_at(localstripe_url: str) -> int:
    async with httpx.AsyncClient(auth=("sk_test_qwip", "")) as http:
        answer = await http.get(f"{localstripe_url}/v1/customers", params={"limit": 1})
    count: int = answer.json()["total_count"]
    return count


# The POST, its origin check, and the GET of local mode


async def test_post_creates_a_setup_intent_and_is_not_cached(
    make_settings: SettingsFactory, stripe_client: stripe.StripeClient, pods: dict[str, int]
) -> None:
    async with serving(create_app(make_settings(APP_ENV="test"))) as http:
        for body in ({"podName": "pod2", "email": ADA}, {"pod_id": pods["pod2"], "email": ADA}):
            response = await http.post(URL, json=body, headers={"Origin": "http://qwip.test"})
            assert response.status_code == 200, response.text
            assert response.headers["cache-control"] == "no-store"
            created = response.json()
            assert set(created) == {"client_secret", "customer_id", "setup_intent_id"}
            intent = await stripe_client.v1.setup_intents.retrieve_async(
                created["setup_intent_id"], params={"expand": ["customer"]}
            )
            assert intent.metadata.to_dict() == {"pod_id": str(pods["pod2"]), "pod_name": "pod2"}
            assert (intent.customer.id, intent.customer.email, intent.usage) == (
                created["customer_id"],
                ADA,
                "off_session",
            )


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://qwip.test.evil.example", "null"]
)
async def test_post_from_a_foreign_origin_is_403_and_creates_nothing(
    make_settings: SettingsFactory, localstripe_url: str, pods: dict[str, int], origin: str
) -> None:
    before = await customers_at(localstripe_url)
    async with serving(create_app(make_settings(APP_ENV="test"))) as http:
        response = await http.post(
            URL, json={"podName": "pod1", "email": ADA}, headers={"Origin": origin}
        )
    assert (response.status_code, response.json()) == (
        403,
        {
            "detail": "Cards can be saved only from this service's own booking page; the page "
            f"at {origin!r} is not one of them."
        },
    )
    assert await customers_at(localstripe_url) == before


async def test_post_from_a_cors_origin_is_allowed(
    make_settings: SettingsFactory, pods: dict[str, int]
) -> None:
    settings = make_settings(CORS_ORIGINS="https://book.qwip.test")
    async with serving(create_app(settings)) as http:
        response = await http.post(
            URL,
            json={"podName": "pod1", "email": ADA},
            headers={"Origin": "https://book.qwip.test"},
        )
    assert response.status_code == 200, response.text


async def test_get_is_405_outside_local_mode_and_served_in_local_mode(
    make_settings: SettingsFactory, localstripe_url: str, pods: dict[str, int]
) -> None:
    before = await customers_at(localstripe_url)
    async with serving(create_app(make_settings(APP_ENV="test"))) as http:
        for path in (URL, "/api/create-payment-intent"):
            response = await http.get(f"{path}?podName=pod1&email={ADA}")
            assert (response.status_code, response.json()) == (
                405,
                {
                    "detail": "Start a card setup with POST /api/create-setup-intent and a JSON "
                    'body {"podName": ..., "email": ...}; this GET is served only in local mode.'
                },
            )
            assert response.headers["allow"] == "POST"
    assert await customers_at(localstripe_url) == before
    async with serving(create_app(make_settings(APP_ENV="local"))) as http:
        response = await http.get(f"{URL}?podName=pod1&email={ADA}")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert await customers_at(localstripe_url) == before + 1


@pytest.mark.parametrize(
    ("email", "detail"),
    [
        (
            "y@example.com\nBcc: z@evil.example",
            "email: 'y@example.com\\nBcc: z@evil.example' is not a valid e-mail address. The "
            "part after the @-sign contains invalid characters: ':', '@', SPACE, U+000A.",
        ),
        (
            "not-an-email",
            "email: 'not-an-email' is not a valid e-mail address. An email address must have "
            "an @-sign.",
        ),
        (
            "ada@localhost",
            "email: 'ada@localhost' is not a valid e-mail address. The part after the @-sign "
            "is not valid. It should have a period.",
        ),
    ],
)
async def test_an_invalid_email_is_422_before_stripe_is_called(
    make_settings: SettingsFactory,
    localstripe_url: str,
    sql: asyncpg.Connection,
    pods: dict[str, int],
    email: str,
    detail: str,
) -> None:
    before = await customers_at(localstripe_url)
    async with serving(create_app(make_settings(APP_ENV="test"))) as http:
        response = await http.post(URL, json={"podName": "pod1", "email": email})
    assert (response.status_code, response.json()) == (422, {"detail": detail})
    assert await customers_at(localstripe_url) == before
    assert await sql.fetchval("select count(*) from booking_attempts") == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"email": ADA}, "Give the pod as podName (or pod_name) or podId (or pod_id)."),
        ({"podName": "pod1"}, "email (body): Field required"),
        ({"podName": "ghost", "email": ADA}, "No pod named 'ghost'."),
    ],
)
async def test_post_refuses_a_missing_pod_or_email(
    make_settings: SettingsFactory, pods: dict[str, int], body: dict[str, Any], detail: str
) -> None:
    async with serving(create_app(make_settings(APP_ENV="test"))) as http:
        response = await http.post(URL, json=body)
    status = 404 if "ghost" in detail else 422
    assert (response.status_code, response.json()) == (status, {"detail": detail})


# The limits


async def test_the_limit_per_address_is_429_with_retry_after(
    make_settings: SettingsFactory, localstripe_url: str, pods: dict[str, int]
) -> None:
    settings = make_settings(BOOKING_RATE_LIMIT_PER_IP="3", BOOKING_RATE_LIMIT_PER_EMAIL="50")
    async with serving(create_app(settings)) as http:
        for i in range(3):
            ok = await http.post(URL, json={"podName": "pod1", "email": f"c{i}@example.com"})
            assert ok.status_code == 200, ok.text
        before = await customers_at(localstripe_url)
        refused = await http.post(URL, json={"podName": "pod1", "email": "c9@example.com"})
    assert (refused.status_code, refused.json()) == (
        429,
        {
            "detail": "Too many card setups from this connection or for this e-mail address in "
            "the last few minutes. Please try again in 10 minutes."
        },
    )
    assert 590 <= int(refused.headers["retry-after"]) <= 600
    assert await customers_at(localstripe_url) == before
    # another address is not held back
    async with serving(create_app(settings), peer="198.51.100.7") as http:
        other = await http.post(URL, json={"podName": "pod1", "email": "c9@example.com"})
    assert other.status_code == 200, other.text


async def test_the_limit_per_email_ignores_case(
    make_settings: SettingsFactory, pods: dict[str, int]
) -> None:
    settings = make_settings(BOOKING_RATE_LIMIT_PER_IP="50", BOOKING_RATE_LIMIT_PER_EMAIL="2")
    async with serving(create_app(settings)) as http:
        for email in ("Ada@Example.com", "ada@example.com"):
            ok = await http.post(URL, json={"podName": "pod1", "email": email})
            assert ok.status_code == 200, ok.text
        refused = await http.post(URL, json={"podName": "pod2", "email": "ADA@EXAMPLE.COM"})
        other = await http.post(URL, json={"podName": "pod1", "email": "bo@example.com"})
    assert refused.status_code == 429
    assert other.status_code == 200


@pytest.mark.parametrize(
    ("peer", "counted_as"),
    [
        # a peer in FORWARDED_ALLOW_IPS: its X-Forwarded-For names the client
        ("127.0.0.1", "203.0.113.9"),
        # any other peer: its X-Forwarded-For is ignored, the peer itself counts
        ("198.51.100.20", "198.51.100.20"),
    ],
)
async def test_x_forwarded_for_counts_only_from_an_allowed_peer(
    make_settings: SettingsFactory,
    sql: asyncpg.Connection,
    pods: dict[str, int],
    peer: str,
    counted_as: str,
) -> None:
    settings = make_settings(BOOKING_RATE_LIMIT_PER_IP="2")
    async with serving(create_app(settings), peer=peer) as http:
        statuses = [
            (
                await http.post(
                    URL,
                    json={"podName": "pod1", "email": f"f{i}@example.com"},
                    # each request claims another client: only a trusted peer is believed
                    headers={"X-Forwarded-For": f"203.0.113.{9 + i}"},
                )
            ).status_code
            for i in range(3)
        ]
    keys = await sql.fetch("select key from booking_attempts where key like 'ip:%' order by id")
    if peer == "127.0.0.1":
        assert statuses == [200, 200, 200]
        assert keys[0]["key"] == f"ip:{counted_as}"
    else:
        assert statuses == [200, 200, 429]
        assert {row["key"] for row in keys} == {f"ip:{counted_as}"}


@pytest.mark.parametrize("backend", ["postgres", "supabase"])
async def test_take_booking_slot_counts_and_records_all_or_nothing(
    db: PostgresDatabase, clean_database: str, backend: str
) -> None:
    async def run(database: Database) -> list[int]:
        limits = {"ip:a": 2, "email:x": 3}
        waits = [await database.take_booking_slot(limits, window_seconds=600) for _ in range(3)]
        # email:x had 2 of 3: one more under another address, then it is full too
        waits.append(
            await database.take_booking_slot({"ip:b": 5, "email:x": 3}, window_seconds=600)
        )
        waits.append(
            await database.take_booking_slot({"ip:b": 5, "email:x": 3}, window_seconds=600)
        )
        return waits

    if backend == "postgres":
        waits = await run(db)
    else:
        async with supabase_over(clean_database) as (supabase, _):
            waits = await run(supabase)
    assert waits[:2] == [0, 0] and waits[3] == 0
    assert 599 <= waits[2] <= 600 and 599 <= waits[4] <= 600
    # a refused call recorded nothing
    assert await db._fetchval("select count(*) from booking_attempts") == 6  # noqa: SLF001


async def test_a_slot_frees_when_the_oldest_attempt_leaves_the_window(
    db: PostgresDatabase, sql: asyncpg.Connection
) -> None:
    await sql.execute(
        "insert into booking_attempts (key, created_at) values "
        "('ip:a', now() - interval '500 seconds'), ('ip:a', now() - interval '100 seconds')"
    )
    assert 99 <= await db.take_booking_slot({"ip:a": 2}, window_seconds=600) <= 100
    assert await db.take_booking_slot({"ip:a": 2}, window_seconds=400) == 0


async def test_the_wait_never_exceeds_the_window(
    db: PostgresDatabase, sql: asyncpg.Connection
) -> None:
    # A caller that began before another, then waited on its lock, reads that one's row:
    # stamped with a later transaction time than its own. A slot still frees within one
    # window, so Retry-After says at most the window (not 601 s, "11 minutes").
    await sql.execute(
        "insert into booking_attempts (key, created_at) values ('ip:a', now() + interval '1 s')"
    )
    assert await db.take_booking_slot({"ip:a": 1}, window_seconds=600) == 600


# Reuse of the browser's own unconfirmed SetupIntent


async def test_an_unconfirmed_setup_intent_is_reused_without_counting(
    make_settings: SettingsFactory,
    stripe_client: stripe.StripeClient,
    localstripe_url: str,
    sql: asyncpg.Connection,
    pods: dict[str, int],
) -> None:
    settings = make_settings(BOOKING_RATE_LIMIT_PER_IP="2")
    async with serving(create_app(settings)) as http:
        first = (await http.post(URL, json={"podName": "pod1", "email": ADA})).json()
        before = await customers_at(localstripe_url)
        mine = {"setupIntentId": first["setup_intent_id"], "clientSecret": first["client_secret"]}
        again = await http.post(URL, json={"podName": "pod1", "email": "ADA@example.com", **mine})
        assert again.status_code == 200, again.text
        assert again.json() == first
        assert again.headers["cache-control"] == "no-store"
        assert await customers_at(localstripe_url) == before
        assert (
            await sql.fetchval("select count(*) from booking_attempts where key like 'ip:%'") == 1
        )

        # not reused: another pod, another e-mail, a wrong secret: each a new one, counted
        other_pod = await http.post(URL, json={"podName": "pod2", "email": ADA, **mine})
        assert other_pod.status_code == 200
        assert other_pod.json()["setup_intent_id"] != first["setup_intent_id"]
        wrong = {**mine, "clientSecret": first["client_secret"] + "x"}
        limited = await http.post(URL, json={"podName": "pod1", "email": ADA, **wrong})
        assert limited.status_code == 429  # a third new one from this address

        # once confirmed it is never handed out again
        await confirm_card(stripe_client, first["setup_intent_id"], email=None)
        after = await http.post(URL, json={"podName": "pod1", "email": ADA, **mine})
        assert after.status_code == 429


# Cloudflare Turnstile, against a local stand-in of its siteverify endpoint


@dataclass
class Siteverify:
    url: str
    passes: set[str]
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def siteverify() -> Iterator[Siteverify]:
    """Answers as Cloudflare's siteverify does: success for a known token, else the codes."""
    import asyncio
    import threading

    port = free_port()
    stand_in = Siteverify(f"http://127.0.0.1:{port}/turnstile/v0/siteverify", {"tok-good"})

    async def verify(request: web.Request) -> web.Response:
        form = dict(await request.post())
        stand_in.seen.append({k: str(v) for k, v in form.items()})
        if form.get("secret") != "0x-secret":
            return web.json_response({"success": False, "error-codes": ["invalid-input-secret"]})
        if form.get("response") in stand_in.passes:
            stand_in.passes.discard(str(form["response"]))  # single-use, like Cloudflare's
            return web.json_response({"success": True, "error-codes": [], "hostname": "qwip.test"})
        return web.json_response({"success": False, "error-codes": ["invalid-input-response"]})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/turnstile/v0/siteverify", verify)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield stand_in
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


async def test_turnstile_is_verified_before_stripe_is_called(
    make_settings: SettingsFactory,
    localstripe_url: str,
    siteverify: Siteverify,
    pods: dict[str, int],
) -> None:
    settings = make_settings(
        TURNSTILE_SITE_KEY="0x-site",
        TURNSTILE_SECRET_KEY="0x-secret",
        TURNSTILE_VERIFY_URL=siteverify.url,
    )
    before = await customers_at(localstripe_url)
    async with serving(create_app(settings), peer="127.0.0.1") as http:
        missing = await http.post(URL, json={"podName": "pod1", "email": ADA})
        wrong = await http.post(
            URL, json={"podName": "pod1", "email": ADA, "turnstileToken": "tok-bad"}
        )
        assert await customers_at(localstripe_url) == before
        good = await http.post(
            URL,
            json={"podName": "pod1", "email": ADA, "turnstileToken": "tok-good"},
            headers={"X-Forwarded-For": "203.0.113.50"},
        )
        replayed = await http.post(
            URL, json={"podName": "pod1", "email": ADA, "turnstileToken": "tok-good"}
        )
    assert (missing.status_code, missing.json()) == (
        403,
        {
            "detail": "Complete the check that you are not a robot (the box above the button), "
            "then try again."
        },
    )
    refused = {
        "detail": "The check that you are not a robot did not pass or has expired; complete it "
        "again, then try again."
    }
    assert (wrong.status_code, wrong.json()) == (403, refused)
    assert (replayed.status_code, replayed.json()) == (403, refused)
    assert good.status_code == 200, good.text
    assert await customers_at(localstripe_url) == before + 1
    assert siteverify.seen[1] == {
        "secret": "0x-secret",
        "response": "tok-good",
        "remoteip": "203.0.113.50",
    }


async def test_turnstile_down_is_503_and_creates_nothing(
    make_settings: SettingsFactory, localstripe_url: str, pods: dict[str, int]
) -> None:
    settings = make_settings(
        TURNSTILE_SITE_KEY="0x-site",
        TURNSTILE_SECRET_KEY="0x-secret",
        TURNSTILE_VERIFY_URL=f"http://127.0.0.1:{free_port()}/siteverify",
    )
    before = await customers_at(localstripe_url)
    async with serving(create_app(settings)) as http:
        response = await http.post(
            URL, json={"podName": "pod1", "email": ADA, "turnstileToken": "tok"}
        )
    assert (response.status_code, response.json()) == (
        503,
        {
            "detail": "The check that you are not a robot cannot be verified right now; nothing "
            "was saved. Please try again in a minute."
        },
    )
    assert await customers_at(localstripe_url) == before


async def test_the_booking_page_shows_turnstile_only_when_it_is_on(
    make_settings: SettingsFactory, pods: dict[str, int]
) -> None:
    on = make_settings(TURNSTILE_SITE_KEY="0x-site", TURNSTILE_SECRET_KEY="0x-secret")
    async with serving(create_app(on)) as http:
        page = await http.get("/book?podName=pod1")
    csp = dict(part.split(" ", 1) for part in page.headers["content-security-policy"].split("; "))
    assert csp["script-src"].endswith(" https://challenges.cloudflare.com")
    assert csp["frame-src"].endswith(" https://challenges.cloudflare.com")
    assert "challenges.cloudflare.com" not in csp["connect-src"]
    assert 'data-turnstile-site-key="0x-site"' in page.text
    assert (
        '<script defer src="https://challenges.cloudflare.com/turnstile/v0/api.js?render=explicit">'
        in page.text
    )
    assert '<div id="turnstile"' in page.text
    async with serving(create_app(make_settings())) as http:
        page = await http.get("/book?podName=pod1")
    assert "cloudflare" not in page.headers["content-security-policy"] + page.text
