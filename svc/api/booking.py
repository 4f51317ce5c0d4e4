"""Booking a pod: save a card, then start the session (from the page or Stripe's event)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request

from svc import bookings
from svc.api.deps import POD_QUERY, ServicesDep, errors, pod_reference, query_parameters
from svc.api.guards import require_json
from svc.schemas import BookingConfirmed, ConfirmBookingRequest, SetupIntentCreated, WebhookAck

router = APIRouter(tags=["booking"])

EmailQuery = Annotated[
    str | None,
    Query(
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="The customer's e-mail, put on the Stripe Customer.",
    ),
]


async def create_setup_intent(
    request: Request, services: ServicesDep, email: EmailQuery = None
) -> SetupIntentCreated:
    """Start saving a card for a pod: a Stripe Customer and an off-session SetupIntent."""
    name, pod_id = pod_reference(request)
    return await bookings.create_setup_intent(services, name=name, pod_id=pod_id, email=email)


for _path, _deprecated in (
    ("/api/create-setup-intent", False),
    ("/api/create-payment-intent", True),
):
    router.get(
        _path,
        response_model=SetupIntentCreated,
        responses=errors(404, 409, 422, 502),
        deprecated=_deprecated,
        name=_path.rsplit("/", 1)[1],
        openapi_extra=query_parameters(POD_QUERY),
    )(create_setup_intent)


@router.post(
    "/api/confirm-booking",
    response_model=BookingConfirmed,
    responses=errors(400, 403, 404, 409, 413, 415, 422, 503),
    dependencies=[Depends(require_json)],
)
async def confirm_booking(services: ServicesDep, body: ConfirmBookingRequest) -> BookingConfirmed:
    """Start the session once the page has confirmed the card (or find the one started)."""
    return await bookings.confirm_booking(
        services, setup_intent_id=body.setup_intent_id, client_secret=body.client_secret
    )


@router.post("/webhook/stripe", response_model=WebhookAck, responses=errors(400, 413, 503))
async def receive_stripe_webhook(
    request: Request,
    services: ServicesDep,
    stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
) -> WebhookAck:
    """Stripe's events, verified on the raw body: card saved, payment succeeded or failed."""
    return await bookings.handle_webhook(
        services, payload=await request.body(), signature=stripe_signature
    )
