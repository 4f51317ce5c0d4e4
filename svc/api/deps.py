"""What the routes take from a request, declared once: the services, and the pod and
session a query names.

Dependencies are coroutines: FastAPI runs a plain function in a worker thread, a hop per
dependency per request that costs more than the work itself.

The pod and session references are read from the query by hand rather than declared as
FastAPI parameters: FastAPI inspects every declared parameter's annotation again on each
request, which on the busiest routes costs more than the work itself (bench/history.md).
Their OpenAPI description is given explicitly instead (POD_QUERY, SESSION_QUERY), and every
route that takes a pod or a session reads it through the functions here.
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, cast
from uuid import UUID

from fastapi import Depends, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from svc.database_accessor import Database
from svc.errors import ServiceError
from svc.models.schemas import ErrorBody
from svc.services import Services

MAX_POD_ID = 2**63 - 1
MAX_POD_NAME = 200


class MissingParameter(ServiceError):
    status_code = 422


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_db(request: Request) -> Database:
    services: Services = request.app.state.services
    return services.db


ServicesDep = Annotated[Services, Depends(get_services)]
DbDep = Annotated[Database, Depends(get_db)]


def query_value(request: Request, *names: str) -> tuple[str, str] | None:
    """The first of `names` present in the query, with its value."""
    for name in names:
        value = request.query_params.get(name)
        if value is not None:
            return name, value
    return None


def pod_reference(request: Request) -> tuple[str | None, int | None]:
    """The pod as a name (podName, pod_name) or an id (podId, pod_id)."""
    if (given := query_value(request, "podId", "pod_id")) is not None:
        name, value = given
        if not (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_POD_ID):
            raise MissingParameter(
                f"{name} (query): a pod id is a whole number from 1 to {MAX_POD_ID}."
            )
        return None, int(value)
    if (given := query_value(request, "podName", "pod_name")) is not None:
        name, value = given
        if len(value) > MAX_POD_NAME:
            raise MissingParameter(
                f"{name} (query): a pod name has at most {MAX_POD_NAME} characters."
            )
        if "\x00" in value:
            # Postgres text cannot hold it: refused here, not failed in the query.
            raise MissingParameter(f"{name} (query): a pod name cannot contain a NUL character.")
        return value, None
    raise MissingParameter("Give the pod as podName (or pod_name) or podId (or pod_id).")


def session_reference(request: Request) -> UUID:
    """The session as sessionId (or session_id), the UUID of the e-mailed link."""
    given = query_value(request, "sessionId", "session_id")
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


_POD_NAME = {"type": "string", "maxLength": MAX_POD_NAME}
_POD_ID = {"type": "integer", "minimum": 1, "maximum": MAX_POD_ID}
_SESSION_ID = {"type": "string", "format": "uuid"}
POD_QUERY = [
    _parameter("podName", "The pod's name.", _POD_NAME),
    _parameter("pod_name", "Same as podName.", _POD_NAME),
    _parameter("podId", "The pod's id.", _POD_ID),
    _parameter("pod_id", "Same as podId.", _POD_ID),
]
SESSION_QUERY = [
    _parameter("sessionId", "The session id from the e-mail.", _SESSION_ID),
    _parameter("session_id", "Same as sessionId.", _SESSION_ID),
]


def query_parameters(*groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI description of the query parameters a route reads by hand."""
    return {"parameters": [parameter for group in groups for parameter in group]}


_ERRORS: dict[int, str] = {
    400: "A body that cannot be read, or a webhook without a valid signature",
    403: "The client secret does not match",
    404: "Not found",
    409: "Conflicts with the pod's or the card's state",
    413: "The body is too large",
    415: "The body is not JSON",
    422: "Missing or malformed input",
    502: "The payment or smart-lock provider failed",
    503: "A dependency is unavailable; safe to retry",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents, each `{"detail": …}`."""
    return {code: {"model": ErrorBody, "description": _ERRORS[code]} for code in codes}


class DirectRoute(APIRoute):
    """A route whose endpoint reads its Request and returns its whole Response.

    FastAPI documents it as any other (its query in openapi_extra, its answer in
    response_model) and routes to it as any other, but calls the endpoint without its
    request handler: no dependencies to solve, nothing to validate on the way in or out,
    none of which such an endpoint has. On the routes that pages poll, that handler cost
    more CPU than the endpoint's own work (bench/history.md)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)


def json_of(model: BaseModel) -> Response:
    """The model as JSON, serialised once. Returned from the busiest routes: FastAPI would
    otherwise validate the response model a second time before dumping it."""
    return Response(model.model_dump_json(), media_type="application/json")
