"""The built-in pages: the pod list, a pod's booking page and the end-session page.

Server-rendered HTML (Jinja2 templates in `svc/templates/`, autoescaped) plus small
vanilla JavaScript files in `svc/static/` that talk to the JSON API. No build step and no
inline script, so the Content-Security-Policy can allow scripts only from this service and
the Stripe.js origin in use.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from svc import recovery, sessions, templating
from svc.api.deps import ServicesDep, query_value
from svc.env import Settings
from svc.models.records import Pod, SessionRecord
from svc.models.schemas import SessionPreview
from svc.services import Services
from svc.utils import compute_hold_pence

STATIC_DIR = Path(__file__).parent / "static"

REAL_STRIPE_JS = "https://js.stripe.com/v3/"
STRIPE_TEST_CARD = "4242 4242 4242 4242"
TURNSTILE_ORIGIN = "https://challenges.cloudflare.com"
TURNSTILE_SCRIPT = f"{TURNSTILE_ORIGIN}/turnstile/v0/api.js?render=explicit"

# How often a page refreshes what it shows while it is open (seconds); the scripts read these.
POD_LIST_REFRESH_SECONDS = 3
SESSION_REFRESH_SECONDS = 2


@dataclass(frozen=True)
class StripeJs:
    """Where the booking page loads Stripe.js from, and which origins that script needs."""

    script_url: str
    publishable_key: str
    script_origins: tuple[str, ...]
    connect_origins: tuple[str, ...]
    frame_origins: tuple[str, ...]
    is_emulator: bool


def stripe_js(settings: Settings) -> StripeJs:
    """Real Stripe.js, or the emulator's own when the API is pointed elsewhere.

    Real Stripe.js always talks to api.stripe.com, so with STRIPE_API_BASE set (localstripe)
    only the emulator's fake Stripe.js, served at `<base>/js.stripe.com/v3/`, can confirm
    the card with the same server the service uses.
    """
    base = settings.stripe_api_base
    if base is None:
        return StripeJs(
            script_url=REAL_STRIPE_JS,
            publishable_key=settings.stripe_publishable_key,
            # Stripe's documented needs for Elements; nothing else is allowed.
            script_origins=("https://js.stripe.com", "https://*.js.stripe.com"),
            connect_origins=("https://api.stripe.com",),
            frame_origins=(
                "https://js.stripe.com",
                "https://*.js.stripe.com",
                "https://hooks.stripe.com",
            ),
            is_emulator=False,
        )
    parts = urlsplit(base)
    origin = f"{parts.scheme}://{parts.netloc}"
    return StripeJs(
        script_url=f"{base}/js.stripe.com/v3/",
        publishable_key=settings.stripe_publishable_key,
        script_origins=(origin,),
        connect_origins=(origin,),
        frame_origins=(origin,),
        is_emulator=True,
    )


def content_security_policy(stripe: StripeJs | None = None) -> str:
    """Only this service, plus the Stripe origins on the one page that takes a card."""
    script = ["'self'", *(stripe.script_origins if stripe else ())]
    connect = ["'self'", *(stripe.connect_origins if stripe else ())]
    frame = list(stripe.frame_origins) if stripe else ["'none'"]
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {' '.join(script)}",
            f"connect-src {' '.join(connect)}",
            f"frame-src {' '.join(frame)}",
            "style-src 'self'",
            "img-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def html_page(body: str, *, status_code: int = 200, stripe: StripeJs | None = None) -> Response:
    return HTMLResponse(
        body,
        status_code=status_code,
        headers={
            "Content-Security-Policy": content_security_policy(stripe),
            # The end-session address carries the session's bearer id: never send it on.
            "Referrer-Policy": "same-origin",
            "X-Content-Type-Options": "nosniff",
            # Pod states and running costs change by the second.
            "Cache-Control": "no-store",
        },
    )


def render(template: str, *, settings: Settings, **context: object) -> str:
    """A page; the settings are what every page's layout needs (the TEST MODE banner)."""
    return templating.html.get_template(template).render(
        context, stripe_test_mode=settings.stripe_test_mode
    )


def pod_list_page(pods: Sequence[Pod], *, settings: Settings) -> str:
    return render(
        "pods.html", settings=settings, pods=pods, refresh_seconds=POD_LIST_REFRESH_SECONDS
    )


def hold_on_booking(pod: Pod, *, settings: Settings) -> int | None:
    """The pence held on the card when this pod is booked, or None without holds
    (`HOLD_MINUTES=0`): the page then says what it said before holds."""
    minutes = settings.HOLD_MINUTES
    if minutes <= 0:
        return None
    return compute_hold_pence(
        price_per_minute=pod.price,
        hold_minutes=minutes,
        minimum_pence=settings.MINIMUM_CHARGE_PENCE,
    )


@dataclass(frozen=True)
class HoldOutcome:
    """What became of a session's hold: the amount held at booking, then how much of it was
    taken and how much released (None until the end settles it)."""

    held_pence: int
    captured_pence: int | None
    released_pence: int | None

    @property
    def case(self) -> str:
        """Which sentence of _payment.html's `held` tells it (end-session.js chooses alike)."""
        if self.captured_pence is None or self.released_pence is None:
            return "pending"
        if self.captured_pence == 0:
            return "none"
        if self.released_pence == 0:
            return "all"
        return "part"


def hold_outcome(preview: SessionPreview) -> HoldOutcome | None:
    """The hold of a session as its preview tells it, or None for a session without one."""
    if not preview.hold_pence:
        return None
    return HoldOutcome(preview.hold_pence, preview.captured_pence, preview.released_pence)


