"""The HTTP service: the app, its lifespan, the error handlers and the routes.

Run it as ``uvicorn svc.main:app``.
"""

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, RootModel

from svc import background, bookings, locks, pages, runtime
from svc.database_accessor import Database
from svc.env import ConfigurationError, Settings, load_settings
from svc.errors import ServiceError
from svc.http_guards import BodySizeLimit, CrossOrigin, configure_logging, require_json
from svc.schemas import (
    BookingConfirmed,
    ConfirmBookingRequest,
    EndSessionRequest,
    EndSessionResult,
    ErrorBody,
    Health,
    LockStatus,
    PodPublic,
    SessionPreview,
    SessionStatus,
    SetupIntentCreated,
    WebhookAck,
)
from svc.services import Outbox, Services

logger = logging.getLogger(__name__)

PodList = RootModel[list[PodPublic]]


class MissingParameter(ServiceError):
    status_code = 422


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings.LOG_LEVEL)
    async with AsyncExitStack() as stack:
        services, stand_ins = await runtime.open_services(settings, stack)
        app.state.services = services
        if settings.is_local:
            banner = ["LOCAL MODE: nothing here reaches a real payment, mail or lock service."]
            banner += [f"  {line}" for line in stand_ins] + [f"  open {settings.PUBLIC_URL}/"]
            logger.warning("%s", "\n".join(banner))
        workers = start_background_jobs(services)
        # What the start made (the SDKs, the app, the pool) lives as long as the process:
        # frozen, the collector no longer walks it at every full collection, which otherwise
        # stalls every request in flight for tens of milliseconds (58 ms measured, 3 after).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await stop_workers(workers)


def start_background_jobs(services: Services) -> list[asyncio.Task[None]]:
    interval = services.settings.BACKGROUND_INTERVAL_SECONDS
    jobs = {
        "emails": background.run_periodically(
            "emails",
            lambda: bookings.deliver_all_due_emails(services),
            wake=services.outbox,
            interval=interval,
            quiet=bookings.EMAIL_QUIET_SECONDS,
        ),
        "settlements": background.run_periodically(
            "settlements",
            lambda: bookings.settle_and_end_overdue(services),
            wake=Outbox(),
            interval=interval,
        ),
    }
    if services.seam is not None:
        jobs["locks"] = background.run_periodically(
            "locks",
            lambda: locks.put_on_and_take_off_codes(services),
            wake=services.lock_work,
            interval=interval,
        )
    return [asyncio.create_task(job, name=name) for name, job in jobs.items()]


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


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# Dependencies are coroutines: FastAPI runs a plain function in a worker thread, a hop
# per dependency per request that costs more than the work itself.


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_db(request: Request) -> Database:
    services: Services = request.app.state.services
    return services.db


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
ServicesDep = Annotated[Services, Depends(get_services)]


# The pod and session references are read from the query by hand rather than declared as
# FastAPI parameters: FastAPI inspects every declared parameter's annotation again on
# each request, which cost the preview a fifth of its CPU (measured, see bench/). Their
# OpenAPI description is given explicitly instead (POD_QUERY, SESSION_QUERY).

MAX_POD_ID = 2**63 - 1


def _query(request: Request, *names: str) -> tuple[str, str] | None:
    """The first of `names` present in the query, with its value."""
    for name in names:
        value = request.query_params.get(name)
        if value is not None:
            return name, value
    return None


async def pod_reference(request: Request) -> tuple[str | None, int | None]:
    """The pod as a name (podName, pod_name) or an id (podId, pod_id)."""
    if (given := _query(request, "podId", "pod_id")) is not None:
        name, value = given
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_POD_ID):
            raise MissingParameter(
                f"{name} (query): a pod id is a whole number from 1 to {MAX_POD_ID}."
            )
        return None, int(value)
    if (given := _query(request, "podName", "pod_name")) is not None:
        name, value = given
        if len(value) > 200:
            raise MissingParameter(f"{name} (query): a pod name has at most 200 characters.")
        return value, None
    raise MissingParameter("Give the pod as podName (or pod_name) or podId (or pod_id).")


