"""Exactly once under retries, races, faults and two replicas.

Each scenario drives two real service processes over HTTP, concurrently, and checks the
end state in the database, in localstripe (PaymentIntents per customer) and in the mail.
"""

import asyncio
import time
from collections import Counter
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from svc.utils import compute_cost_pence
from tests.reliability.conftest import Cluster, save_card, setup_succeeded
from tests.support.booking import SavedCard, confirm_booking
from tests.support.settings import OPERATOR
from tests.support.stripe_helpers import payment_intents_of

SETTLED = ("succeeded", "failed", "requires_action", "not_charged")


async def deliver(http: httpx.AsyncClient, url: str, card: SavedCard, **kw: Any) -> httpx.Response:
    body, headers = setup_succeeded(card, **kw)
    return await http.post(f"{url}/webhook/stripe", content=body, headers=headers)


async def open_session(
    cluster: Cluster, http: httpx.AsyncClient, pod: str, email: str
) -> tuple[SavedCard, UUID]:
    card = await save_card(cluster, http, pod=pod, email=email)
    booked = await confirm_booking(http, card, base_url=cluster.url(1))
    return card, UUID(booked["session_id"])


async def started_ago(sql: asyncpg.Connection, session_id: UUID, seconds: int) -> None:
    await sql.execute(
        "update pod_sessions set start_time = now() - make_interval(secs => $2) where id = $1",
        session_id,
        seconds,
    )


async def charges_of(cluster: Cluster, customer_id: str) -> list[dict[str, Any]]:
    return [
        pi
        for pi in await payment_intents_of(cluster.stripe, customer_id)
        if pi["status"] == "succeeded"
    ]


async def quiet(seconds: float = 1.5) -> None:
    """Time for a second, wrong e-mail or charge to show up if one were coming."""
    await asyncio.sleep(seconds)


async def test_1_same_event_twenty_times_at_once(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, report: Any
) -> None:
    card = await save_card(fresh, http, pod="pod0", email="ada@example.com")
    body, headers = setup_succeeded(card)
    responses = await asyncio.gather(
        *(
            http.post(f"{fresh.url(i)}/webhook/stripe", content=body, headers=headers)
            for i in range(20)
        )
    )
    assert [r.status_code for r in responses] == [200] * 20
    answers = Counter(r.json()["status"] for r in responses)
    assert set(answers) <= {"success", "duplicate"} and answers["success"] >= 1
    assert await sql.fetchval("select count(*) from pod_sessions") == 1
    await fresh.mailbox.wait_for("access_code")
    await quiet()
    assert len(fresh.mailbox.messages("access_code")) == 1
    report(
        f"1. same event x20 at once over 2 replicas: 1 session, 1 access-code e-mail, "
        f"answers {dict(answers)}, no 5xx"
    )


async def test_2_webhook_and_confirm_booking_at_the_same_instant(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, report: Any
) -> None:
    for round_, pod in enumerate(("pod1", "pod2", "pod3", "pod4", "pod5")):
        card = await save_card(fresh, http, pod=pod, email=f"bo{round_}@example.com")
        webhook, confirm = await asyncio.gather(
            deliver(http, fresh.url(round_), card),
            http.post(
                f"{fresh.url(round_ + 1)}/api/confirm-booking",
                json={
                    "setup_intent_id": card.setup_intent["id"],
                    "client_secret": card.client_secret,
                },
            ),
        )
        assert (webhook.status_code, webhook.json()) == (200, {"status": "success"})
        assert confirm.status_code == 200, confirm.text
        ids = await sql.fetch(
            "select id from pod_sessions where setup_intent_id = $1", card.setup_intent["id"]
        )
        assert [str(row["id"]) for row in ids] == [confirm.json()["session_id"]]
    await fresh.mailbox.wait_for("access_code", count=5)
    await quiet()
    assert len(fresh.mailbox.messages("access_code")) == 5
    report(
        "2. webhook and confirm-booking at the same instant, 5 rounds: 1 session each, "
        "both callers on the same session, 1 e-mail each"
    )


