"""The console's pages and forms. Each page checks the cookie first (no cookie, or one not
signed in: to the sign-in page); each form its CSRF token (refused: 403). The pages are
rendered like the customer pages, with the same headers and Content-Security-Policy."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from svc import operator
from svc.api.deps import ServicesDep
from svc.booking_limits import client_ip
from svc.console.auth import COOKIE, SESSION_SECONDS, ConsoleAuth, Visitor, new_visitor
from svc.console.chart import bar_chart
from svc.console.refund_form import refund_from_form
from svc.console.sign_in import sign_in
from svc.errors import ServiceError
from svc.models.operator import SessionDetails
from svc.models.records import Pod, SessionRecord
from svc.money import money_summary
from svc.pages import html_page, render
from svc.services import Services
from svc.sessions import session_cost_pence
from svc.utils import elapsed_seconds

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/admin", include_in_schema=False)

FILTERS = (
    ("", "All"),
    ("open", "Open"),
    ("owed", "Owed"),
    ("refunded", "Refunded"),
    ("disputed", "Disputed"),
)
# What a page says after an action it redirected from (never text from the request).
DONE = {
    "ended": "Session ended.",
    "waived": "Session ended without charge.",
    "resent": "The access code was sent again.",
    "refunded": "Refund made.",
}
ACTIONS = ("end", "end-without-charge", "resend-code", "refund")
MAX_FORM_FIELD = 500
MAX_EMAIL = 320


def console(request: Request) -> ConsoleAuth:
    """The console's keys; a 404 (as for any unknown address) when the console is off."""
    auth: ConsoleAuth | None = request.app.state.console
    if auth is None:
        raise HTTPException(status_code=404)
    return auth


def visitor_of(request: Request, auth: ConsoleAuth) -> Visitor | None:
    return auth.read_cookie(request.cookies.get(COOKIE))


def set_cookie(response: Response, auth: ConsoleAuth, visitor: Visitor) -> Response:
    response.set_cookie(
        COOKIE,
        auth.cookie(visitor),
        max_age=SESSION_SECONDS,
        path="/admin",
        secure=auth.secure_cookie,
        httponly=True,
        samesite="strict",
    )
    return response


