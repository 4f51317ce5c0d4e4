"""`make service` on a fresh clone: local mode with no settings at all."""

from pathlib import Path

import httpx
import psutil

from tests.conftest import free_port
from tests.support.processes import ROOT, ServiceProcess, clean_environment


def postgres_processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(process)
    return found


def test_service_starts_in_local_mode_with_demo_pods(tmp_path: Path) -> None:
    data_dir = tmp_path / "local"
    env = clean_environment(
        LOCAL_DATA_DIR=str(data_dir),
        OUTBOX_DIR=str(tmp_path / "outbox"),
        LOCALSTRIPE_PORT=str(free_port()),
    )
    service = ServiceProcess(free_port(), env, cwd=tmp_path, log=tmp_path / "service.log")
    try:
        service.start(timeout=90)
        pods = httpx.get(f"{service.url}/api/pods").json()
        assert [(pod["name"], pod["price_per_minute"], pod["in_use"]) for pod in pods] == [
            ("pod1", "0.2500", False),
            ("test", "0.1000", False),
        ]
        assert httpx.get(f"{service.url}/readyz").json() == {"status": "ok"}
        assert (data_dir / "pgdata" / "PG_VERSION").exists()
    finally:
        service.stop()
    output = service.output()
    assert "Application shutdown complete." in output
    assert "LOCAL MODE" in output
    assert f"embedded Postgres, data in {data_dir / 'pgdata'}" in output
    # Stopping the service stops the database it started.
    assert postgres_processes_using(data_dir) == []


def test_production_without_secrets_refuses_to_start(tmp_path: Path) -> None:
    env = clean_environment(APP_ENV="production")
    service = ServiceProcess(free_port(), env, cwd=tmp_path, log=tmp_path / "service.log")
    try:
        service.start(timeout=30)
    except RuntimeError as error:
        assert "exited with" in str(error)
    else:
        raise AssertionError("the service started in production without its secrets")
    finally:
        service.kill()
    assert (
        "qwipsvc cannot start: APP_ENV=production needs these variables set: STRIPE_SECRET, "
        in (service.output())
    )


def test_procfile_runs_production_on_the_platform_port() -> None:
    assert (ROOT / "Procfile").read_text().strip() == (
        "web: APP_ENV=production uvicorn svc.main:app --host 0.0.0.0 --port $PORT"
    )
