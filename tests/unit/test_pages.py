"""The pages' pure parts: what they render, how a payment outcome is worded, which Stripe.js
a page loads."""

import re
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from svc import sessions
from svc.env import Settings
from svc.models.records import Pod, SessionRecord
from svc.pages import (
    booking_page,
    end_session_page,
    pod_list_page,
    pod_not_found_page,
    session_not_found_page,
    stripe_js,
)
from svc.types import PaymentStatus
from tests.unit.test_email_manager import START, session

POD = Pod(
    id=1,
    name="pod1",
    address="1 Demo Street, London",
    price=Decimal("0.25"),
    currency="gbp",
    in_use=False,
    seam_device_id=None,
)
HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def render_end_session(record: SessionRecord, settings: Settings) -> str:
    return end_session_page(record, sessions.preview_of(record), settings=settings)


def payment_outcome(
    status: PaymentStatus | None,
    *,
    cost_pence: int,
    currency: str,
    error: str | None,
    minimum_pence: int,
) -> tuple[str, str]:
    """The tone and the words of the receipt that the end-session page renders."""
    settings = Settings(_env_file=None, MINIMUM_CHARGE_PENCE=minimum_pence)
    record = session(payment_status=status, payment_error=error, currency=currency)
    # 10 min 30 s at 25p a minute: the cost is 263 pence.
    assert sessions.preview_of(record).cost_pence == cost_pence
    page = render_end_session(record, settings)
    match = re.search(r'<p class="outcome outcome--(\w+)" id="receipt-outcome">([^<]*)</p>', page)
    assert match is not None, page
    return match[1], match[2]


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (PaymentStatus.SUCCEEDED, None, ("ok", "Paid: £2.63 was charged to your saved card.")),
        (
            PaymentStatus.NOT_CHARGED,
            None,
            ("ok", "Nothing to pay: £2.63 is below our minimum charge of £0.30."),
        ),
        (
            PaymentStatus.FAILED,
            "card_declined: Your card was declined.",
            (
                "warn",
                "The charge of £2.63 did not go through. Your card was declined. "
                "We have e-mailed you about paying it.",
            ),
        ),
        (
            PaymentStatus.FAILED,
            None,
            (
                "warn",
                "The charge of £2.63 did not go through. Your card was declined. "
                "We have e-mailed you about paying it.",
            ),
        ),
        (
            PaymentStatus.REQUIRES_ACTION,
            "authentication_required: Your bank asks you to approve it.",
            (
                "warn",
                "Your bank wants you to approve the charge of £2.63. "
                "We have e-mailed you about paying it.",
            ),
        ),
        (
            PaymentStatus.PENDING,
            None,
            ("wait", "Charging £2.63 to your saved card. This page updates when it is done."),
        ),
        (
            None,
            None,
            ("wait", "Charging £2.63 to your saved card. This page updates when it is done."),
        ),
    ],
)
def test_payment_outcome_in_words(
    status: PaymentStatus | None, error: str | None, expected: tuple[str, str]
) -> None:
    assert (
        payment_outcome(status, cost_pence=263, currency="gbp", error=error, minimum_pence=30)
        == expected
    )


def test_stripe_js_is_stripes_own_without_an_api_override() -> None:
    settings = Settings(
        _env_file=None,
        STRIPE_SECRET="sk_live_x",
        STRIPE_PUBLISHABLE_KEY="pk_x",
        STRIPE_WEBHOOK_SECRET="whsec_x",
    )
    chosen = stripe_js(settings)
    assert (chosen.script_url, chosen.publishable_key, chosen.is_emulator) == (
        "https://js.stripe.com/v3/",
        "pk_x",
        False,
    )


def test_stripe_js_is_the_emulators_when_the_api_is_overridden() -> None:
    settings = Settings(
        _env_file=None,
        STRIPE_SECRET="sk_test_x",
        STRIPE_PUBLISHABLE_KEY="pk_test_x",
        STRIPE_WEBHOOK_SECRET="whsec_x",
        STRIPE_API_BASE="http://localhost:8420/",
    )
    chosen = stripe_js(settings)
    assert (chosen.script_url, chosen.script_origins, chosen.connect_origins) == (
        "http://localhost:8420/js.stripe.com/v3/",
        ("http://localhost:8420",),
        ("http://localhost:8420",),
    )


