"""A session's timeline for the operator, built from its records: every step, in order,
in words."""

from datetime import timedelta

from svc.models.operator import SessionDetails, SessionEmail, SessionRefund
from svc.timeline import build_timeline
from svc.types import AccessCodeStatus, PaymentStatus
from tests.unit.test_email_manager import START, session


def details(**changes: object) -> SessionDetails:
    code_set_at = changes.pop("code_set_at", None)
    settled_at = changes.pop("settled_at", START + timedelta(minutes=10, seconds=31))
    reason = changes.pop("no_charge_reason", None)
    facts = {
        name: changes.pop(name)
        for name in (
            "refunded_pence",
            "disputed_at",
            "dispute_id",
            "reminded_at",
            "backup_access_code_id",
            "backup_code_at",
            "first_unlocked_at",
            "unlock_count",
        )
        if name in changes
    }
    return SessionDetails(session(**changes), code_set_at, settled_at, reason, **facts)  # type: ignore[arg-type]


def sent(kind: str, minutes: float, **changes: object) -> SessionEmail:
    values: dict[str, object] = dict(
        kind=kind,
        recipient="ada@example.com",
        queued_at=START + timedelta(minutes=minutes),
        sent_at=START + timedelta(minutes=minutes, seconds=1),
        dead_at=None,
        attempts=1,
        last_error=None,
    )
    values.update(changes)
    return SessionEmail(**values)  # type: ignore[arg-type]


def lines(events: list) -> list[tuple[object, str, str]]:  # type: ignore[type-arg]
    return [(event.at, event.kind, event.text) for event in events]


def test_a_held_session_on_a_lock_captured_at_its_end_tells_every_step_in_order() -> None:
    story = build_timeline(
        details(
            seam_device_id="august_device_1",
            access_code_status=AccessCodeStatus.REMOVED,
            code_set_at=START + timedelta(seconds=20),
            hold_payment_intent_id="pi_hold",
            hold_pence=1500,
            captured_pence=263,
            released_pence=1237,
            payment_status=PaymentStatus.SUCCEEDED,
        ),
        [sent("receipt", 10.6), sent("access_code", 0)],
    )
    assert lines(story) == [
        (START, "booked", "booked pod1 by ada@example.com, £0.25 per minute"),
        (START, "hold", "£15.00 held on the card (pi_hold)"),
        (START + timedelta(seconds=1), "email", "e-mail sent: access code to ada@example.com"),
        (START + timedelta(seconds=20), "code_on_lock", "code set on the lock august_device_1"),
        (START + timedelta(minutes=10, seconds=30), "ended", "ended after 10 min 30 s"),
        (
            START + timedelta(minutes=10, seconds=31),
            "payment",
            "£2.63 captured of the £15.00 hold, £12.37 released",
        ),
        (
            START + timedelta(minutes=10, seconds=37),
            "email",
            "e-mail sent: receipt to ada@example.com",
        ),
    ]


def test_a_charge_above_the_hold_says_what_was_captured_and_what_charged() -> None:
    story = build_timeline(
        details(
            cost_pence=1800,
            payment_intent_id="pi_rest",
            hold_payment_intent_id="pi_hold",
            hold_pence=1500,
            captured_pence=1500,
            released_pence=0,
            payment_status=PaymentStatus.SUCCEEDED,
        ),
        [],
    )
    assert (
        story[-1].text == "£15.00 captured of the £15.00 hold, £3.00 charged off-session (pi_rest)"
    )


def test_a_charge_without_hold_a_decline_and_a_waived_session_are_told() -> None:
    charged = build_timeline(
        details(payment_status=PaymentStatus.SUCCEEDED, payment_intent_id="pi_1"), []
    )
    assert charged[-1].text == "£2.63 charged (pi_1)"
    declined = build_timeline(
        details(
            payment_status=PaymentStatus.FAILED,
            payment_error="card_declined: Your card was declined.",
        ),
        [],
    )
    assert declined[-1].text == "£2.63 owed: card_declined: Your card was declined."
    waived = build_timeline(
        details(
            cost_pence=0,
            payment_status=PaymentStatus.NOT_CHARGED,
            hold_pence=1500,
            hold_payment_intent_id="pi_hold",
            no_charge_reason="the heater was broken",
        ),
        [],
    )
    assert [event.text for event in waived[-2:]] == [
        "ended after 10 min 30 s, without charge: the heater was broken",
        "not charged (£0.00); the £15.00 hold released",
    ]


