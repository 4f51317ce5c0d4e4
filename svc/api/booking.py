"""Booking a pod: save a card, then start the session (from the page or Stripe's event)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from svc import bookings, card_setup, webhooks
from svc.api.deps import (
    POD_QUERY,
    MissingParameter,
    ServicesDep,
    errors,
    pod_reference,
    query_parameters,
)
from svc.api.guards import require_json
from svc.booking_limits import TooManyBookings, client_ip
from svc.errors import ServiceError
from svc.models.schemas import (
    BookingConfirmed,
    ConfirmBookingRequest,
    CreateSetupIntentRequest,
    ErrorBody,
    SetupIntentCreated,
    WebhookAck,
)

router = APIRouter(tags=["booking"])

EmailQuery = Annotated[
    str | None,
    Query(
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="The customer's e-mail, put on the Stripe Customer.",
    ),
]

# The answer carries the SetupIntent's client secret: no cache may keep it.
NO_STORE = {"Cache-Control": "no-store"}


class ForeignOrigin(ServiceError):
    status_code = 403

    def __init__(self, origin: str) -> None:
        super().__init__(
            f"Cards can be saved only from this service's own booking page; the page at "
            f"{origin[:200]!r} is not one of them."
        )


def _documented(*codes: int, **more: str) -> dict[int | str, dict[str, Any]]:
    extra = {int(code.removeprefix("e")): text for code, text in more.items()}
    return {
        **errors(*codes),
        **{code: {"model": ErrorBody, "description": text} for code, text in extra.items()},
    }


def _limited(error: TooManyBookings) -> JSONResponse:
    return JSONResponse(
        {"detail": error.message},
        status_code=error.status_code,
        headers={"Retry-After": str(error.retry_after), **NO_STORE},
    )


async def require_own_origin(request: Request, services: ServicesDep) -> None:
    """A browser names the page that makes the request: only our own pages may start a card
    setup. A request without Origin (curl, a server) is not a browser's, and goes on."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = services.settings.booking_origins
    if "*" not in allowed and origin.rstrip("/") not in allowed:
        raise ForeignOrigin(origin)


@router.post(
    "/api/create-setup-intent",
    response_model=SetupIntentCreated,
    responses=_documented(
        400,
        404,
        409,
        413,
        415,
        422,
        502,
        503,
        e403="A page of another origin, or the robot check (Turnstile) missing or failed",
        e429="Too many card setups from this address or for this e-mail; see Retry-After",
    ),
    dependencies=[Depends(require_json), Depends(require_own_origin)],
)
async def create_setup_intent(
    request: Request, services: ServicesDep, body: CreateSetupIntentRequest
) -> Response:
    """Start saving a card for a pod: a Stripe Customer and an off-session SetupIntent (or
    this browser's own unconfirmed one, reused)."""
    if body.pod_name is None and body.pod_id is None:
        raise MissingParameter("Give the pod as podName (or pod_name) or podId (or pod_id).")
    try:
        created = await card_setup.create_setup_intent(
            services,
            card_setup.CardSetupRequest(
                name=None if body.pod_id is not None else body.pod_name,
                pod_id=body.pod_id,
                email=body.email,
                client_ip=_client_ip(request, services.settings.FORWARDED_ALLOW_IPS),
                turnstile_token=body.turnstile_token,
                reuse_setup_intent_id=body.setup_intent_id,
                reuse_client_secret=body.client_secret,
            ),
        )
    except TooManyBookings as error:
        return _limited(error)
    return Response(created.model_dump_json(), media_type="application/json", headers=NO_STORE)


def _client_ip(request: Request, forwarded_allow_ips: str) -> str:
    return client_ip(
        request.client.host if request.client else None,
        request.headers.getlist("x-forwarded-for"),
        forwarded_allow_ips=forwarded_allow_ips,
    )


async def create_setup_intent_by_get(
    request: Request, services: ServicesDep, email: EmailQuery = None
) -> Response:
    """The seed's form, served in local mode only: elsewhere use the POST."""
    if not services.settings.is_local:
        return JSONResponse(
            {
                "detail": "Start a card setup with POST /api/create-setup-intent and a JSON "
                'body {"podName": ..., "email": ...}; this GET is served only in local mode.'
            },
            status_code=405,
            headers={"Allow": "POST"},
        )
    name, pod_id = pod_reference(request)
    try:
        created = await card_setup.create_setup_intent(
            services,
            card_setup.CardSetupRequest(
                name=name,
                pod_id=pod_id,
                email=email,
                client_ip=_client_ip(request, services.settings.FORWARDED_ALLOW_IPS),
            ),
        )
    except TooManyBookings as error:
        return _limited(error)
    return Response(created.model_dump_json(), media_type="application/json", headers=NO_STORE)


for _path, _name in (
    ("/api/create-setup-intent", "create-setup-intent-get"),
    ("/api/create-payment-intent", "create-payment-intent"),
):
    router.get(
        _path,
        response_model=SetupIntentCreated,
        responses=_documented(
            403,
            404,
            409,
            422,
            502,
            503,
            e405="Not served outside local mode: use POST /api/create-setup-intent",
            e429="Too many card setups from this address or for this e-mail; see Retry-After",
        ),
        deprecated=True,
        name=_name,
        openapi_extra=query_parameters(POD_QUERY),
    )(create_setup_intent_by_get)


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
    return await webhooks.receive_stripe_event(
        services, payload=await request.body(), signature=stripe_signature
    )
