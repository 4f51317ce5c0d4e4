"""Every request to Stripe and Seam, timed, counted and logged at the one place each SDK
sends it: each attempt (the SDKs retry on their own), with the id of the request that
caused it on its log line.

The operation is the method and the path with its ids left out (`POST
/v1/payment_intents/{id}/capture`): a label with ids would add a series for every call.
"""

import logging
from collections.abc import Mapping
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import httpx
import stripe

from svc.metrics import Metrics

logger = logging.getLogger(__name__)


def _failed(status: int) -> bool:
    return status == 429 or status >= 500


def stripe_operation(method: str, url: str) -> str:
    """`POST /v1/payment_intents/{id}/capture` for any PaymentIntent: after the version,
    Stripe's paths alternate a resource and an object's id."""
    version, *rest = urlsplit(url).path.strip("/").split("/")
    parts = [part if n % 2 == 0 else "{id}" for n, part in enumerate(rest)]
    return f"{method.upper()} /{'/'.join([version, *parts])}"


class TimedStripeClient(stripe.AIOHTTPClient):
    """The SDK's aiohttp transport (base.build_client says why that one), timed."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metrics = metrics

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        operation = stripe_operation(method, url)
        started = perf_counter()
        try:
            answer = await super().request_async(method, url, headers, post_data)
        except stripe.APIConnectionError as error:
            seconds = perf_counter() - started
            self._metrics.observe_stripe(operation, seconds, failed=True)
            logger.warning(
                "stripe.call operation=%s error=%s seconds=%.3f",
                operation,
                type(error.__cause__ or error).__name__,
                seconds,
            )
            raise
        seconds = perf_counter() - started
        status = answer[1]
        self._metrics.observe_stripe(operation, seconds, failed=_failed(status))
        logger.info("stripe.call operation=%s status=%s seconds=%.3f", operation, status, seconds)
        return answer


class TimedSeamTransport(httpx.AsyncBaseTransport):
    """Around the transport that reaches Seam, inside the SDK's retries."""

    def __init__(self, metrics: Metrics, transport: httpx.AsyncBaseTransport | None = None):
        self._metrics = metrics
        self._transport = transport or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # Seam's paths name the action (`/access_codes/create`) and carry no ids.
        operation = f"{request.method} {request.url.path}"
        started = perf_counter()
        try:
            response = await self._transport.handle_async_request(request)
        except httpx.TransportError as error:
            seconds = perf_counter() - started
            self._metrics.observe_seam(operation, seconds, failed=True)
            logger.warning(
                "seam.call operation=%s error=%s seconds=%.3f",
                operation,
                type(error).__name__,
                seconds,
            )
            raise
        seconds = perf_counter() - started
        status = response.status_code
        self._metrics.observe_seam(operation, seconds, failed=_failed(status))
        logger.info("seam.call operation=%s status=%s seconds=%.3f", operation, status, seconds)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
