"""What a customer does on the booking page, over HTTP: save a card, then book. For the
tests (in-process or against real processes) and the benchmark."""

from dataclasses import dataclass
from typing import Any

import httpx
import stripe

from tests.support.stripe_helpers import CARD_OK, confirm_card


@dataclass
class SavedCard:
    """A customer's card set up for a pod, as the booking page leaves it."""

    setup_intent: dict[str, Any]
    customer_id: str
    client_secret: str
    email: str | None

    @property
    def setup_intent_id(self) -> str:
        return str(self.setup_intent["id"])


async def save_card(
    http: httpx.AsyncClient,
    stripe_client: stripe.StripeClient,
    *,
    pod: str,
    email: str | None,
    card: str = CARD_OK,
    card_email: str | None = None,
    base_url: str = "",
) -> SavedCard:
    """The booking page up to the card being confirmed (3-D Secure completed if asked).

    `email` is the one typed on the page (None: none), `card_email` the card's billing one.
    """
    if email:
        created = await http.post(
            f"{base_url}/api/create-setup-intent", json={"podName": pod, "email": email}
        )
    else:
        # No e-mail on the page: only the seed's GET (local mode) takes that.
        created = await http.get(f"{base_url}/api/create-setup-intent", params={"podName": pod})
    assert created.status_code == 200, created.text
    body = created.json()
    intent = await confirm_card(stripe_client, body["setup_intent_id"], card=card, email=card_email)
    assert intent["status"] == "succeeded"
    return SavedCard(intent, body["customer_id"], body["client_secret"], email)


async def confirm_booking(
    http: httpx.AsyncClient, card: SavedCard, *, base_url: str = ""
) -> dict[str, Any]:
    """What the booking page posts once the card is saved; the answer, which must be a 200."""
    response = await http.post(
        f"{base_url}/api/confirm-booking",
        json={"setup_intent_id": card.setup_intent_id, "client_secret": card.client_secret},
    )
    assert response.status_code == 200, response.text
    booked: dict[str, Any] = response.json()
    return booked
