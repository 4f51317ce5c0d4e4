"""The JSON API and the health checks: one router per resource."""

from fastapi import APIRouter

from svc.api import booking, metrics, operations, pods, recovery, seam, sessions

router = APIRouter()
for _resource in (operations, pods, sessions, booking, recovery, seam, metrics):
    router.include_router(_resource.router)
