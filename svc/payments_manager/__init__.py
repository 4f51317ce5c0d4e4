"""Every Stripe call of the service, and the webhook's signature check.

Stripe's errors stop here: each function turns them into one of our errors, or into an
outcome (a declined card is an outcome, not a failure of ours). `base` holds what the calls
share (the client, our errors, the records); `cards` saves a card, `charges` charges one
off-session and checks webhooks, `holds` places, captures and releases the hold at booking.
"""

from svc.payments_manager.base import (
    WEBHOOK_TOLERANCE_SECONDS,
    CardSetupFailed,
    ChargeOutcome,
    InvalidWebhook,
    NewCardSetup,
    PaymentProviderUnavailable,
    SetupIntentInfo,
    SetupIntentNotFound,
    StripeEvent,
    build_client,
)
from svc.payments_manager.cards import (
    CustomerEmail,
    create_setup_intent,
    customer_email,
    retrieve_setup_intent,
    reusable_setup_intent,
)
from svc.payments_manager.charges import charge_session, verify_webhook
from svc.payments_manager.holds import (
    HoldOutcome,
    cancel_hold,
    capture_hold,
    place_hold,
    retrieve_hold,
)
from svc.payments_manager.recovery import (
    RECOVERY,
    PaymentIntentNotFound,
    RecoveryIntent,
    cancel_recovery,
    create_card_setup,
    pay_owed,
    retrieve_card_setup,
    retrieve_recovery,
)

__all__ = [
    "CardSetupFailed",
    "ChargeOutcome",
    "CustomerEmail",
    "HoldOutcome",
    "InvalidWebhook",
    "NewCardSetup",
    "PaymentIntentNotFound",
    "PaymentProviderUnavailable",
    "RECOVERY",
    "RecoveryIntent",
    "SetupIntentInfo",
    "SetupIntentNotFound",
    "StripeEvent",
    "WEBHOOK_TOLERANCE_SECONDS",
    "build_client",
    "cancel_hold",
    "cancel_recovery",
    "capture_hold",
    "charge_session",
    "create_card_setup",
    "create_setup_intent",
    "customer_email",
    "pay_owed",
    "place_hold",
    "retrieve_card_setup",
    "retrieve_hold",
    "retrieve_recovery",
    "retrieve_setup_intent",
    "reusable_setup_intent",
    "verify_webhook",
]
