"""The pods: the list, one pod, and its smart lock."""

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import RootModel

from svc import locks, sessions
from svc.api.deps import (
    POD_QUERY,
    SESSION_QUERY,
    DbDep,
    DirectRoute,
    errors,
    get_db,
    get_services,
    json_of,
    pod_reference,
    query_parameters,
    session_reference,
)
from svc.models.schemas import ErrorBody, LockStatus, PodPublic

router = APIRouter(tags=["pods"])
# The route the booking page polls, served directly (deps.DirectRoute).
polled = APIRouter(tags=["pods"], route_class=DirectRoute)

PodList = RootModel[list[PodPublic]]


@router.get("/api/pods", response_model=list[PodPublic])
async def list_pods(db: DbDep) -> Response:
    """All pods, with their price per minute and whether they are in use."""
    return json_of(PodList([PodPublic.of(pod) for pod in await db.list_pods()]))


@polled.get(
    "/api/pod",
    response_model=PodPublic,
    responses=errors(404, 422),
    openapi_extra=query_parameters(POD_QUERY),
)
async def get_pod(request: Request) -> Response:
    """One pod, by name or by id."""
    # Reads its query and answers its JSON itself: the booking page polls it.
    name, pod_id = pod_reference(request)
    db = await get_db(request)
    return json_of(PodPublic.of(await sessions.find_pod(db, name=name, pod_id=pod_id)))


@router.get(
    "/api/lock-status",
    response_model=LockStatus,
    responses={
        **errors(404, 422, 502, 503),
        403: {"model": ErrorBody, "description": "No open session of this pod with that id"},
    },
    openapi_extra=query_parameters(POD_QUERY, SESSION_QUERY),
)
async def get_lock_status(request: Request) -> LockStatus:
    """Whether the pod's smart lock is locked and online, for the holder of its open session."""
    name, pod_id = pod_reference(request)
    session_id = session_reference(request)
    return await locks.lock_status(
        await get_services(request), name=name, pod_id=pod_id, session_id=session_id
    )