def booking_page(pod: Pod, *, settings: Settings, stripe: StripeJs) -> str:
    return render(
        "book.html",
        settings=settings,
        turnstile_script=TURNSTILE_SCRIPT if settings.uses_turnstile else None,
        turnstile_site_key=settings.TURNSTILE_SITE_KEY if settings.uses_turnstile else None,
        pod=pod,
        hold_pence=hold_on_booking(pod, settings=settings),
        timezone=settings.TIMEZONE,
        stripe_script=stripe.script_url,
        publishable_key=stripe.publishable_key,
        test_mode=stripe.is_emulator,
        test_card=STRIPE_TEST_CARD,
    )


def end_session_page(
    session: SessionRecord,
    preview: SessionPreview,
    *,
    settings: Settings,
    backup_code: str | None = None,
) -> str:
    return render(
        "end_session.html",
        settings=settings,
        backup_code=backup_code,
        session=session,
        preview=preview,
        timezone=settings.timezone,
        timezone_name=settings.TIMEZONE,
        minimum_charge_pence=settings.MINIMUM_CHARGE_PENCE,
        failure_reason=failure_reason(session.payment_error),
        hold=hold_outcome(preview),
        refresh_seconds=SESSION_REFRESH_SECONDS,
    )


def failure_reason(error: str | None) -> str:
    """The words Stripe gave a customer, without its code: `card_declined: Your card was
    declined.` gives `Your card was declined` (static/end-session.js does the same)."""
    return (error or "").split(": ", 1)[-1].rstrip(".")


def pod_not_found_page(name: str | None, *, settings: Settings) -> str:
    if not name:
        return not_found_page(
            "Choose a pod",
            "This link does not name a pod. Pick one from the list.",
            settings=settings,
        )
    return not_found_page(
        "Pod not found",
        f"There is no pod called “{name}”. Pick one from the list of pods.",
        settings=settings,
    )


def session_not_found_page(*, settings: Settings) -> str:
    return not_found_page(
        "Session not found",
        "We cannot find a session for this link. Open the link in your booking e-mail "
        "again; if it still does not work, the link may be incomplete.",
        settings=settings,
    )


def not_found_page(title: str, message: str, *, settings: Settings) -> str:
    return render("not_found.html", settings=settings, title=title, message=message)


class StaticAssets(StaticFiles):
    """The pages' CSS and JavaScript: revalidated on every load (no build step, no hashes)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


router = APIRouter(include_in_schema=False)


@router.get("/")
async def show_pods(services: ServicesDep) -> Response:
    """Every pod with its address, price and whether it is free."""
    pods = await services.db.list_pods()
    return html_page(pod_list_page(pods, settings=services.settings))


@router.get("/book")
async def show_booking(request: Request, services: ServicesDep) -> Response:
    """A pod's booking page: e-mail, card, consent, then the door code."""
    # Whatever a link holds, a page answers (never a 422): the reference is read leniently.
    name = _given(request, "podName", "pod_name")
    # A NUL cannot be in a pod's name (Postgres text cannot hold one): no such pod.
    pod = await services.db.get_pod_by_name(name) if name and "\x00" not in name else None
    if pod is None:
        return html_page(pod_not_found_page(name, settings=services.settings), status_code=404)
    stripe = stripe_js(services.settings)
    page = booking_page(pod, settings=services.settings, stripe=stripe)
    if services.settings.uses_turnstile:
        # Turnstile's script and its challenge frame come from Cloudflare's origin.
        stripe = replace(
            stripe,
            script_origins=(*stripe.script_origins, TURNSTILE_ORIGIN),
            frame_origins=(*stripe.frame_origins, TURNSTILE_ORIGIN),
        )
    return html_page(page, stripe=stripe)


@router.get("/end-session")
async def show_end_session(request: Request, services: ServicesDep) -> Response:
    """A session's running cost and End button, or its receipt once ended."""
    session = await find_session(services, _given(request, "sessionId", "session_id"))
    if session is None:
        return html_page(session_not_found_page(settings=services.settings), status_code=404)
    preview = sessions.preview_of(session)
    backup = None
    if session.end_time is None and session.access_code_id is not None:
        backup = await services.db.get_backup_code(session.id)
    page = end_session_page(
        session, preview, settings=services.settings, backup_code=backup.code if backup else None
    )
    return html_page(page)


@router.get("/pay")
async def show_pay(request: Request, services: ServicesDep) -> Response:
    """An owed session's pay page: the pod, the times, the amount, the cards to pay with."""
    session = await find_session(services, _given(request, "sessionId", "session_id"))
    if session is None:
        return html_page(session_not_found_page(settings=services.settings), status_code=404)
    stripe = stripe_js(services.settings)
    owed = recovery.owed_pence(session)
    page = render(
        "pay.html",
        settings=services.settings,
        session=session,
        owed_pence=owed,
        has_saved_card=session.stripe_payment_method is not None,
        nothing_owed=recovery.NothingOwed(session).message,
        end_session_url=services.settings.end_session_link(session.id),
        timezone=services.settings.timezone,
        stripe_script=stripe.script_url,
        publishable_key=stripe.publishable_key,
        test_mode=stripe.is_emulator,
        test_card=STRIPE_TEST_CARD,
    )
    # Stripe's origins only while there is something to pay with a card.
    return html_page(page, stripe=stripe if owed else None)


def _given(request: Request, *names: str) -> str | None:
    given = query_value(request, *names)
    return given[1] if given else None


async def find_session(services: Services, raw_id: str | None) -> SessionRecord | None:
    """The session a link names; a missing or mangled id finds none, like an unknown one."""
    try:
        session_id = UUID(raw_id or "")
    except ValueError:
        return None
    return await services.db.get_session_by_id(session_id)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticAssets(directory=STATIC_DIR), name="static")