def page(
    services: Services,
    auth: ConsoleAuth,
    visitor: Visitor,
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    settings = services.settings
    body = render(
        f"admin/{template}",
        settings=settings,
        csrf_token=auth.csrf_token(visitor),
        timezone=settings.timezone,
        **context,
    )
    return html_page(body, status_code=status_code)


def to_sign_in() -> Response:
    return RedirectResponse("/admin/sign-in", status_code=303)


def refused(services: Services) -> Response:
    body = render(
        "not_found.html",
        settings=services.settings,
        title="Form refused",
        message="This form was not sent from your console page, or your sign-in has "
        "expired. Open the console again and repeat what you did.",
    )
    return html_page(body, status_code=403)


async def posted(
    request: Request, auth: ConsoleAuth, *, signed_in: bool = True
) -> tuple[Visitor, dict[str, str]] | None:
    """The visitor and the form's fields, when the cookie checks out and the form carries
    its CSRF token; None otherwise."""
    visitor = visitor_of(request, auth)
    if visitor is None or (signed_in and not visitor.signed_in):
        return None
    form = await request.form()
    fields = {key: value[:MAX_FORM_FIELD] for key, value in form.items() if isinstance(value, str)}
    if not auth.csrf_matches(visitor, fields.get("csrf_token")):
        logger.warning("console.csrf_refused")
        return None
    return visitor, fields


# Signing in and out


@router.get("/sign-in")
async def show_sign_in(request: Request, services: ServicesDep) -> Response:
    auth = console(request)
    visitor = visitor_of(request, auth)
    if visitor is not None and visitor.signed_in:
        return RedirectResponse("/admin", status_code=303)
    visitor = visitor or new_visitor(signed_in=False)
    response = page(services, auth, visitor, "sign_in.html")
    return set_cookie(response, auth, visitor)


@router.post("/sign-in")
async def submit_sign_in(request: Request, services: ServicesDep) -> Response:
    auth = console(request)
    form = await posted(request, auth, signed_in=False)
    if form is None:
        return refused(services)
    visitor, fields = form
    address = client_ip(
        request.client.host if request.client else None,
        request.headers.getlist("x-forwarded-for"),
        forwarded_allow_ips=services.settings.FORWARDED_ALLOW_IPS,
    )
    outcome = await sign_in(
        services.db, auth, password=fields.get("password", ""), client_ip=address
    )
    if outcome is None:
        # A new nonce: a cookie planted before sign-in is worth nothing after it.
        response = RedirectResponse("/admin", status_code=303)
        return set_cookie(response, auth, new_visitor(signed_in=True))
    if outcome:
        minutes = -(-outcome // 60)
        limited = page(
            services,
            auth,
            visitor,
            "sign_in.html",
            status_code=429,
            error=f"Too many wrong passwords from this address. Try again in {minutes} "
            f"minute{'' if minutes == 1 else 's'}.",
        )
        limited.headers["Retry-After"] = str(outcome)
        return limited
    return page(services, auth, visitor, "sign_in.html", status_code=401, error="Wrong password.")


@router.post("/sign-out")
async def sign_out(request: Request, services: ServicesDep) -> Response:
    auth = console(request)
    if await posted(request, auth) is None:
        return refused(services)
    response = RedirectResponse("/admin/sign-in", status_code=303)
    response.delete_cookie(
        COOKIE, path="/admin", secure=auth.secure_cookie, httponly=True, samesite="strict"
    )
    return response


# Pages


@dataclass(frozen=True, slots=True)
class PodRow:
    pod: Pod
    open: SessionDetails | None

    @property
    def elapsed(self) -> int:
        assert self.open is not None
        session = self.open.session
        return elapsed_seconds(session.start_time, session.now)

    @property
    def cost_pence(self) -> int:
        assert self.open is not None
        return session_cost_pence(self.open.session)

    @property
    def battery(self) -> str | None:
        """The lock's battery in percent, when Seam said."""
        level = self.pod.lock_battery_level
        return None if level is None else f"{round(level * 100)}%"


@router.get("")
async def show_overview(request: Request, services: ServicesDep) -> Response:
    auth = console(request)
    visitor = visitor_of(request, auth)
    if visitor is None or not visitor.signed_in:
        return to_sign_in()
    pods = await services.db.list_pods()
    open_sessions = {
        details.session.pod_id: details
        for details in await services.db.list_session_details(open_only=True)
    }
    rows = [PodRow(pod, open_sessions.get(pod.id)) for pod in pods]
    return page(services, auth, visitor, "overview.html", rows=rows)


def _elapsed(session: SessionRecord) -> int:
    return elapsed_seconds(session.start_time, session.end_time or session.now)


@router.get("/sessions")
async def show_sessions(request: Request, services: ServicesDep) -> Response:
    auth = console(request)
    visitor = visitor_of(request, auth)
    if visitor is None or not visitor.signed_in:
        return to_sign_in()
    show = request.query_params.get("show", "")
    show = show if show in dict(FILTERS) else ""
    email = request.query_params.get("email", "").strip()[:MAX_EMAIL] or None
    found = await services.db.list_session_details(
        open_only=show == "open",
        owed_only=show == "owed",
        refunded_only=show == "refunded",
        disputed_only=show == "disputed",
        email=email,
    )
    return page(
        services,
        auth,
        visitor,
        "sessions.html",
        filters=FILTERS,
        show=show,
        email=email,
        found=found,
        elapsed=_elapsed,
        cost=session_cost_pence,
    )


def _session_id(raw: str) -> UUID | None:
    try:
        return UUID(raw)
    except ValueError:
        return None


async def session_page(
    services: Services,
    auth: ConsoleAuth,
    visitor: Visitor,
    raw_id: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    session_id = _session_id(raw_id)
    details = await services.db.get_session_details(session_id) if session_id else None
    if session_id is None or details is None:
        body = render(
            "not_found.html",
            settings=services.settings,
            title="Session not found",
            message="There is no session with this id.",
        )
        return html_page(body, status_code=404)
    story = await operator.session_story(services.db, session_id)
    money = await services.db.get_session_refunds(session_id)
    return page(
        services,
        auth,
        visitor,
        "session.html",
        status_code=status_code,
        details=story.details,
        timeline=story.timeline,
        cost_pence=session_cost_pence(story.details.session),
        refundable_pence=money.refundable_pence if money else 0,
        **context,
    )


@router.get("/sessions/{raw_id}")
async def show_session(raw_id: str, request: Request, services: ServicesDep) -> Response:
    auth = console(request)
    visitor = visitor_of(request, auth)
    if visitor is None or not visitor.signed_in:
        return to_sign_in()
    done = DONE.get(request.query_params.get("done", ""))
    pence = request.query_params.get("pence", "")[:9]
    refunded = request.query_params.get("done") == "refunded" and pence.isdigit()
    refunded_now = int(pence) if refunded else None
    return await session_page(
        services, auth, visitor, raw_id, message=done, refunded_now=refunded_now
    )


@router.post("/sessions/{raw_id}/{action}")
async def act_on_session(
    raw_id: str, action: str, request: Request, services: ServicesDep
) -> Response:
    """end, end-without-charge, resend-code, refund: then back to the session's page."""
    auth = console(request)
    form = await posted(request, auth)
    if form is None:
        return refused(services)
    visitor, fields = form
    session_id = _session_id(raw_id)
    if session_id is None or action not in ACTIONS:
        raise HTTPException(status_code=404)
    extra = ""
    try:
        if action == "end":
            await operator.end_session(services, session_id)
            done = "ended"
        elif action == "end-without-charge":
            reason = fields.get("reason", "").strip() or operator.DEFAULT_NO_CHARGE_REASON
            await operator.end_without_charge(services, session_id, reason=reason)
            done = "waived"
        elif action == "refund":
            extra = f"&pence={await refund_from_form(services, session_id, fields)}"
            done = "refunded"
        else:
            await operator.resend_access_code(services, session_id, now=datetime.now(UTC))
            done = "resent"
    except ServiceError as error:
        return await session_page(
            services, auth, visitor, raw_id, status_code=error.status_code, error=error.message
        )
    return RedirectResponse(f"/admin/sessions/{session_id}?done={done}{extra}", status_code=303)


@router.get("/money")
async def show_money(request: Request, services: ServicesDep) -> Response:
    auth = console(request)
    visitor = visitor_of(request, auth)
    if visitor is None or not visitor.signed_in:
        return to_sign_in()
    summary = await money_summary(services.db, services.settings, now=datetime.now(UTC))
    return page(
        services, auth, visitor, "money.html", summary=summary, chart=bar_chart(summary.days)
    )
