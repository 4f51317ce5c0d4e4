"""The app under test, running its real lifespan against the test database."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from svc.env import Settings
from svc.main import create_app
from tests.support.mail import Mailbox
from tests.support.settings import service_settings

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(
    clean_database: str, tmp_path: Path, localstripe_url: str, smtp_server: Mailbox
) -> SettingsFactory:
    """Settings for a test: the test database, localstripe, the test SMTP server."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **service_settings(
                app_env="local",
                database_url=clean_database,
                stripe_api_base=localstripe_url,
                smtp_port=smtp_server.port,
                public_url="http://qwip.test",
            ),
            "OUTBOX_DIR": tmp_path / "outbox",
            "LOCAL_DATA_DIR": tmp_path / "local",
            "BACKGROUND_INTERVAL_SECONDS": 0.2,
            "EMAIL_RETRY_BASE_SECONDS": 0.2,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started, and an HTTP client speaking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as http:
        yield http
