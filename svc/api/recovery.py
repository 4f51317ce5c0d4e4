"""Paying an owed session: the pay page's API."""

from fastapi import APIRouter, Depends

from svc import recovery
from svc.api.deps import ServicesDep, errors
from svc.api.guards import require_json
from svc.models.recovery import (
    PaySessionCard,
    PaySessionCardRequest,
    PaySessionRequest,
    PaySessionResult,
)

router = APIRouter(tags=["payments"])


@router.post(
    "/api/pay-session",
    response_model=PaySessionResult,
    responses=errors(400, 404, 409, 413, 415, 422, 503),
    dependencies=[Depends(require_json)],
)
async def pay_session(services: ServicesDep, body: PaySessionRequest) -> PaySessionResult:
    """Pay what an ended session owes (its charge failed), once however often it is asked."""
    return await recovery.pay_session(services, body)


@router.post(
    "/api/pay-session-card",
    response_model=PaySessionCard,
    responses=errors(400, 404, 409, 413, 415, 422, 503),
    dependencies=[Depends(require_json)],
)
async def create_pay_session_card(
    services: ServicesDep, body: PaySessionCardRequest
) -> PaySessionCard:
    """A SetupIntent to pay an owed session with a card other than the saved one."""
    return await recovery.create_card_setup(services, body.session_id)
