"""The operator's console at /admin: every pod, session and pound, and the actions on
them, behind a password (svc/console/auth.py). Off without ADMIN_PASSWORD_HASH outside
local mode: every /admin address is then a 404, as if it did not exist."""

from fastapi import FastAPI

from svc.console.auth import build_auth
from svc.console.router import router
from svc.env import Settings


def install(app: FastAPI, settings: Settings) -> None:
    app.state.console = build_auth(settings)
    app.include_router(router)


def banner_lines(app: FastAPI, settings: Settings) -> list[str]:
    """Local mode's banner: where the console is, and this start's one-time password."""
    auth = app.state.console
    if auth is None or auth.one_time_password is None:
        return []
    return [
        f"console  : {settings.PUBLIC_URL}/admin, one-time password {auth.one_time_password} "
        "(this start only)"
    ]