async def session_reference(request: Request) -> UUID:
    """The session as sessionId (or session_id), the UUID of the e-mailed link."""
    given = _query(request, "sessionId", "session_id")
    if given is None:
        raise MissingParameter("Give the session as sessionId (or session_id).")
    name, value = given
    try:
        return UUID(value)
    except ValueError:
        raise MissingParameter(
            f"{name} (query): a session id is a UUID, like the one in the end-session link."
        ) from None


def _parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_POD_NAME = {"type": "string", "maxLength": 200}
_POD_ID = {"type": "integer", "minimum": 1, "maximum": MAX_POD_ID}
_SESSION_ID = {"type": "string", "format": "uuid"}
POD_QUERY = {
    "parameters": [
        _parameter("podName", "The pod's name.", _POD_NAME),
        _parameter("pod_name", "Same as podName.", _POD_NAME),
        _parameter("podId", "The pod's id.", _POD_ID),
        _parameter("pod_id", "Same as podId.", _POD_ID),
    ]
}
SESSION_QUERY = {
    "parameters": [
        _parameter("sessionId", "The session id from the e-mail.", _SESSION_ID),
        _parameter("session_id", "Same as sessionId.", _SESSION_ID),
    ]
}


EmailQuery = Annotated[
    str | None,
    Query(
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="The customer's e-mail, put on the Stripe Customer.",
    ),
]
PodRef = Annotated[tuple[str | None, int | None], Depends(pod_reference)]
SessionRef = Annotated[UUID, Depends(session_reference)]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "A body that cannot be read, or a webhook without a valid signature",
    },
    403: {"model": ErrorBody, "description": "The client secret does not match"},
    404: {"model": ErrorBody, "description": "Not found"},
    409: {"model": ErrorBody, "description": "Conflicts with the pod's or the card's state"},
    413: {"model": ErrorBody, "description": "The body is too large"},
    415: {"model": ErrorBody, "description": "The body is not JSON"},
    422: {"model": ErrorBody, "description": "Missing or malformed input"},
    502: {"model": ErrorBody, "description": "The payment or smart-lock provider failed"},
    503: {"model": ErrorBody, "description": "A dependency is unavailable; safe to retry"},
}


