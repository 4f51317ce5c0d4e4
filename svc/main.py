"""The HTTP service: the app, its lifespan, the error handlers and the routers.

Run it as ``uvicorn svc.main:app``.
"""

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from svc import (
    api,
    background,
    console,
    email_delivery,
    holds,
    locks,
    pages,
    reminders,
    runtime,
    sessions,
)
from svc.api.guards import BodySizeLimit, CrossOrigin, StrictTransportSecurity
from svc.api.observe import ObserveRequests
from svc.env import ConfigurationError, Settings, load_settings
from svc.errors import ServiceError
from svc.logs import configure_logging
from svc.metrics import Metrics
from svc.services import Outbox, Services

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    async with AsyncExitStack() as stack:
        services, stand_ins = await runtime.open_services(settings, stack, app.state.metrics)
        app.state.services = services
        if settings.is_local:
            banner = ["LOCAL MODE: nothing here reaches a real payment, mail or lock service."]
            banner += [f"  {line}" for line in stand_ins + console.banner_lines(app, settings)]
            banner += [f"  open {settings.PUBLIC_URL}/"]
            logger.warning("%s", "\n".join(banner))
        workers = start_background_jobs(services)
        app.state.workers = workers
        # What the start made (the SDKs, the app, the pool) lives as long as the process:
        # frozen, the collector no longer walks it at every full collection, which would
        # otherwise stall every request in flight while it does.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await stop_workers([worker.task for worker in workers if worker.task is not None])


def start_background_jobs(services: Services) -> list[background.Worker]:
    """E-mails as soon as they are queued; pending charges, overdue sessions, reminders and
    abandoned card holds every round; codes onto and off the locks, and backup codes for
    codes the locks are slow to set, when smart locks are on.

    Each its own job, so that one failing (a charge that raises, say) never skips another:
    an overdue session is ended even while the settlement round keeps failing."""
    interval = services.settings.BACKGROUND_INTERVAL_SECONDS
    # name: (one round, what wakes it early, how long it lingers once woken)
    jobs: dict[str, tuple[Callable[[], Awaitable[object]], Outbox, float]] = {
        "emails": (
            lambda: email_delivery.deliver_all_due_emails(services),
            services.outbox,
            email_delivery.EMAIL_QUIET_SECONDS,
        ),
        "settlements": (lambda: sessions.settle_unsettled_sessions(services), Outbox(), 0.0),
        "overdue": (lambda: sessions.end_overdue_sessions(services), Outbox(), 0.0),
        "reminders": (
            lambda: reminders.remind_sessions_near_the_limit(services),
            Outbox(),
            0.0,
        ),
        "holds": (lambda: holds.release_abandoned_holds(services), Outbox(), 0.0),
    }
    if services.seam is not None:
        jobs["locks"] = (
            lambda: locks.put_on_and_take_off_codes(services),
            services.lock_work,
            0.0,
        )
        jobs["backup_codes"] = (lambda: locks.replace_unset_codes(services), Outbox(), 0.0)
    workers = []
    for name, (job, wake, quiet) in jobs.items():
        worker = background.Worker(name, interval)
        worker.task = asyncio.create_task(
            background.run_periodically(
                name, job, wake=wake, interval=interval, quiet=quiet, worker=worker
            ),
            name=name,
        )
        workers.append(worker)
    return workers


async def stop_workers(workers: list[asyncio.Task[None]]) -> None:
    """Cancel the background workers and wait until each has ended.

    On Python 3.11, asyncio.wait_for (which aiosmtplib uses) drops a cancellation that lands
    as the awaited result arrives, and the worker carries on: so it is sent again.
    """
    while pending := [worker for worker in workers if not worker.done()]:
        for worker in pending:
            worker.cancel()
        await asyncio.wait(pending, timeout=1)
    for worker in workers:
        if not worker.cancelled() and worker.exception() is not None:
            logger.error(
                "background.crashed worker=%s", worker.get_name(), exc_info=worker.exception()
            )


async def render_service_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServiceError)
    # Some refusals say more than words: the hold's 402s tell the page what to do next.
    extra = getattr(error, "extra", None) or {}
    return JSONResponse({"detail": error.message, **extra}, status_code=error.status_code)


async def render_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = []
    for item in error.errors():
        where, *path = [str(part) for part in item["loc"]]
        field = ".".join(path) or where
        problems.append(f"{field} ({where}): {item['msg']}")
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="qwipsvc",
        summary="Quiet work pods rented by the minute.",
        version="1.0.0",
        lifespan=lifespan,
        # The service's metrics are Prometheus's (/metrics) and its logs its own: FastAPI's
        # OpenTelemetry bridge would otherwise ask on every request whether a provider is
        # configured.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    if settings is None:
        try:
            settings = load_settings()
        except ConfigurationError as error:
            raise SystemExit(f"qwipsvc cannot start: {error}") from None
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.add_middleware(BodySizeLimit)
    app.add_middleware(
        CrossOrigin,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type"],
    )
    if not settings.is_local:
        # Outermost, so the refusals of the middlewares above carry it too.
        app.add_middleware(StrictTransportSecurity)
    # Outermost: every answer, refusals included, carries its X-Request-ID and is counted.
    app.add_middleware(ObserveRequests, metrics=app.state.metrics)
    app.add_exception_handler(ServiceError, render_service_error)
    app.add_exception_handler(RequestValidationError, render_validation_error)
    # The API's routes go into the app's own router, those that pages poll first: the
    # resource routers made them whole (path, tags, route class), and FastAPI would match
    # the routes of an included router twice on every request (to choose the router, then
    # within it), a twelfth of the polled routes' CPU.
    app.router.routes.extend(route for router in api.routers for route in router.routes)
    pages.install(app)
    console.install(app, settings)
    return app


app = create_app()