async def test_3_thirty_customers_race_for_one_free_pod(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, report: Any
) -> None:
    cards = [
        await save_card(fresh, http, pod="pod2", email=f"c{i}@example.com", replica=i)
        for i in range(30)
    ]
    responses = await asyncio.gather(
        *(deliver(http, fresh.url(i), card) for i, card in enumerate(cards))
    )
    assert {(r.status_code, r.json()["status"]) for r in responses} == {(200, "success")}
    rows = await sql.fetch("select id, user_email from pod_sessions where end_time is null")
    assert len(rows) == 1
    winner = rows[0]["user_email"]
    sorry = await fresh.mailbox.wait_for("pod_unavailable", count=29)
    await quiet()
    assert len(fresh.mailbox.messages("pod_unavailable")) == 29
    assert sorted(m.recipients[0] for m in sorry) == sorted(
        card.email for card in cards if card.email != winner
    )
    for card in cards:
        assert await payment_intents_of(fresh.stripe, card.customer_id) == []
    # Every loser's refusal is final: Stripe's retries, once the pod is free, start nothing.
    decided = await sql.fetch(
        "select o.outcome, s.user_email from setup_intent_outcomes o "
        "left join pod_sessions s on s.id = o.session_id"
    )
    assert sorted((row["outcome"], row["user_email"]) for row in decided) == sorted(
        [("started", winner)] + [("pod_unavailable", None)] * 29
    )
    await http.post(f"{fresh.url(0)}/api/end-session", json={"sessionId": str(rows[0]["id"])})
    # Events delivered late for the first time (as in issue 15): the winner's finds its
    # session ("success"), every loser's the refusal ("duplicate").
    late = await asyncio.gather(
        *(deliver(http, fresh.url(i), card) for i, card in enumerate(cards))
    )
    assert sorted(r.json()["status"] for r in late) == ["duplicate"] * 29 + ["success"]
    assert await sql.fetchval("select count(*) from pod_sessions where end_time is null") == 0
    await quiet()
    assert len(fresh.mailbox.messages("pod_unavailable")) == 29
    assert len(fresh.mailbox.messages("access_code")) == 1
    report(
        "3. 30 customers, one free pod, events at once: 1 open session, "
        "29 'pod unavailable' e-mails, 0 charges; 30 late events after it ends start nothing"
    )


async def test_4_end_session_twenty_times_at_once(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, report: Any
) -> None:
    card, session_id = await open_session(fresh, http, "pod3", "di@example.com")
    await started_ago(sql, session_id, 630)
    responses = await asyncio.gather(
        *(
            http.post(f"{fresh.url(i)}/api/end-session", json={"sessionId": str(session_id)})
            for i in range(20)
        )
    )
    assert {r.status_code for r in responses} == {200}
    results = {(r.json()["final_cost_pence"], r.json()["payment_status"]) for r in responses}
    assert results == {(263, "succeeded")}
    assert len(await payment_intents_of(fresh.stripe, card.customer_id)) == 1
    await fresh.mailbox.wait_for("receipt")
    await quiet()
    assert len(fresh.mailbox.messages("receipt")) == 1
    report(
        "4. end-session x20 at once over 2 replicas: 1 PaymentIntent, every answer 263p, "
        "1 receipt"
    )


async def test_5_stripe_down_at_the_end(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, report: Any
) -> None:
    card, session_id = await open_session(fresh, http, "pod4", "eve@example.com")
    await started_ago(sql, session_id, 630)
    fresh.localstripe.stop()
    try:
        down = await http.post(
            f"{fresh.url(0)}/api/end-session", json={"sessionId": str(session_id)}
        )
        assert (down.status_code, down.json()) == (
            503,
            {
                "detail": "The payment provider cannot be reached right now; nothing was charged. "
                "Please try again in a minute."
            },
        )
        # Kept unpaid, its end fixed: the amount of every retry follows from that end.
        row = await sql.fetchrow("select * from pod_sessions where id = $1", session_id)
        assert (row["payment_status"], row["charge_locked_until"]) == ("pending", None)
        assert row["end_time"] is not None
        first_end = row["end_time"]
        await asyncio.sleep(1.5)
    finally:
        fresh.localstripe.start()
    again = await http.post(f"{fresh.url(1)}/api/end-session", json={"sessionId": str(session_id)})
    assert again.status_code == 200
    assert (again.json()["payment_status"], again.json()["final_cost_pence"]) == ("succeeded", 263)
    assert await sql.fetchval("select end_time from pod_sessions where id = $1", session_id) == (
        first_end
    )
    [charge] = await payment_intents_of(fresh.stripe, card.customer_id)
    assert (charge["amount"], charge["status"]) == (263, "succeeded")
    # Every attempt, during the outage and after, asked Stripe with the session's one key:
    # had the first answer only been lost, Stripe would return that charge, not make another.
    keys = [key for method, path, key in fresh.proxy.seen if path == "/v1/payment_intents"]
    assert len(keys) >= 2 and set(keys) == {f"qwip-session-charge-{session_id}"}, keys
    report(
        "5. Stripe down at the end: 503, session kept unpaid; Stripe back: charged once, "
        f"263p from the end fixed by the first call, {len(keys)} attempts with one idempotency key"
    )


