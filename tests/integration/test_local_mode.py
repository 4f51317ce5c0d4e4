"""`make service` on a fresh clone: local mode with no settings at all."""

import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import psutil

from svc.env import LOCAL_STRIPE_SECRET
from svc.local import port_is_open
from tests.conftest import free_port
from tests.support.processes import ROOT, ServiceProcess, clean_environment


def postgres_processes_using(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if process.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(process)
    return found


def test_local_mode_books_charges_and_writes_the_emails(tmp_path: Path) -> None:
    """The README's walk-through, on a service started with no settings at all."""
    data_dir, outbox = tmp_path / "local", tmp_path / "outbox"
    stripe_port, port = free_port(), free_port()
    env = clean_environment(
        LOCAL_DATA_DIR=str(data_dir),
        OUTBOX_DIR=str(outbox),
        LOCALSTRIPE_PORT=str(stripe_port),
    )
    service = ServiceProcess(port, env, cwd=tmp_path, log=tmp_path / "service.log")
    localstripe = f"http://localhost:{stripe_port}"
    try:
        service.start(timeout=90)
        pods = httpx.get(f"{service.url}/api/pods").json()
        assert [(pod["name"], pod["price_per_minute"], pod["in_use"]) for pod in pods] == [
            ("pod1", "0.2500", False),
            ("test", "0.1000", False),
        ]
        assert httpx.get(f"{service.url}/readyz").json() == {"status": "ok"}

        setup = httpx.get(
            f"{service.url}/api/create-setup-intent?podName=pod1&email=you@example.com"
        ).json()
        auth = (LOCAL_STRIPE_SECRET, "")
        method = httpx.post(
            f"{localstripe}/v1/payment_methods",
            auth=auth,
            data={
                "type": "card",
                "card[number]": "4242424242424242",
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[cvc]": "123",
            },
        ).json()
        httpx.post(
            f"{localstripe}/v1/setup_intents/{setup['setup_intent_id']}/confirm",
            auth=auth,
            data={"payment_method": method["id"]},
        ).raise_for_status()
        booked = httpx.post(
            f"{service.url}/api/confirm-booking",
            json={
                "setup_intent_id": setup["setup_intent_id"],
                "client_secret": setup["client_secret"],
            },
        ).json()
        # No PUBLIC_URL: the links follow the port served, as `make service PORT=...` does.
        end_session_url = f"http://localhost:{port}/end-session?sessionId={booked['session_id']}"
        assert booked["end_session_url"] == end_session_url
        email = wait_for_file(outbox, "access_code")
        assert f"Your door code for pod1 is {booked['access_code']}." in email
        assert end_session_url in email

        ended = httpx.post(
            f"{service.url}/api/end-session", json={"sessionId": booked["session_id"]}
        ).json()
        assert ended["payment_status"] == "not_charged"  # seconds, below the 30p minimum
        wait_for_file(outbox, "receipt")
        assert (data_dir / "pgdata" / "PG_VERSION").exists()
    finally:
        service.stop()
    output = service.output()
    assert "Application shutdown complete." in output
    assert "LOCAL MODE" in output
    assert f"  open http://localhost:{port}/\n" in output
    assert f"embedded Postgres, data in {data_dir / 'pgdata'}" in output
    assert f"localstripe at {localstripe}, started with the service" in output
    # Stopping the service stops what it started.
    assert postgres_processes_using(data_dir) == []
    assert not port_is_open("127.0.0.1", stripe_port)


def wait_for_file(folder: Path, kind: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(f"*-{kind}.eml")) if folder.exists() else []
        if found:
            message = message_from_bytes(found[0].read_bytes(), policy=policy.default)
            assert isinstance(message, EmailMessage)
            body = message.get_body(("plain",))
            assert body is not None
            return str(body.get_content())
        time.sleep(0.1)
    raise AssertionError(f"no {kind} e-mail in {folder}")


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
