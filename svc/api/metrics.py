"""GET /metrics: the service's counters and gauges, in Prometheus's text format."""

import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from svc import metrics
from svc.api.deps import ServicesDep
from svc.database_accessor import DatabaseUnavailable
from svc.errors import ServiceError
from svc.services import Services

logger = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


class MetricsTokenRequired(ServiceError):
    status_code = 401

    def __init__(self) -> None:
        super().__init__("GET /metrics needs Authorization: Bearer <METRICS_TOKEN>.")


async def require_metrics_token(request: Request, services: ServicesDep) -> Services:
    """With METRICS_TOKEN set, the request must carry it as its bearer token."""
    token = services.settings.METRICS_TOKEN
    if token is None:
        return services
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # compare_digest: how long the comparison takes says nothing of the token.
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.strip().encode(), token.get_secret_value().encode()
    ):
        raise MetricsTokenRequired()
    return services


@router.get("/metrics", include_in_schema=False)
async def get_metrics(
    services: Annotated[Services, Depends(require_metrics_token)],
) -> Response:
    """Prometheus's text format; the gauges read from the database at each scrape."""
    try:
        gauges = await services.db.get_service_gauges()
    except DatabaseUnavailable:
        # The counters are still worth scraping; the gauges are left out, not made up.
        logger.warning("metrics.gauges_unavailable")
        gauges = None
    return Response(services.metrics.render(gauges), media_type=metrics.CONTENT_TYPE)
