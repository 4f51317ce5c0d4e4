from pathlib import Path

import pytest

from svc.env import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Local-mode settings that read nothing from the environment's .env."""
    return Settings(
        _env_file=None,
        OUTBOX_DIR=tmp_path / "outbox",
        PUBLIC_URL="https://pods.example.com",
        EMAIL_FROM="pods@example.com",
        OPERATOR_EMAIL="ops@example.com",
    )
