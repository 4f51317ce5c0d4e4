"""The pay page's API bodies: paying an owed session."""

from decimal import Decimal
from typing import Literal
from uuid import UUID

from pydantic import AliasChoices, BaseModel, ConfigDict, Field


class PaySessionRequest(BaseModel):
    """Pay what a session owes: with the saved card, or with the card of `setupIntentId`
    (saved on the pay page); or, with `paymentIntentId`, only ask how that payment went."""

    model_config = ConfigDict(populate_by_name=True)

    session_id: UUID = Field(validation_alias=AliasChoices("sessionId", "session_id"))
    setup_intent_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("setupIntentId", "setup_intent_id"),
        pattern=r"^seti_[A-Za-z0-9]+$",
        max_length=255,
        description="A card saved on the pay page (POST /api/pay-session-card), to pay with.",
    )
    payment_intent_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("paymentIntentId", "payment_intent_id"),
        pattern=r"^pi_[A-Za-z0-9]+$",
        max_length=255,
        description="The payment to read again from Stripe after the bank's authentication.",
    )


class PaySessionResult(BaseModel):
    session_id: UUID
    status: Literal["succeeded", "requires_action", "processing", "failed"] = Field(
        description="succeeded: paid; requires_action: complete the bank's authentication "
        "with Stripe.js (confirmCardPayment) and ask again with paymentIntentId; processing: "
        "ask again; failed: declined, see error (pay again, or with another card)."
    )
    amount: Decimal = Field(description="The amount owed, in major units, two decimals.")
    amount_pence: int
    currency: str
    payment_intent_id: str | None
    client_secret: str | None = Field(description="The PaymentIntent's, for Stripe.js.")
    error: str | None = Field(description="Why the payment failed, in words.")


class PaySessionCardRequest(BaseModel):
    session_id: UUID = Field(validation_alias=AliasChoices("sessionId", "session_id"))


class PaySessionCard(BaseModel):
    setup_intent_id: str
    client_secret: str = Field(description="The SetupIntent's, for Stripe.js confirmCardSetup.")