def test_stripe_js_in_local_mode_is_the_one_of_the_localstripe_it_starts() -> None:
    settings = Settings(_env_file=None, LOCALSTRIPE_PORT=8421)
    chosen = stripe_js(settings)
    assert (chosen.script_url, chosen.publishable_key, chosen.is_emulator) == (
        "http://localhost:8421/js.stripe.com/v3/",
        "pk_test_qwip_local",
        True,
    )


def test_every_page_shows_a_hostile_pod_name_and_address_as_text(settings: Settings) -> None:
    pod = replace(POD, name=HOSTILE, address=HOSTILE)
    record = session(pod_name=HOSTILE, pod_address=HOSTILE, payment_status=PaymentStatus.FAILED)
    chosen = stripe_js(settings)
    rendered = {
        "pods": pod_list_page([pod], settings=settings),
        "book": booking_page(pod, settings=settings, stripe=chosen),
        "book (in use)": booking_page(replace(pod, in_use=True), settings=settings, stripe=chosen),
        "end-session": render_end_session(record, settings),
        "end-session (open)": render_end_session(replace(record, end_time=None), settings),
        "pod not found": pod_not_found_page(HOSTILE, settings=settings),
        "session not found": session_not_found_page(settings=settings),
    }
    for name, page in rendered.items():
        assert "<script>" not in page, name
    for name in ("pods", "book", "book (in use)", "end-session", "pod not found"):
        assert ESCAPED in rendered[name], name
    assert 'data-pod-name="&lt;script&gt;alert(1)&lt;/script&gt;"' in rendered["book"]


def test_a_failure_reason_from_stripe_is_text_in_the_receipt(settings: Settings) -> None:
    record = session(payment_status=PaymentStatus.FAILED, payment_error=f"card_declined: {HOSTILE}")
    page = render_end_session(record, settings)
    assert f"did not go through. {ESCAPED}. We have" in page
    assert "<script>" not in page


def test_end_session_page_holds_every_outcomes_wording_for_its_script(settings: Settings) -> None:
    """end-session.js fills these when the session ends while the page is open."""
    page = render_end_session(session(end_time=None, payment_status=None), settings)
    amount = '<span data-slot="amount"></span>'
    assert re.findall(
        r'<template id="outcome-([a-z_]+)" data-tone="(\w+)">(.*?)</template>', page
    ) == [
        ("succeeded", "ok", f"Paid: {amount} was charged to your saved card."),
        ("not_charged", "ok", f"Nothing to pay: {amount} is below our minimum charge of £0.30."),
        (
            "failed",
            "warn",
            f"The charge of {amount} did not go through. "
            '<span data-slot="reason">Your card was declined</span>. '
            "We have e-mailed you about paying it.",
        ),
        (
            "requires_action",
            "warn",
            f"Your bank wants you to approve the charge of {amount}. "
            "We have e-mailed you about paying it.",
        ),
        (
            "pending",
            "wait",
            f"Charging {amount} to your saved card. This page updates when it is done.",
        ),
    ]


def test_an_open_sessions_receipt_is_empty_and_inert(settings: Settings) -> None:
    page = render_end_session(
        session(
            end_time=None, payment_status=None, cost_pence=None, now=START + timedelta(minutes=3)
        ),
        settings,
    )
    assert 'data-state="open" data-payment-status=""' in page
    assert (
        '<section id="receipt" class="panel result" aria-labelledby="receipt-title" inert>' in page
    )
    assert '<p class="amount" id="receipt-amount"></p>' in page
    assert '<p class="outcome outcome--wait" id="receipt-outcome"></p>' in page
    assert '<p class="amount" id="live-cost" aria-live="off">£0.75</p>' in page
    assert '<dd id="live-elapsed">3 min 00 s</dd>' in page


def with_hold_minutes(settings: Settings, minutes: int) -> Settings:
    return settings.model_copy(update={"HOLD_MINUTES": minutes})


HOLD_WORDS = (
    "£15.00 is held on your card; you pay only for the minutes you use and the rest is "
    "released when you end."
)


