"""Liveness and readiness, for the platform's health checks."""

from fastapi import APIRouter, Request

from svc import background
from svc.api.deps import DbDep, errors
from svc.models.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def get_health() -> Health:
    """Liveness: the process answers."""
    return Health()


@router.get("/readyz", response_model=Health, responses=errors(503))
async def get_readiness(request: Request, db: DbDep) -> Health:
    """Readiness: the database answers, and every background worker runs (503 naming any
    that stopped or is stuck)."""
    await db.ping()
    background.check_workers(getattr(request.app.state, "workers", ()))
    return Health()
