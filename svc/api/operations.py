"""Liveness and readiness, for the platform's health checks."""

from fastapi import APIRouter

from svc.api.deps import DbDep, errors
from svc.models.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def get_health() -> Health:
    """Liveness: the process answers."""
    return Health()


@router.get("/readyz", response_model=Health, responses=errors(503))
async def get_readiness(db: DbDep) -> Health:
    """Readiness: the database answers."""
    await db.ping()
    return Health()
