"""A session once started: its running cost, its door code, and its end."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from svc import locks, sessions
from svc.api.deps import (
    SESSION_QUERY,
    DirectRoute,
    ServicesDep,
    errors,
    get_services,
    json_of,
    query_parameters,
    session_reference,
)
from svc.api.guards import require_json
from svc.models.schemas import EndSessionRequest, EndSessionResult, SessionPreview, SessionStatus

router = APIRouter(tags=["sessions"])
# The route the session page polls, served directly (deps.DirectRoute).
polled = APIRouter(tags=["sessions"], route_class=DirectRoute)


@polled.get(
    "/api/end-session-preview",
    response_model=SessionPreview,
    responses=errors(404, 422, 503),
    openapi_extra=query_parameters(SESSION_QUERY),
)
async def preview_session(request: Request) -> Response:
    """The cost of a session so far, or its final cost once ended."""
    # The busiest route (the session page polls it every few seconds): it reads its query
    # and answers its JSON itself, and is served without FastAPI's request handler.
    session_id = session_reference(request)
    return json_of(await sessions.preview_session(await get_services(request), session_id))


@router.get(
    "/api/session-status",
    response_model=SessionStatus,
    responses=errors(404, 422, 503),
    openapi_extra=query_parameters(SESSION_QUERY),
)
async def get_session_status(request: Request) -> SessionStatus:
    """Whether the pod's smart lock has the session's door code yet."""
    session_id = session_reference(request)
    return await locks.session_status(await get_services(request), session_id)


@router.post(
    "/api/end-session",
    response_model=EndSessionResult,
    responses=errors(400, 404, 413, 415, 422, 503),
    dependencies=[Depends(require_json)],
)
async def end_session(services: ServicesDep, body: EndSessionRequest) -> Response:
    """End a session and charge it, once, however many times it is called."""
    return json_of(await sessions.end_session(services, body.session_id))