def test_booking_page_says_the_hold_before_the_card_is_entered(settings: Settings) -> None:
    page = booking_page(POD, settings=with_hold_minutes(settings, 60), stripe=stripe_js(settings))
    # 60 minutes at 25p a minute.
    assert f'<p class="hint hold" id="hold">{HOLD_WORDS}</p>' in page
    assert page.index('id="hold"') < page.index('id="card-element"')
    assert (
        '<div id="card-element" class="card-field" role="group" aria-labelledby="card-label" '
        'aria-describedby="hold"></div>'
    ) in page


def test_booking_page_holds_at_least_the_minimum_charge(settings: Settings) -> None:
    cheap = replace(POD, price=Decimal("0.001"))  # 60 minutes cost 6p, below the 30p minimum
    page = booking_page(cheap, settings=with_hold_minutes(settings, 60), stripe=stripe_js(settings))
    assert (
        '<p class="hint hold" id="hold">£0.30 is held on your card; you pay only for the minutes '
        "you use and the rest is released when you end.</p>"
    ) in page


def test_booking_page_without_holds_says_what_it_said_before(settings: Settings) -> None:
    page = booking_page(POD, settings=with_hold_minutes(settings, 0), stripe=stripe_js(settings))
    assert "held" not in page
    assert 'id="hold"' not in page
    assert (
        '<span class="label" id="card-label">Card</span>\n'
        '    <div id="card-element" class="card-field" role="group" '
        'aria-labelledby="card-label"></div>\n'
    ) in page


def render_with_hold(record: SessionRecord, settings: Settings, **figures: int | None) -> str:
    """The end page of a session whose preview tells of a hold with these figures."""
    preview = sessions.preview_of(record).model_copy(update=figures)
    return end_session_page(record, preview, settings=settings)


def receipt_hold(page: str) -> str:
    match = re.search(r'<p class="outcome-hold" id="receipt-hold">([^<]*)</p>', page)
    assert match is not None, page
    return match[1]


@pytest.mark.parametrize(
    ("captured", "released", "expected"),
    [
        (263, 1237, "£2.63 was taken from the £15.00 held; £12.37 was released."),
        (0, 1500, "Nothing was taken from the £15.00 held; all of it was released."),
        (1500, 0, "All of the £15.00 held was taken; nothing was released."),
        (
            None,
            None,
            "£15.00 is held on your card; what you do not owe is released once the payment "
            "is done.",
        ),
    ],
)
def test_end_page_says_what_was_taken_from_the_hold_and_released(
    settings: Settings, captured: int | None, released: int | None, expected: str
) -> None:
    record = session(payment_status=PaymentStatus.SUCCEEDED)
    page = render_with_hold(
        record, settings, hold_pence=1500, captured_pence=captured, released_pence=released
    )
    assert receipt_hold(page) == expected
    # The payment's own outcome is worded as without a hold.
    assert "Paid: £2.63 was charged to your saved card." in page


def test_end_page_of_an_open_session_shows_the_hold_and_every_wording_for_its_script(
    settings: Settings,
) -> None:
    record = session(end_time=None, payment_status=None, cost_pence=None)
    page = render_with_hold(
        record, settings, hold_pence=1500, captured_pence=None, released_pence=None
    )
    assert '<div class="fact"><dt>Held on your card</dt><dd>£15.00</dd></div>' in page
    assert '<p class="outcome-hold" id="receipt-hold"></p>' in page
    slot = '<span data-slot="{}"></span>'.format
    assert re.findall(r'<template id="held-([a-z]+)">(.*?)</template>', page) == [
        (
            "part",
            f"{slot('captured')} was taken from the {slot('held')} held; "
            f"{slot('released')} was released.",
        ),
        ("none", f"Nothing was taken from the {slot('held')} held; all of it was released."),
        ("all", f"All of the {slot('held')} held was taken; nothing was released."),
        (
            "pending",
            f"{slot('held')} is held on your card; what you do not owe is released once the "
            "payment is done.",
        ),
    ]


@pytest.mark.parametrize("hold_pence", [None, 0])
def test_end_page_of_a_session_without_a_hold_says_nothing_of_one(
    settings: Settings, hold_pence: int | None
) -> None:
    for record in (session(payment_status=PaymentStatus.SUCCEEDED), session(end_time=None)):
        page = render_with_hold(
            record, settings, hold_pence=hold_pence, captured_pence=None, released_pence=None
        )
        assert page == render_end_session(record, settings)
        assert "held" not in page.lower()
