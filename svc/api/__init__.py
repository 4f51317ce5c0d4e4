"""The JSON API and the health checks: one router per resource.

The app includes each of them itself, the routes that pages poll first: a router included
in another is matched through both on every request, and routes are tried in order.
"""

from fastapi import APIRouter

from svc.api import booking, metrics, operations, pods, recovery, seam, sessions

routers: list[APIRouter] = [
    sessions.polled,
    pods.polled,
    *(r.router for r in (sessions, pods, operations, booking, recovery, seam, metrics)),
]
