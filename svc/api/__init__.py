"""The JSON API and the health checks: one router per resource."""

from fastapi import APIRouter

from svc.api import booking, operations, pods, seam, sessions

router = APIRouter()
for _resource in (operations, pods, sessions, booking, seam):
    router.include_router(_resource.router)
