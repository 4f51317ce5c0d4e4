"""What production asks of the settings: every value it needs set, and none it refuses.

Functions of the settings' values, called by Settings' own check at start, so that
`svc/env.py` keeps to the variables and what each means.
"""

import ipaddress
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr

from svc.types import AppEnv, SmtpSecurity

if TYPE_CHECKING:
    from svc.env import Settings

GMAIL_SMTP_HOST = "smtp.gmail.com"

# What a key's prefix says about the Stripe mode it belongs to (rk_ keys are restricted).
SECRET_KEY_MODES = {"sk_live_": "live", "rk_live_": "live", "sk_test_": "test", "rk_test_": "test"}
PUBLISHABLE_KEY_MODES = {"pk_live_": "live", "pk_test_": "test"}


def missing(settings: "Settings") -> list[str]:
    """The variables production needs and the settings lack."""
    lacking = [
        name
        for name in (
            "STRIPE_SECRET",
            "STRIPE_WEBHOOK_SECRET",
            "STRIPE_PUBLISHABLE_KEY",
            "EMAIL_FROM",
            "OPERATOR_EMAIL",
        )
        if not is_set(getattr(settings, name))
    ]
    if settings.SMTP_HOST == GMAIL_SMTP_HOST and not is_set(settings.EMAIL_PASSWORD):
        lacking.append("EMAIL_PASSWORD")
    if not is_set(settings.DATABASE_URL) and not (
        is_set(settings.SUPABASE_URL) and is_set(settings.SUPABASE_KEY)
    ):
        lacking.append("DATABASE_URL (or SUPABASE_URL and SUPABASE_KEY)")
    if "PUBLIC_URL" not in settings.model_fields_set:
        lacking.append("PUBLIC_URL")
    return lacking


def unsafe(settings: "Settings") -> list[str]:
    """What production refuses to run with. APP_ENV=test, which stands on local peers,
    refuses only live keys: with test keys no real card is ever charged."""
    secret_mode = key_mode(settings.STRIPE_SECRET, SECRET_KEY_MODES)
    publishable_mode = key_mode(settings.STRIPE_PUBLISHABLE_KEY, PUBLISHABLE_KEY_MODES)
    refused = []
    if settings.APP_ENV is AppEnv.TEST:
        refused += [
            f"a live {name} (APP_ENV=test runs only with Stripe test keys)"
            for name, mode in (
                ("STRIPE_SECRET", secret_mode),
                ("STRIPE_PUBLISHABLE_KEY", publishable_mode),
            )
            if mode == "live"
        ]
        return refused
    public_url = urlsplit(settings.PUBLIC_URL)
    if (
        "PUBLIC_URL" in settings.model_fields_set
        and public_url.scheme == "http"
        and not is_local_host(public_url.hostname)
    ):
        refused.append(
            f"an http:// PUBLIC_URL ({settings.PUBLIC_URL}: its links carry session ids, "
            "use https://)"
        )
    if settings.STRIPE_API_BASE:
        refused.append(
            f"STRIPE_API_BASE ({settings.STRIPE_API_BASE}: payments and the card page's "
            "JavaScript would come from there; unset it to use Stripe)"
        )
    if is_set(settings.STRIPE_SECRET) and secret_mode is None:
        refused.append(
            "a STRIPE_SECRET that is not a Stripe secret key "
            "(sk_live_, rk_live_, sk_test_ or rk_test_)"
        )
    if is_set(settings.STRIPE_PUBLISHABLE_KEY) and publishable_mode is None:
        refused.append(
            "a STRIPE_PUBLISHABLE_KEY that is not a Stripe publishable key "
            "(pk_live_ or pk_test_)"
        )
    if secret_mode and publishable_mode and secret_mode != publishable_mode:
        refused.append(
            f"a {secret_mode} STRIPE_SECRET with a {publishable_mode} STRIPE_PUBLISHABLE_KEY "
            "(both keys must come from the same Stripe mode)"
        )
    if settings.SMTP_SECURITY is SmtpSecurity.NONE and not is_local_host(settings.SMTP_HOST):
        refused.append(
            f"SMTP_SECURITY=none to {settings.SMTP_HOST} (mail and the SMTP password would "
            "cross the network unencrypted: use ssl or starttls)"
        )
    if any("*" in origin for origin in settings.CORS_ORIGINS):
        refused.append("CORS_ORIGINS with * (name each origin allowed)")
    return refused


def key_mode(key: SecretStr | str | None, modes: dict[str, str]) -> str | None:
    """`live` or `test` from a Stripe key's prefix; None when unset or of no known shape."""
    value = key.get_secret_value() if isinstance(key, SecretStr) else key
    return next((mode for prefix, mode in modes.items() if (value or "").startswith(prefix)), None)


def is_local_host(host: str | None) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1): traffic that stays on the machine."""
    if host is None:
        return False
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_set(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value().strip())
    return value is not None and bool(str(value).strip())