def test_an_open_session_says_how_long_so_far_and_what_the_lock_and_mail_are_waiting_for() -> None:
    story = build_timeline(
        details(
            end_time=None,
            cost_pence=None,
            payment_status=None,
            seam_device_id="august_device_1",
            access_code_status="setting",
            settled_at=None,
        ),
        [
            sent("access_code", 0, sent_at=None, attempts=2, last_error="SMTP down"),
            # Being sent right now: claimed, not failed.
            sent("operator_alert", 0.5, sent_at=None, attempts=1, last_error=None),
        ],
    )
    assert lines(story) == [
        (START, "booked", "booked pod1 by ada@example.com, £0.25 per minute"),
        (
            START,
            "email",
            "e-mail waiting: access code to ada@example.com, 2 attempts: SMTP down",
        ),
        (
            START + timedelta(seconds=30),
            "email",
            "e-mail waiting: operator alert to ada@example.com",
        ),
        (None, "code_on_lock", "code not on the lock yet (setting)"),
        (None, "open", "open for 11 min 00 s so far"),
    ]


def test_a_dead_letter_and_a_lock_that_never_took_the_code_are_told() -> None:
    story = build_timeline(
        details(
            seam_device_id="august_device_1",
            access_code_status=AccessCodeStatus.FAILED,
            cost_pence=0,
            payment_status=PaymentStatus.NOT_CHARGED,
        ),
        [
            sent(
                "lock_failed",
                10.5,
                sent_at=None,
                dead_at=START + timedelta(minutes=20),
                last_error="550 no such user",
            )
        ],
    )
    texts = [event.text for event in story]
    assert "the lock never took the code: not charged" in texts
    assert texts[-1] == "e-mail given up: lock failed to ada@example.com (550 no such user)"


def test_unlocks_a_backup_code_the_reminder_refunds_and_a_dispute_are_told_in_order() -> None:
    at = START + timedelta(minutes=1)
    story = build_timeline(
        details(
            seam_device_id="august_device_1",
            access_code_status=AccessCodeStatus.REMOVED,
            code_set_at=START + timedelta(seconds=20),
            payment_status=PaymentStatus.SUCCEEDED,
            payment_intent_id="pi_1",
            backup_access_code_id="ac_backup_1",
            backup_code_at=START + timedelta(minutes=2),
            first_unlocked_at=START + timedelta(minutes=3),
            unlock_count=3,
            reminded_at=START + timedelta(minutes=5),
            refunded_pence=213,
            disputed_at=START + timedelta(days=2),
            dispute_id="dp_1",
        ),
        [],
        [
            SessionRefund(150, "succeeded", "heater broken", True, "re_1", at + timedelta(hours=1)),
            SessionRefund(63, "pending", None, False, "re_2", at + timedelta(hours=2)),
            SessionRefund(20, "requested", None, True, None, at + timedelta(hours=3)),
        ],
    )
    assert lines(story)[2:] == [
        (
            START + timedelta(minutes=2),
            "backup_code",
            "backup code handed out from the lock's pool (ac_backup_1): the session's own code "
            "did not reach the lock",
        ),
        (
            START + timedelta(minutes=3),
            "unlock",
            "first unlock of the door with the code; 3 unlocks in all",
        ),
        (
            START + timedelta(minutes=5),
            "reminder",
            "overstay reminder sent to ada@example.com: the session nears its time limit",
        ),
        (START + timedelta(minutes=10, seconds=30), "ended", "ended after 10 min 30 s"),
        (START + timedelta(minutes=10, seconds=31), "payment", "£2.63 charged (pi_1)"),
        (
            at + timedelta(hours=1),
            "refund",
            "refund of £1.50 by the operator (CLI or console), succeeded (re_1): heater broken",
        ),
        (
            at + timedelta(hours=2),
            "refund",
            "refund of £0.63 in Stripe's dashboard, pending at Stripe (re_2)",
        ),
        (
            at + timedelta(hours=3),
            "refund",
            "refund of £0.20 by the operator (CLI or console), requested, Stripe's answer not "
            "recorded yet",
        ),
        (
            START + timedelta(days=2),
            "dispute",
            "disputed by the customer with their bank (dp_1): answer it in Stripe's dashboard",
        ),
    ]
    assert (story[0].kind, story[1].kind) == ("booked", "code_on_lock")
