"""Saving a card for a booking: a Customer and a SetupIntent for the pod, once everything
that can refuse has been asked. The session starts later (svc/bookings.py)."""

import logging
from dataclasses import dataclass

from svc import booking_limits, payments_manager, pod_health, recovery, turnstile
from svc.errors import ServiceError
from svc.models.schemas import SetupIntentCreated
from svc.services import Services
from svc.sessions import find_pod

logger = logging.getLogger(__name__)


class PodInUse(ServiceError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(f"Pod {name!r} is in use right now; please try again when it is free.")


@dataclass(frozen=True)
class CardSetupRequest:
    """Who asks to save a card, as the HTTP edge saw them."""

    name: str | None
    pod_id: int | None
    email: str | None
    client_ip: str
    turnstile_token: str | None = None
    reuse_setup_intent_id: str | None = None
    reuse_client_secret: str | None = None


async def create_setup_intent(services: Services, request: CardSetupRequest) -> SetupIntentCreated:
    """A Customer and a SetupIntent for the pod, or the browser's own unconfirmed one.

    Everything that can refuse is asked before a new Customer is made at Stripe: the e-mail,
    the pod, the challenge (Turnstile, when on), then the limits per address and e-mail.
    """
    email = booking_limits.valid_email(request.email) if request.email is not None else None
    pod = await find_pod(services.db, name=request.name, pod_id=request.pod_id)
    if pod.in_use:
        raise PodInUse(pod.name)
    # Whoever owes for a session books nothing new until it is paid.
    await recovery.refuse_if_owing(services, email=email)
    await pod_health.check_bookable(services, pod)
    settings = services.settings
    if settings.uses_turnstile:
        await turnstile.verify(settings, token=request.turnstile_token, remote_ip=request.client_ip)
    setup = None
    if email and request.reuse_setup_intent_id and request.reuse_client_secret:
        setup = await payments_manager.reusable_setup_intent(
            services.stripe,
            setup_intent_id=request.reuse_setup_intent_id,
            client_secret=request.reuse_client_secret,
            pod=pod,
            email=email,
        )
        if setup is not None:
            logger.info("booking.setup_reused pod=%s", pod.name)
    if setup is None:
        await booking_limits.take_booking_slot(
            services.db, settings, ip=request.client_ip, email=email
        )
        setup = await payments_manager.create_setup_intent(services.stripe, pod=pod, email=email)
    return SetupIntentCreated(
        client_secret=setup.client_secret,
        customer_id=setup.customer_id,
        setup_intent_id=setup.setup_intent_id,
    )
