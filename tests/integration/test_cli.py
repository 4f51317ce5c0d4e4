"""The operator CLI, run as operators run it: `python -m svc ...` in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli(clean_database: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("STRIPE_", "DATABASE_", "SUPABASE_", "APP_ENV"))
        }
        env.update(DATABASE_URL=clean_database, PYTHONPATH=str(ROOT))
        return subprocess.run(
            [sys.executable, "-m", "svc", *args],
            cwd=tmp_path,  # no .env here
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def test_add_list_and_update_pods(cli) -> None:  # type: ignore[no-untyped-def]
    added = cli("pods", "add", "pod7", "--address", "7 High St", "--price-per-minute", "0.25")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added pod7")
    assert "0.2500 gbp/min" in added.stdout

    cli(
        "pods",
        "add",
        "lockpod",
        "--address",
        "9 Lane",
        "--price-per-minute",
        "0.5",
        "--currency",
        "EUR",
        "--seam-device-id",
        "august_device_1",
    )
    listed = cli("pods", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["lockpod", "pod7"]
    assert "0.5000 eur/min" in lines[0] and "lock august_device_1" in lines[0]

    updated = cli("pods", "update", "pod7", "--price-per-minute", "0.3", "--address", "8 High St")
    assert updated.returncode == 0, updated.stderr
    assert "0.3000 gbp/min" in updated.stdout and "8 High St" in updated.stdout

    cleared = cli("pods", "update", "lockpod", "--no-seam-device")
    assert "lock" not in cleared.stdout.split("9 Lane")[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pods", "add", "p", "--address", "a", "--price-per-minute", "-0.25"],
            "the price per minute cannot be -0.25",
        ),
        (
            ["pods", "add", "p", "--address", "a", "--price-per-minute", "abc"],
            "'abc' is not a number",
        ),
        (
            ["pods", "add", "p", "--address", "a", "--price-per-minute", "0.123456"],
            "more than 4 decimal places",
        ),
        (
            ["pods", "add", "bad name", "--address", "a", "--price-per-minute", "1"],
            "'bad name' is not a pod name",
        ),
        (
            [
                "pods",
                "add",
                "p",
                "--address",
                "a",
                "--price-per-minute",
                "1",
                "--currency",
                "pounds",
            ],
            "'pounds' is not a three-letter currency code",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_line(cli, args, message) -> None:  # type: ignore[no-untyped-def]
    result = cli(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert cli("pods", "list").stdout.strip() == "no pods yet"


def test_duplicate_name_and_unknown_pod_are_errors(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("pods", "add", "p", "--address", "a", "--price-per-minute", "1").returncode == 0
    duplicate = cli("pods", "add", "p", "--address", "b", "--price-per-minute", "2")
    assert (duplicate.returncode, duplicate.stderr) == (
        1,
        "error: A pod named 'p' already exists.\n",
    )
    unknown = cli("pods", "update", "ghost", "--address", "x")
    assert (unknown.returncode, unknown.stderr) == (1, "error: no pod named 'ghost'\n")
    nothing = cli("pods", "update", "p")
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("error: nothing to change")


def test_db_init_skips_recorded_migrations(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("db", "init")
    assert (result.returncode, result.stdout) == (
        0,
        "nothing to apply: every migration is recorded on Postgres at DATABASE_URL\n",
    )


def test_disable_takes_a_pod_out_of_service_and_enable_puts_it_back(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("pods", "add", "p", "--address", "a", "--price-per-minute", "1").returncode == 0
    disabled = cli("pods", "disable", "p", "--reason", "  cleaning\n until 3 pm ")
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.startswith("disabled p ")
    assert disabled.stdout.endswith("  out of service: cleaning until 3 pm\n")
    assert cli("pods", "list").stdout.endswith("  out of service: cleaning until 3 pm\n")

    enabled = cli("pods", "enable", "p")
    assert enabled.returncode == 0, enabled.stderr
    assert enabled.stdout.startswith("enabled p ") and "out of service" not in enabled.stdout
    assert "out of service" not in cli("pods", "list").stdout

    unknown = cli("pods", "disable", "ghost", "--reason", "x")
    assert (unknown.returncode, unknown.stderr) == (1, "error: no pod named 'ghost'\n")
    no_reason = cli("pods", "disable", "p", "--reason", " ")
    assert no_reason.returncode != 0
    assert "the reason is 1-200 characters" in no_reason.stderr
    assert "out of service" not in cli("pods", "list").stdout
