"""Start and stop the service (and other servers) as real processes, on free ports."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def clean_environment(**overrides: str) -> dict[str, str]:
    """This process's environment without any qwipsvc setting, plus the overrides."""
    ours = (
        "APP_ENV",
        "STRIPE_",
        "DATABASE_",
        "SUPABASE_",
        "EMAIL_",
        "SMTP_",
        "OUTBOX_DIR",
        "SEAM_",
        "PUBLIC_URL",
        "END_SESSION_URL",
        "CORS_ORIGINS",
        "OPERATOR_EMAIL",
        "LOCAL_DATA_DIR",
        "LOCALSTRIPE_PORT",
        "BOOKING_RATE_LIMIT_",
        "FORWARDED_ALLOW_IPS",
        "TURNSTILE_",
        "ADMIN_",
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(ours) and key != "PORT"
    }
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"  # the access log goes to stdout: see it as it happens
    env.update(overrides)
    return env


def wait_until_answering(url: str, process: subprocess.Popen[bytes], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class ServiceProcess:
    """`uvicorn svc.main:app` on a port, with an environment of its own."""

    def __init__(
        self,
        port: int,
        env: dict[str, str],
        *,
        cwd: Path,
        log: Path,
        access_log: bool = False,
        app: str = "svc.main:app",
    ) -> None:
        self.port = port
        self.app = app
        self.access_log = access_log
        self.env = env
        self.cwd = cwd
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, timeout: float = 60) -> "ServiceProcess":
        output = open(self.log, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
            + ([] if self.access_log else ["--no-access-log"]),
            cwd=self.cwd,
            # the port served, in the environment too, as `make service` and Railway set it
            env={**self.env, "PORT": str(self.port)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        wait_until_answering(f"{self.url}/healthz", self.process, timeout=timeout)
        return self

    def stop(self) -> int | None:
        """SIGTERM, as a platform stops a replica; its lifespan shuts down cleanly."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process else None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
