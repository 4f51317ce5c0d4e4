"""The pages' pure parts: how a payment outcome is worded, which Stripe.js a page loads."""

import pytest

from svc.env import Settings
from svc.page_templates import payment_outcome
from svc.pages import stripe_js
from svc.types import PaymentStatus


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
    settings = Settings(_env_file=None, STRIPE_SECRET="sk_live_x", STRIPE_PUBLISHABLE_KEY="pk_x")
    chosen = stripe_js(settings)
    assert (chosen.script_url, chosen.publishable_key, chosen.is_emulator) == (
        "https://js.stripe.com/v3/",
        "pk_x",
        False,
    )


def test_stripe_js_is_the_emulators_when_the_api_is_overridden() -> None:
    settings = Settings(
        _env_file=None, STRIPE_SECRET="sk_test_x", STRIPE_API_BASE="http://localhost:8420/"
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
