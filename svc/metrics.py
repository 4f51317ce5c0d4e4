"""What the service counts, for Prometheus to scrape at GET /metrics.

Each app has a registry of its own (not prometheus_client's global one), made with the app:
several apps in one process (the tests, a replica's CLI) count apart. The counters are this
process's since it started; the gauges are read from the database at each scrape, so every
replica reports the same figures for them.
"""

from collections.abc import Iterator, MutableMapping
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from svc.models.records import ServiceGauges
from svc.types import StartOutcomeKind

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds; the requests that wait on Stripe sit in the upper buckets.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UPSTREAM_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"
"""The route label of a request no route matched: its path is not a label, or anyone could
add series at will."""

# Not a refusal: the same booking answered again.
_NOT_COUNTED = frozenset({StartOutcomeKind.EXISTING, StartOutcomeKind.DUPLICATE})


class Metrics:
    """The app's collectors, on its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.http_requests = Histogram(
            "qwip_http_request_duration_seconds",
            "HTTP requests by method, route template and status, and how long they took.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.bookings_started = Counter(
            "qwip_bookings_started", "Sessions started.", registry=registry
        )
        self.bookings_refused = Counter(
            "qwip_bookings_refused",
            "Saved cards that started no session, by reason.",
            ["reason"],
            registry=registry,
        )
        self.charges = Counter(
            "qwip_charges",
            "Off-session charges at the end, by outcome (a Stripe outage: unavailable).",
            ["outcome"],
            registry=registry,
        )
        self.captures = Counter(
            "qwip_captures",
            "Captures of a booking's hold at the end, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.releases = Counter(
            "qwip_releases",
            "Holds released whole (no session, or below the minimum charge), by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.emails_sent = Counter(
            "qwip_emails_sent",
            "E-mails the mail server took, by kind.",
            ["kind"],
            registry=registry,
        )
        self.emails_failed = Counter(
            "qwip_emails_failed",
            "E-mail attempts that failed, by kind and by what followed (retry, dead).",
            ["kind", "then"],
            registry=registry,
        )
        self.stripe_requests = Histogram(
            "qwip_stripe_request_duration_seconds",
            "Requests to Stripe's API by operation, and how long each attempt took.",
            ["operation"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.stripe_errors = Counter(
            "qwip_stripe_errors",
            "Requests to Stripe that failed: unreachable, or answered 429 or 5xx.",
            ["operation"],
            registry=registry,
        )
        self.seam_requests = Histogram(
            "qwip_seam_request_duration_seconds",
            "Requests to Seam's API by operation, and how long each attempt took.",
            ["operation"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.seam_errors = Counter(
            "qwip_seam_errors",
            "Requests to Seam that failed: unreachable, or answered 429 or 5xx.",
            ["operation"],
            registry=registry,
        )
        self.webhook_events = Counter(
            "qwip_webhook_events",
            "Webhook events received, by source, event type and outcome.",
            ["source", "type", "outcome"],
            registry=registry,
        )
        self.database = DatabaseGauges()
        registry.register(self.database)
        # The HTTP histogram's children, found once per label set: labels() validates and
        # locks at every call, which the busiest routes would pay on each request.
        self._requests: dict[tuple[str, str, int], Any] = {}

    # Requests

    def observe_request(self, scope: MutableMapping[str, Any], status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED
        method = scope["method"]
        if method not in METHODS:
            method = "other"
        key = (method, template, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.http_requests.labels(method, template, str(status))
        child.observe(perf_counter() - started)

    # Bookings and money

    def count_booking(self, outcome: StartOutcomeKind) -> None:
        if outcome is StartOutcomeKind.STARTED:
            self.bookings_started.inc()
        elif outcome not in _NOT_COUNTED:
            self.bookings_refused.labels(outcome.value).inc()

    def count_charge(self, outcome: str) -> None:
        self.charges.labels(outcome).inc()

    def count_capture(self, outcome: str) -> None:
        self.captures.labels(outcome).inc()

    def count_release(self, outcome: str) -> None:
        self.releases.labels(outcome).inc()

    # Webhooks

    def count_webhook(self, source: str, event_type: str, outcome: str) -> None:
        self.webhook_events.labels(source, event_type, outcome).inc()

    # Calls to providers

    def observe_stripe(self, operation: str, seconds: float, *, failed: bool) -> None:
        self.stripe_requests.labels(operation).observe(seconds)
        if failed:
            self.stripe_errors.labels(operation).inc()

    def observe_seam(self, operation: str, seconds: float, *, failed: bool) -> None:
        self.seam_requests.labels(operation).observe(seconds)
        if failed:
            self.seam_errors.labels(operation).inc()

    # The page

    def render(self, gauges: ServiceGauges | None) -> bytes:
        """The text format, with the database's gauges when it answered (else without)."""
        # No await between the two: a concurrent scrape cannot interleave its gauges.
        self.database.latest = gauges
        return generate_latest(self.registry)


class DatabaseGauges(Collector):
    """What the database says at the scrape; nothing (rather than stale figures) when it
    did not answer."""

    def __init__(self) -> None:
        self.latest: ServiceGauges | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauges = self.latest
        if gauges is None:
            return
        yield GaugeMetricFamily(
            "qwip_open_sessions", "Sessions started and not ended.", value=gauges.open_sessions
        )
        yield GaugeMetricFamily(
            "qwip_owed_pence",
            "Pence owed: ended sessions whose payment failed or awaits the customer.",
            value=gauges.owed_pence,
        )
        yield GaugeMetricFamily(
            "qwip_emails_waiting", "E-mails queued and not sent yet.", value=gauges.emails_waiting
        )
        yield GaugeMetricFamily(
            "qwip_emails_dead",
            "E-mails set aside for good (dead letters).",
            value=gauges.emails_dead,
        )
