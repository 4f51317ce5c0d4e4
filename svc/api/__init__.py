"""The JSON API and the health checks: one router per resource."""

from fastapi import APIRouter

from svc.api import booking, operations, pods, recovery, sessions

router = APIRouter()
for _resource in (operations, pods, sessions, booking, recovery):
    router.include_router(_resource.router)
