"""VAT receipts and the refund and dispute e-mails: the arithmetic, the settings, the words."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from svc import email_manager
from svc.env import Settings
from svc.models.records import QueuedEmail
from svc.types import PaymentStatus
from svc.vat import vat_included_pence, vat_invoice
from tests.unit.test_email_manager import SESSION_ID, build_message, outbox, session

VAT = {
    "VAT_NUMBER": "GB123456789",
    "BUSINESS_NAME": "Qwip Pods Ltd",
    "BUSINESS_ADDRESS": "1 Quiet Lane, London N1 1AA",
}


@pytest.mark.parametrize(
    ("total", "rate", "vat"),
    [
        (263, "20", 44),  # 43.83 → 44
        (3, "20", 1),  # exactly 0.5: half-up gives 1 (half-even would give 0)
        (15, "20", 3),  # exactly 2.5: half-up gives 3 (half-even would give 2)
        (27, "20", 5),  # exactly 4.5: 5 (half-even 4)
        (9, "20", 2),  # exactly 1.5: 2
        (100, "20", 17),  # 16.67 → 17
        (7, "20", 1),  # 1.1667 → 1
        (1999, "5", 95),  # 95.19 → 95
        (43, "5", 2),  # 2.0476 → 2
        (235, "17.5", 35),  # exactly 35
        (47, "17.5", 7),  # exactly 7
        (0, "20", 0),
        (500, "0", 0),
    ],
)
def test_vat_included_is_total_times_rate_over_100_plus_rate_half_up(
    total: int, rate: str, vat: int
) -> None:
    assert vat_included_pence(total, Decimal(rate)) == vat


def test_vat_arithmetic_ignores_the_process_decimal_context() -> None:
    from decimal import ROUND_HALF_EVEN, localcontext

    with localcontext() as context:
        context.rounding = ROUND_HALF_EVEN
        context.prec = 3
        assert vat_included_pence(15, Decimal(20)) == 3
        assert vat_included_pence(123456789, Decimal(20)) == 20576132  # 20576131.5 → up


def test_vat_settings_default_to_20_percent_and_off(settings: Settings) -> None:
    assert settings.VAT_RATE == Decimal(20)
    assert vat_invoice(settings) is None


@pytest.mark.parametrize("missing", sorted(VAT))
def test_vat_settings_are_refused_unless_all_three_are_set(missing: str) -> None:
    partial = {name: value for name, value in VAT.items() if name != missing}
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, **partial)
    assert (
        "VAT receipts need VAT_NUMBER, BUSINESS_NAME and BUSINESS_ADDRESS together: "
        f"set {missing} too, or unset the others"
    ) in str(refused.value)


@pytest.fixture
def vat_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        OUTBOX_DIR=tmp_path / "outbox",
        PUBLIC_URL="https://pods.example.com",
        EMAIL_FROM="pods@example.com",
        OPERATOR_EMAIL="ops@example.com",
        VAT_RATE=Decimal("20"),
        **VAT,
    )


def text_of(queued: QueuedEmail, settings: Settings) -> tuple[str, str]:
    message = build_message(outbox(queued), settings)
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return str(message["Subject"]), str(body)


def receipt(cost_pence: int = 263, status: PaymentStatus = PaymentStatus.SUCCEEDED) -> QueuedEmail:
    [queued] = email_manager.settlement_emails(
        session(), cost_pence=cost_pence, status=status, error=None, operator=None
    )
    return queued


def test_a_receipt_with_vat_settings_is_a_simplified_vat_invoice(vat_settings: Settings) -> None:
    subject, text = text_of(receipt(), vat_settings)
    assert subject == "Your Qwip receipt for pod1: £2.63"
    assert text == (
        "Thank you for using pod1.\n\n"
        "From 26 November 2026, 3:05pm to 26 November 2026, 3:15pm (10 min 30 s).\n\n"
        "Charged: £2.63 to your saved card.\n\n"
        "VAT invoice from Qwip Pods Ltd, 1 Quiet Lane, London N1 1AA. VAT registration "
        "number: GB123456789.\n\n"
        "Time of supply: 26 November 2026, 3:15pm. Description: use of the Qwip pod pod1 at "
        "1 Demo Street, London for 10 min 30 s.\n\n"
        "Total: £2.63, including VAT at 20%: VAT £0.44.\n\n"
        f"Session: {SESSION_ID}\n"
    )


def test_the_time_of_supply_is_the_end_in_the_pods_time_zone(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, OUTBOX_DIR=tmp_path, TIMEZONE="America/New_York", VAT_RATE="17.5", **VAT
    )
    _, text = text_of(receipt(cost_pence=235), settings)
    # 15:15:30 UTC is 10:15am in New York on 26 November.
    assert "Time of supply: 26 November 2026, 10:15am." in text
    assert "Total: £2.35, including VAT at 17.5%: VAT £0.35." in text


def test_a_receipt_without_vat_settings_says_nothing_of_vat(settings: Settings) -> None:
    _, text = text_of(receipt(), settings)
    assert "VAT" not in text


def test_a_session_not_charged_has_no_vat_invoice(vat_settings: Settings) -> None:
    _, text = text_of(receipt(cost_pence=12, status=PaymentStatus.NOT_CHARGED), vat_settings)
    assert "VAT" not in text


def refund(**changes: object) -> list[QueuedEmail]:
    values: dict[str, object] = dict(
        dedupe_key="req-1",
        refunded_pence=15,
        refunded_before_pence=100,
        paid_pence=263,
        reason="the pod was not clean",
        stripe_refund_ids=["re_1"],
        made_in_dashboard=False,
        operator="ops@example.com",
    )
    values.update(changes)
    return email_manager.refund_emails(
        session(payment_status=PaymentStatus.SUCCEEDED), **values  # type: ignore[arg-type]
    )


def test_a_refund_tells_the_customer_and_the_operator(settings: Settings) -> None:
    customer, operator = refund()
    assert (customer.kind, customer.recipient, customer.dedupe_key) == (
        "refund",
        "ada@example.com",
        "refund:req-1",
    )
    assert (operator.kind, operator.recipient, operator.dedupe_key) == (
        "refund_operator",
        "ops@example.com",
        "refund_operator:req-1",
    )
    assert text_of(customer, settings) == (
        "Your Qwip refund for pod1: £0.15",
        "We have refunded £0.15 of the £2.63 you paid for your session in pod1, which ended "
        "26 November 2026, 3:15pm.\n\n"
        "It goes back to the card you paid with; your bank may take 5 to 10 days to show it.\n\n"
        f"Session: {SESSION_ID}\n",
    )
    assert text_of(operator, settings) == (
        "Refund: £0.15 to ada@example.com for pod1",
        f"£0.15 was refunded for session {SESSION_ID} in pod1, as asked with "
        "`python -m svc sessions refund`.\n\n"
        "Customer: ada@example.com. Paid: £2.63; refunded before: £1.00; can still be "
        "refunded: £1.48.\n\n"
        "Reason: the pod was not clean. Stripe refund: re_1.\n\n"
        "The customer has been sent a refund e-mail. Nothing else needs doing; to refund more, "
        f"run `python -m svc sessions refund {SESSION_ID} --amount-pence N`.\n",
    )


def test_a_refund_states_its_vat_as_the_receipt_does(vat_settings: Settings) -> None:
    customer, _ = refund()
    _, text = text_of(customer, vat_settings)
    assert (
        "Credit note from Qwip Pods Ltd, 1 Quiet Lane, London N1 1AA. VAT registration number: "
        "GB123456789.\n\n"
        # 15 × 20 ÷ 120 = 2.5: half-up to 3 pence
        "Refunded: £0.15, including VAT at 20%: VAT £0.03. Description: use of the Qwip pod "
        "pod1 at 1 Demo Street, London.\n\n"
    ) in text


def test_a_dashboard_refund_says_where_it_was_made(settings: Settings) -> None:
    _, operator = refund(made_in_dashboard=True, reason=None, stripe_refund_ids=["re_9"])
    subject, text = text_of(operator, settings)
    assert text.startswith(
        f"A refund of £0.15 made in Stripe's dashboard is now recorded on session {SESSION_ID} "
        "in pod1.\n\n"
    )
    assert "Reason: none given. Stripe refund: re_9." in text


def test_a_dispute_gives_the_operator_the_evidence_and_what_to_do(settings: Settings) -> None:
    emailed = datetime(2026, 11, 26, 15, 5, 2, tzinfo=UTC)
    [told] = email_manager.dispute_emails(
        session(
            payment_status=PaymentStatus.SUCCEEDED,
            access_code_status="removed",
            seam_device_id="august_device_1",
        ),
        dispute_id="dp_1",
        dispute_reason="fraudulent",
        disputed_pence=263,
        evidence_due_by=datetime(2026, 12, 6, 23, 59, tzinfo=UTC),
        access_code_emailed_at=emailed,
        operator="ops@example.com",
    )
    assert (told.kind, told.recipient, told.dedupe_key) == (
        "dispute_operator",
        "ops@example.com",
        "dispute_operator:dp_1",
    )
    subject, text = text_of(told, settings)
    assert subject == "Dispute of £2.63 for pod1: answer it in Stripe"
    assert text == (
        f"ada@example.com has disputed £2.63 with their bank for session {SESSION_ID} in pod1 "
        "(Stripe dispute dp_1, reason: fraudulent). The session is marked disputed.\n\n"
        "What to do now: open the dispute in Stripe's dashboard (Payments, then Disputes) and "
        "submit the evidence below before 6 December 2026, 11:59pm. Unanswered, the dispute is "
        "lost and the amount taken back with a fee. If the customer is right, accept it there "
        "instead.\n\n"
        "Product description: use of the quiet work pod pod1 at 1 Demo Street, London, by the "
        "minute.\n\n"
        "service_date: 26 November 2026, 3:05pm.\n\n"
        "customer_email_address: ada@example.com. Amount charged for the session: £2.63.\n\n"
        "access_activity_log:\n\n"
        "26 November 2026, 3:05pm: booked with the card now disputed, from the pod's booking "
        "page; the session started and the door code was shown on the page.\n\n"
        "26 November 2026, 3:05pm: the door code was e-mailed to ada@example.com.\n\n"
        "The lock (Seam device august_device_1) took the code: Seam reported it set on the "
        "lock.\n\n"
        "Unlocks: the lock reported none with this session's code (Seam's dashboard lists "
        "device august_device_1's events).\n\n"
        "26 November 2026, 3:15pm: the session ended; £2.63 charged.\n"
    )


HOSTILE = "<script>alert(1)</script>"


def test_refund_and_dispute_emails_show_a_hostile_pod_name_as_text(settings: Settings) -> None:
    record = session(pod_name=HOSTILE, pod_address=HOSTILE, payment_status=PaymentStatus.SUCCEEDED)
    emails = email_manager.refund_emails(
        record,
        dedupe_key="r",
        refunded_pence=1,
        refunded_before_pence=0,
        paid_pence=2,
        reason=HOSTILE,
        stripe_refund_ids=[],
        made_in_dashboard=False,
        operator="o@x.y",
    ) + email_manager.dispute_emails(
        record,
        dispute_id="dp",
        dispute_reason=HOSTILE,
        disputed_pence=1,
        evidence_due_by=None,
        access_code_emailed_at=None,
        operator="o@x.y",
    )
    assert [e.kind for e in emails] == ["refund", "refund_operator", "dispute_operator"]
    for queued in emails:
        html = build_message(outbox(queued), settings).get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "<script>" not in html and "&lt;script&gt;" in html, queued.kind
