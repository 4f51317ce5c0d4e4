"""Seam's webhook: what the locks did with the codes, their unlocks and their health."""

from fastapi import APIRouter, Request

from svc import webhooks
from svc.api.deps import ServicesDep, errors
from svc.models.schemas import WebhookAck

router = APIRouter(tags=["locks"])


@router.post("/webhook/seam", response_model=WebhookAck, responses=errors(400, 413, 503))
async def receive_seam_webhook(request: Request, services: ServicesDep) -> WebhookAck:
    """Seam's events, verified on the raw body (Svix's svix-id, svix-timestamp and
    svix-signature headers, at most 5 minutes old): a code set on its lock or not, an
    unlock by a session's code, a lock offline or back, its battery, tampering."""
    return await webhooks.receive_seam_event(
        services, payload=await request.body(), headers=request.headers
    )