def json_of(model: BaseModel) -> Response:
    """The model as JSON, serialised once. Returned from the busiest routes: FastAPI would
    otherwise validate the response model a second time before dumping it."""
    return Response(model.model_dump_json(), media_type="application/json")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: ERRORS[code] for code in codes}


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="qwipsvc",
        summary="Quiet work pods rented by the minute.",
        version="1.0.0",
        lifespan=lifespan,
    )
    if settings is None:
        try:
            settings = load_settings()
        except ConfigurationError as error:
            raise SystemExit(f"qwipsvc cannot start: {error}") from None
    app.state.settings = settings
    app.add_middleware(BodySizeLimit)
    app.add_middleware(
        CrossOrigin,
        allow_origins=settings.cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type"],
    )

    @app.exception_handler(ServiceError)
    async def render_service_error(request: Request, error: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def render_validation_error(
        request: Request, error: RequestValidationError
    ) -> JSONResponse:
        problems = []
        for item in error.errors():
            where, *path = [str(part) for part in item["loc"]]
            field = ".".join(path) or where
            problems.append(f"{field} ({where}): {item['msg']}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    add_routes(app)
    pages.install(app)
    return app


def add_routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def get_health() -> Health:
        """Liveness: the process answers."""
        return Health()

    @app.get("/readyz", response_model=Health, responses=errors(503), tags=["operations"])
    async def get_readiness(db: DbDep) -> Health:
        """Readiness: the database answers."""
        await db.ping()
        return Health()

    @app.get("/api/pods", response_model=list[PodPublic], tags=["pods"])
    async def list_pods(db: DbDep) -> Response:
        """All pods, with their price per minute and whether they are in use."""
        return json_of(PodList([PodPublic.of(pod) for pod in await db.list_pods()]))

    @app.get(
        "/api/pod",
        response_model=PodPublic,
        responses=errors(404, 422),
        tags=["pods"],
        openapi_extra=POD_QUERY,
    )
    async def get_pod(request: Request) -> Response:
        """One pod, by name or by id."""
        # Plain calls rather than Depends, as for the preview: the booking page polls it.
        name, pod_id = await pod_reference(request)
        db = await get_db(request)
        return json_of(PodPublic.of(await bookings.find_pod(db, name=name, pod_id=pod_id)))

    @app.get(
        "/api/end-session-preview",
        response_model=SessionPreview,
        responses=errors(404, 422, 503),
        tags=["sessions"],
        openapi_extra=SESSION_QUERY,
    )
    async def preview_session(request: Request) -> Response:
        """The cost of a session so far, or its final cost once ended."""
        # Plain calls rather than Depends on the busiest route (a page polls it every few
        # seconds): FastAPI's dependency solving was a seventh of its CPU.
        session_id = await session_reference(request)
        return json_of(await bookings.preview_session(await get_services(request), session_id))

    @app.get(
        "/api/session-status",
        response_model=SessionStatus,
        responses=errors(404, 422, 503),
        tags=["sessions"],
        openapi_extra=SESSION_QUERY,
    )
    async def get_session_status(services: ServicesDep, session_id: SessionRef) -> SessionStatus:
        """Whether the pod's smart lock has the session's door code yet."""
        return await locks.session_status(services, session_id)

    @app.get(
        "/api/lock-status",
        response_model=LockStatus,
        responses=errors(404, 422, 502, 503),
        tags=["pods"],
        openapi_extra=POD_QUERY,
    )
    async def get_lock_status(services: ServicesDep, pod: PodRef) -> LockStatus:
        """Whether the pod's smart lock is locked and online, as Seam reports it."""
        name, pod_id = pod
        return await locks.lock_status(services, name=name, pod_id=pod_id)

    async def create_setup_intent(
        services: ServicesDep, pod: PodRef, email: EmailQuery = None
    ) -> SetupIntentCreated:
        """Start saving a card for a pod: a Stripe Customer and an off-session SetupIntent."""
        name, pod_id = pod
        return await bookings.create_setup_intent(services, name=name, pod_id=pod_id, email=email)

    for path, deprecated in (
        ("/api/create-setup-intent", False),
        ("/api/create-payment-intent", True),
    ):
        app.get(
            path,
            response_model=SetupIntentCreated,
            responses=errors(404, 409, 422, 502),
            tags=["booking"],
            deprecated=deprecated,
            name=path.rsplit("/", 1)[1],
            openapi_extra=POD_QUERY,
        )(create_setup_intent)

    @app.post(
        "/api/confirm-booking",
        response_model=BookingConfirmed,
        responses=errors(400, 403, 404, 409, 413, 415, 422, 503),
        tags=["booking"],
        dependencies=[Depends(require_json)],
    )
    async def confirm_booking(
        services: ServicesDep, body: ConfirmBookingRequest
    ) -> BookingConfirmed:
        """Start the session once the page has confirmed the card (or find the one started)."""
        return await bookings.confirm_booking(
            services, setup_intent_id=body.setup_intent_id, client_secret=body.client_secret
        )

    @app.post(
        "/webhook/stripe",
        response_model=WebhookAck,
        responses=errors(400, 413, 503),
        tags=["booking"],
    )
    async def receive_stripe_webhook(
        request: Request,
        services: ServicesDep,
        stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
    ) -> WebhookAck:
        """Stripe's events, verified on the raw body: card saved, payment succeeded or failed."""
        return await bookings.handle_webhook(
            services, payload=await request.body(), signature=stripe_signature
        )

    @app.post(
        "/api/end-session",
        response_model=EndSessionResult,
        responses=errors(400, 404, 413, 415, 422, 503),
        tags=["sessions"],
        dependencies=[Depends(require_json)],
    )
    async def end_session(services: ServicesDep, body: EndSessionRequest) -> Response:
        """End a session and charge it, once, however many times it is called."""
        return json_of(await bookings.end_session(services, body.session_id))


app = create_app()