async def test_6_smtp_down_during_a_booking(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, report: Any
) -> None:
    fresh.smtp.stop()
    try:
        card = await save_card(fresh, http, pod="pod5", email="fay@example.com")
        response = await deliver(http, fresh.url(0), card)
        assert (response.status_code, response.json()) == (200, {"status": "success"})
        assert await sql.fetchval("select count(*) from pod_sessions") == 1
        await asyncio.sleep(1.5)
        row = await sql.fetchrow("select attempts, sent_at from email_outbox")
        assert row["attempts"] >= 1 and row["sent_at"] is None
    finally:
        fresh.smtp.start()
    started = time.monotonic()
    [mail] = await fresh.mailbox.wait_for("access_code", timeout=30)
    waited = time.monotonic() - started
    await quiet()
    assert len(fresh.mailbox.messages("access_code")) == 1
    assert mail.recipients == ["fay@example.com"]
    report(
        f"6. SMTP down during a booking: session kept; SMTP back: the access code arrived "
        f"once, {waited:.1f} s later"
    )


async def open_sessions(
    cluster: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, count: int, name: str
) -> list[tuple[SavedCard, UUID]]:
    """`count` sessions on pods of their own."""
    await sql.executemany(
        "insert into pods (name, address, price) values ($1, '1 Crash Lane', 0.25)",
        [(f"{name}{i}",) for i in range(count)],
    )
    opened: list[tuple[SavedCard, UUID]] = []
    for first in range(0, count, 10):
        opened += await asyncio.gather(
            *(
                open_session(cluster, http, f"{name}{i}", f"{name}{i}@example.com")
                for i in range(first, min(first + 10, count))
            )
        )
    return opened


async def test_7_a_replica_killed_in_a_burst(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, report: Any
) -> None:
    """Forty ends at once over two replicas, and bookings, while replica 0 is killed after
    Stripe carried out one of its charges but before its answer came back."""
    ending = await open_sessions(fresh, http, sql, 40, "end")
    booking = [
        await save_card(fresh, http, pod=f"pod{i}", email=f"new{i}@example.com", replica=1)
        for i in range(4)
    ]
    # The end of session i goes to replica i % 2, which takes its charge lease: the charges
    # of the even sessions are the killed replica's.
    killed = {str(sid) for i, (_, sid) in enumerate(ending) if i % 2 == 0}

    def charge_of_killed(entry: dict[str, Any]) -> bool:
        return bool(
            entry["path"] == "/v1/payment_intents" and entry["metadata"].get("session_id") in killed
        )

    await sql.execute(
        "update pod_sessions set start_time = now() - interval '600 s' where id = any($1)",
        [sid for _, sid in ending],
    )

    async def end(i: int, session_id: UUID) -> httpx.Response:
        return await http.post(
            f"{fresh.url(i)}/api/end-session", json={"sessionId": str(session_id)}
        )

    async def book(i: int, card: SavedCard, event_id: str) -> httpx.Response:
        return await deliver(http, fresh.url(i), card, event_id=event_id)

    # Stripe's events are late (here: never), so what settles the killed replica's charges
    # is a retry with their idempotency keys; and Stripe holds its answers back for a
    # while after charging, so the kill lands after a charge and before its answer.
    fresh.localstripe.register_webhooks(reachable=False)
    await fresh.localstripe.hold_answers(1500, path="^/v1/payment_intents$")
    try:
        event_ids = [f"evt_burst_{i}" for i in range(len(booking))]
        burst = [end(i, sid) for i, (_, sid) in enumerate(ending)] + [
            book(i, card, event_ids[i]) for i, card in enumerate(booking)
        ]
        tasks = [asyncio.ensure_future(call) for call in burst]
        deadline = time.monotonic() + 20
        while not [
            entry
            for entry in await fresh.localstripe.requests()
            if charge_of_killed(entry) and entry.get("status") == 200
        ]:
            assert time.monotonic() < deadline, "no charge of replica 0 reached Stripe"
            await asyncio.sleep(0.01)
        await asyncio.to_thread(fresh.replicas[0].kill)
        killed_at = time.time()
        await fresh.localstripe.hold_answers(0)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [
            i for i, r in enumerate(results) if isinstance(r, Exception) or r.status_code >= 500
        ]

        # What Stripe and the customers do: try again, here on the surviving replica. An
        # end whose lease the killed replica holds waits until the lease runs out.
        async def retry(i: int) -> httpx.Response:
            if i < len(ending):
                return await end(1, ending[i][1])
            j = i - len(ending)
            return await book(1, booking[j], event_ids[j])

        retried = await asyncio.gather(*(retry(i) for i in failed))
        assert [r.status_code for r in retried] == [200] * len(failed), [r.text for r in retried]
        await asyncio.to_thread(fresh.replicas[0].start)

        deadline = time.monotonic() + 45
        while await sql.fetchval(
            "select count(*) from pod_sessions where payment_status = 'pending'"
        ):
            assert time.monotonic() < deadline, "sessions still unsettled after 45 s"
            await asyncio.sleep(0.5)
    finally:
        await fresh.localstripe.hold_answers(0)
        fresh.localstripe.register_webhooks()

    stuck = await sql.fetch(
        "select name from pods p where in_use <> exists "
        "(select 1 from pod_sessions s where s.pod_id = p.id and s.end_time is null)"
    )
    assert stuck == []
    for card, session_id in ending:
        row = await sql.fetchrow("select * from pod_sessions where id = $1", session_id)
        # ten minutes, or a little more where the end reached the killed replica too late
        # and was fixed by the retry
        cost = compute_cost_pence(
            start=row["start_time"],
            end=row["end_time"],
            price_per_minute=Decimal("0.25"),
            free_minutes=row["free_minutes"],
        )
        assert (row["payment_status"], row["cost_pence"]) == ("succeeded", cost)
        charges = await charges_of(fresh, card.customer_id)
        assert [charge["amount"] for charge in charges] == [cost], card.email
    # The stand-in's own log: charges that reached Stripe from the killed replica before it
    # died were sent again, with the same key, after it died, and answered with the first
    # PaymentIntent.
    log = await fresh.localstripe.requests()
    reached = {
        e["metadata"]["session_id"]
        for e in log
        if charge_of_killed(e) and e["at"] < killed_at and e.get("status") == 200
    }
    replayed = {
        e["metadata"]["session_id"]
        for e in log
        if charge_of_killed(e) and e["at"] > killed_at and e["replayed"]
    } & reached
    assert replayed, f"no charge of the killed replica was replayed: {sorted(reached)}"

    # every receipt, once the killed replica's leases on its charges and e-mails ran out
    for card, _ in ending:
        await fresh.mailbox.wait_for("receipt", to=card.email, timeout=30)
    for card in booking:
        sessions = await sql.fetch(
            "select id, end_time from pod_sessions where setup_intent_id = $1",
            card.setup_intent["id"],
        )
        assert len(sessions) == 1 and sessions[0]["end_time"] is None
        # a message leased by the killed replica waits out its lease, then goes
        await fresh.mailbox.wait_for("access_code", to=card.email, timeout=30)
        assert await charges_of(fresh, card.customer_id) == []
    await quiet()
    receipts = Counter(m.recipients[0] for m in fresh.mailbox.messages("receipt"))
    assert set(receipts.values()) == {1}
    report(
        f"7. replica SIGKILLed inside the charge window of a burst of 40 ends and 4 bookings "
        f"({len(failed)} calls retried): {len(reached)} charges reached Stripe from it, "
        f"{len(replayed)} replayed by the survivor under the same key; one charge and one "
        "receipt each, no pod stuck, no booking lost"
    )


