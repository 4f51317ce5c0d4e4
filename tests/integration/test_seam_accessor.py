"""The Seam accessor against Seam's own fake server."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from seam import AsyncSeam

from svc import seam_accessor
from svc.env import Settings
from svc.metrics import Metrics
from svc.seam_accessor import (
    LockCannotTakeCodes,
    LockNotFound,
    LockRequestRefused,
    LockServiceUnavailable,
    LockState,
)
from tests.conftest import free_port

SEAM_KEY = "seam_apikey1_token"
LOCK = "august_device_1"


def client_for(endpoint: str, *, key: str = SEAM_KEY) -> AsyncSeam:
    seam = seam_accessor.build_client(
        Settings(_env_file=None, SEAM_API_KEY=key, SEAM_ENDPOINT=endpoint)
    )
    assert seam is not None
    return seam


@pytest.fixture
async def seam(fake_seam_url: str) -> AsyncIterator[AsyncSeam]:
    client = client_for(fake_seam_url)
    yield client
    await client.close()


def window() -> tuple[datetime, datetime]:
    start = datetime.now(UTC).replace(microsecond=0)
    return start, start + timedelta(minutes=180)


async def codes_named(seam: AsyncSeam, name: str) -> list[object]:
    return [c for c in await seam.access_codes.list(device_id=LOCK) if c.name == name]


def test_no_client_without_an_api_key() -> None:
    assert seam_accessor.build_client(Settings(_env_file=None)) is None


async def test_ensure_access_code_creates_a_time_bound_code_once(seam: AsyncSeam) -> None:
    name = seam_accessor.access_code_name(uuid4())
    starts_at, ends_at = window()
    first = await seam_accessor.ensure_access_code(
        seam, device_id=LOCK, name=name, code="402913", starts_at=starts_at, ends_at=ends_at
    )
    # a second attempt (an answer lost, a retried job) finds the code instead of adding one
    again = await seam_accessor.ensure_access_code(
        seam, device_id=LOCK, name=name, code="402913", starts_at=starts_at, ends_at=ends_at
    )
    assert again == first
    assert first.status == "unset"
    [code] = await codes_named(seam, name)
    assert code.access_code_id == first.access_code_id  # type: ignore[attr-defined]
    on_lock = await seam.access_codes.get(access_code_id=first.access_code_id)
    assert (on_lock.device_id, on_lock.code, on_lock.type) == (LOCK, "402913", "time_bound")
    assert datetime.fromisoformat(on_lock.starts_at) == starts_at  # type: ignore[arg-type]
    assert datetime.fromisoformat(on_lock.ends_at) == ends_at  # type: ignore[arg-type]
    await seam_accessor.delete_access_code(seam, access_code_id=first.access_code_id)


async def test_delete_access_code_removes_it_and_then_knows_it_is_gone(seam: AsyncSeam) -> None:
    starts_at, ends_at = window()
    code = await seam_accessor.ensure_access_code(
        seam,
        device_id=LOCK,
        name=seam_accessor.access_code_name(uuid4()),
        code="581302",
        starts_at=starts_at,
        ends_at=ends_at,
    )
    status = await seam_accessor.get_access_code_status(seam, access_code_id=code.access_code_id)
    assert status == "unset"
    assert await seam_accessor.delete_access_code(seam, access_code_id=code.access_code_id)
    assert (
        await seam_accessor.get_access_code_status(seam, access_code_id=code.access_code_id) is None
    )
    assert not await seam_accessor.delete_access_code(seam, access_code_id=code.access_code_id)


async def test_get_lock_state_reads_locked_and_online(seam: AsyncSeam) -> None:
    assert await seam_accessor.get_lock_state(seam, device_id=LOCK) == LockState(
        locked=True, online=True
    )


async def test_a_device_seam_does_not_know_is_lock_not_found(seam: AsyncSeam) -> None:
    starts_at, ends_at = window()
    with pytest.raises(LockNotFound) as raised:
        await seam_accessor.ensure_access_code(
            seam,
            device_id="no_such_lock",
            name="x",
            code="1234",
            starts_at=starts_at,
            ends_at=ends_at,
        )
    assert (raised.value.status_code, raised.value.retryable) == (502, False)
    assert raised.value.message == "The smart-lock service does not know this pod's lock."
    assert raised.value.reason == (
        "Seam has no device 'no_such_lock' (check the pod's seam_device_id)"
    )


async def test_a_device_without_keypad_codes_is_refused_before_any_code(seam: AsyncSeam) -> None:
    starts_at, ends_at = window()
    name = seam_accessor.access_code_name(uuid4())
    with pytest.raises(LockCannotTakeCodes) as raised:
        await seam_accessor.ensure_access_code(
            seam,
            device_id="ecobee_device_1",
            name=name,
            code="731904",
            starts_at=starts_at,
            ends_at=ends_at,
        )
    assert raised.value.retryable is False
    assert raised.value.reason == (
        "Seam device 'ecobee_device_1' cannot program online access codes "
        "(it is not a keypad lock Seam can set codes on)"
    )
    assert [
        c for c in await seam.access_codes.list(device_id="ecobee_device_1") if c.name == name
    ] == []


async def test_the_same_digits_under_another_name_are_refused(seam: AsyncSeam) -> None:
    starts_at, ends_at = window()
    theirs = await seam_accessor.ensure_access_code(
        seam,
        device_id=LOCK,
        name="someone-else",
        code="909090",
        starts_at=starts_at,
        ends_at=ends_at,
    )
    try:
        with pytest.raises(LockRequestRefused) as raised:
            await seam_accessor.ensure_access_code(
                seam,
                device_id=LOCK,
                name=seam_accessor.access_code_name(uuid4()),
                code="909090",
                starts_at=starts_at,
                ends_at=ends_at,
            )
        assert raised.value.reason == (
            "Seam device 'august_device_1' already has another code with the same digits"
        )
    finally:
        await seam_accessor.delete_access_code(seam, access_code_id=theirs.access_code_id)


async def test_an_unreachable_seam_is_retryable() -> None:
    seam = client_for(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(LockServiceUnavailable) as raised:
            await seam_accessor.get_lock_state(seam, device_id=LOCK)
    finally:
        await seam.close()
    assert (raised.value.status_code, raised.value.retryable) == (503, True)
    assert raised.value.message == (
        "The smart-lock service cannot be reached right now; please try again shortly."
    )
    assert raised.value.reason == "reading the lock: ConnectError"


async def test_a_wrong_api_key_is_refused(fake_seam_url: str) -> None:
    seam = client_for(fake_seam_url, key="seam_not_a_real_key")
    try:
        with pytest.raises(LockRequestRefused) as raised:
            await seam_accessor.delete_access_code(seam, access_code_id="access_code1")
    finally:
        await seam.close()
    assert (raised.value.status_code, raised.value.retryable) == (502, False)
    assert raised.value.reason == "deleting the code: Seam refused SEAM_API_KEY"


def seam_samples(metrics: Metrics) -> dict[str, float]:
    """The Seam series that counted anything, by name and operation."""
    return {
        f"{sample.name} {sample.labels['operation']}": sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        if family.name.startswith("qwip_seam")
        for sample in family.samples
        if sample.name.endswith(("_count", "_total")) and sample.value
    }


async def test_each_call_is_timed_and_a_failed_one_counted_as_an_error(
    fake_seam_url: str,
) -> None:
    metrics = Metrics()
    settings = Settings(_env_file=None, SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=fake_seam_url)
    seam = seam_accessor.build_client(settings, metrics)
    assert seam is not None
    try:
        await seam_accessor.get_lock_state(seam, device_id=LOCK)
    finally:
        await seam.close()
    assert seam_samples(metrics) == {"qwip_seam_request_duration_seconds_count GET /devices/get": 1}

    down = Settings(
        _env_file=None, SEAM_API_KEY=SEAM_KEY, SEAM_ENDPOINT=f"http://127.0.0.1:{free_port()}"
    )
    seam = seam_accessor.build_client(down, metrics)
    assert seam is not None
    try:
        with pytest.raises(LockServiceUnavailable):
            await seam_accessor.get_lock_state(seam, device_id=LOCK)
    finally:
        await seam.close()
    # The SDK's own retries (two, for a read) pass through the timing: three attempts.
    assert seam_samples(metrics) == {
        "qwip_seam_request_duration_seconds_count GET /devices/get": 4,
        "qwip_seam_errors_total GET /devices/get": 3,
    }
