"""Production as the Procfile runs it, as a real process: what it refuses, and how it
says TEST MODE."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, migrated_database
from tests.support.processes import ServiceProcess, clean_environment

BANNER = (
    '<p class="test-mode-banner" role="status"><strong>TEST MODE</strong>: payments use Stripe '
    "test keys. No real card is charged.</p>"
)


@pytest.fixture(scope="module")
def database_url(postgres_server_url: str) -> Iterator[str]:
    with migrated_database(postgres_server_url, "qwip_production_settings") as url:
        yield url


def production(database_url: str, **overrides: str) -> dict[str, str]:
    """Production with nothing unsafe: real Stripe's address (never called here), mail over
    SSL to this machine (nothing is sent), an https:// PUBLIC_URL."""
    settings = {
        "APP_ENV": "production",
        "DATABASE_URL": database_url,
        "STRIPE_SECRET": "sk_live_qwip",
        "STRIPE_PUBLISHABLE_KEY": "pk_live_qwip",
        "STRIPE_WEBHOOK_SECRET": "whsec_qwip",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(free_port()),
        "EMAIL_FROM": "pods@qwip.test",
        "OPERATOR_EMAIL": "ops@qwip.test",
        "PUBLIC_URL": "https://pods.qwip.test",
    }
    return clean_environment(**{**settings, **overrides})


@pytest.mark.parametrize(
    ("keys", "test_mode"),
    [
        ({"STRIPE_SECRET": "sk_test_qwip", "STRIPE_PUBLISHABLE_KEY": "pk_test_qwip"}, True),
        ({}, False),
    ],
)
def test_production_with_test_keys_says_test_mode_in_its_log_and_on_every_page(
    tmp_path: Path, database_url: str, keys: dict[str, str], test_mode: bool
) -> None:
    service = ServiceProcess(
        free_port(), production(database_url, **keys), cwd=tmp_path, log=tmp_path / "log"
    )
    try:
        service.start(timeout=90)
        pages = {
            path: httpx.get(f"{service.url}{path}")
            for path in ("/", "/book?podName=nowhere", "/end-session?sessionId=x")
        }
    finally:
        service.stop()
    assert {path: page.status_code for path, page in pages.items()} == {
        "/": 200,
        "/book?podName=nowhere": 404,
        "/end-session?sessionId=x": 404,
    }
    assert {path: BANNER in page.text for path, page in pages.items()} == {
        path: test_mode for path in pages
    }
    warnings = [line for line in service.output().splitlines() if "stripe.test_mode" in line]
    assert [("TEST MODE" in line, "WARNING" in line) for line in warnings] == (
        [(True, True)] if test_mode else []
    )


def test_production_refuses_unsafe_settings_naming_each(tmp_path: Path, database_url: str) -> None:
    env = production(
        database_url,
        PUBLIC_URL="http://pods.qwip.test",
        STRIPE_API_BASE="http://127.0.0.1:9",
        SMTP_HOST="mail.qwip.test",
        SMTP_SECURITY="none",
        CORS_ORIGINS="*",
        STRIPE_PUBLISHABLE_KEY="pk_test_qwip",
    )
    service = ServiceProcess(free_port(), env, cwd=tmp_path, log=tmp_path / "log")
    try:
        service.start(timeout=30)
    except RuntimeError as error:
        assert "exited with" in str(error)
    else:
        raise AssertionError("production started with unsafe settings")
    finally:
        service.kill()
    assert (
        "qwipsvc cannot start: APP_ENV=production refuses these settings: "
        "an http:// PUBLIC_URL (http://pods.qwip.test: its links carry session ids, use "
        "https://); STRIPE_API_BASE (http://127.0.0.1:9: payments and the card page's "
        "JavaScript would come from there; unset it to use Stripe); a live STRIPE_SECRET with "
        "a test STRIPE_PUBLISHABLE_KEY (both keys must come from the same Stripe mode); "
        "SMTP_SECURITY=none to mail.qwip.test (mail and the SMTP password would cross the "
        "network unencrypted: use ssl or starttls); CORS_ORIGINS with * (name each origin "
        "allowed)\n"
    ) in service.output()