async def test_8_payment_event_before_the_end_is_recorded(
    fresh: Cluster, http: httpx.AsyncClient, sql: asyncpg.Connection, report: Any
) -> None:
    card, session_id = await open_session(fresh, http, "pod6", "gus@example.com")
    await started_ago(sql, session_id, 630)
    # Stripe's answer to the charge is held back; its webhook (sent 1 s after) overtakes it.
    fresh.proxy.delay_after[("POST", "/v1/payment_intents")] = 3.0
    response = await http.post(
        f"{fresh.url(0)}/api/end-session", json={"sessionId": str(session_id)}
    )
    answered_at = await sql.fetchval("select now()")
    assert response.status_code == 200
    assert (response.json()["payment_status"], response.json()["final_cost_pence"]) == (
        "succeeded",
        263,
    )
    [charge] = await payment_intents_of(fresh.stripe, card.customer_id)
    row = await sql.fetchrow("select * from pod_sessions where id = $1", session_id)
    assert (row["payment_status"], row["payment_intent_id"], row["cost_pence"]) == (
        "succeeded",
        charge["id"],
        263,
    )
    event_at = await sql.fetchval(
        "select min(processed_at) from stripe_events where type = 'payment_intent.succeeded'"
    )
    assert event_at is not None and event_at < answered_at
    await fresh.mailbox.wait_for("receipt")
    await quiet()
    assert len(fresh.mailbox.messages("receipt")) == 1
    assert fresh.mailbox.messages("payment_failed_operator", to=OPERATOR) == []
    report(
        "8. payment_intent.succeeded recorded before the end-session's own record: "
        "final state succeeded, 1 charge, 1 receipt"
    )
