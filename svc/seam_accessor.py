"""Door access codes: generated locally, or programmed on the pod's Seam lock.

Every Seam call of the service is here, on the SDK's async client. Seam's errors (and
httpx's, which the SDK lets through for timeouts and refused connections) stop at this
border: each becomes one of the LockError subclasses below, whose `retryable` says whether
a later attempt may succeed and whose `reason` tells the operator what happened in our own
words plus Seam's error code, never Seam's message.
"""

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn
from uuid import UUID

import httpx
from httpx_retries import RetryTransport
from seam import AsyncSeam, SeamError, SeamHttpApiError
from seam.client import DEFAULT_RETRIES
from seam.resources import AccessCode
from svix.webhooks import Webhook, WebhookVerificationError

from svc.env import Settings
from svc.errors import ServiceError
from svc.metrics import Metrics
from svc.models.records import BackupCode
from svc.outbound import TimedSeamTransport
from svc.utils import short_id

logger = logging.getLogger(__name__)

# Per HTTP request; the SDK retries reads (not creates) twice on timeouts and 5xx.
SEAM_TIMEOUT_SECONDS = 10.0


def generate_access_code(length: int) -> str:
    """A code of `length` digits from the OS's secure random source (leading zeros allowed)."""
    return "".join(secrets.choice("0123456789") for _ in range(length))


def access_code_name(session_id: UUID) -> str:
    """The name a session's code has on Seam, by which a retry finds it again.

    Only the session id's first characters: the whole id is the bearer secret of the
    end-session link, and code names show in Seam's dashboard and the lock maker's app.
    """
    return f"qwip-session-{short_id(session_id)}"


def build_client(settings: Settings, metrics: Metrics | None = None) -> AsyncSeam | None:
    """Seam's async client when SEAM_API_KEY is set; the caller closes it. Each request
    (each attempt of the SDK's retries) is timed and counted in `metrics`."""
    if settings.SEAM_API_KEY is None:
        return None
    timed = TimedSeamTransport(metrics or Metrics())
    return AsyncSeam(
        api_key=settings.SEAM_API_KEY.get_secret_value(),
        endpoint=settings.seam_endpoint,
        timeout=SEAM_TIMEOUT_SECONDS,
        # Nothing here waits on a lock's action; access-code calls never poll anyway.
        wait_for_action_attempt=False,
        # The SDK's own retries, around the timed transport (it takes one or the other).
        httpx_options={"transport": RetryTransport(transport=timed, retry=DEFAULT_RETRIES)},
    )


# Errors


class LockError(ServiceError):
    """Seam could not do what was asked."""

    status_code = 502
    retryable = False

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class LockServiceUnavailable(LockError):
    status_code = 503
    retryable = True

    def __init__(self, reason: str) -> None:
        super().__init__(
            "The smart-lock service cannot be reached right now; please try again shortly.",
            reason=reason,
        )


class LockNotFound(LockError):
    def __init__(self, device_id: str) -> None:
        super().__init__(
            "The smart-lock service does not know this pod's lock.",
            reason=f"Seam has no device {device_id!r} (check the pod's seam_device_id)",
        )


class LockCannotTakeCodes(LockError):
    def __init__(self, reason: str) -> None:
        super().__init__("This pod's lock cannot take access codes.", reason=reason)


class LockRequestRefused(LockError):
    def __init__(self, reason: str) -> None:
        super().__init__("The smart-lock service refused the request.", reason=reason)


def _translate(error: Exception, *, action: str, device_id: str | None) -> NoReturn:
    if isinstance(error, SeamHttpApiError):
        if error.status_code == 429 or error.status_code >= 500:
            raise LockServiceUnavailable(
                f"{action}: Seam answered {error.status_code} {error.code}"
            ) from error
        if error.code == "device_not_found" and device_id is not None:
            raise LockNotFound(device_id) from error
        if error.status_code == 401:
            raise LockRequestRefused(f"{action}: Seam refused SEAM_API_KEY") from error
        raise LockRequestRefused(
            f"{action}: Seam answered {error.status_code} {error.code}"
        ) from error
    raise LockServiceUnavailable(f"{action}: {type(error).__name__}") from error


@contextmanager
def _seam_call(action: str, *, device_id: str | None = None) -> Iterator[None]:
    try:
        yield
    except (SeamError, httpx.HTTPError) as error:
        _translate(error, action=action, device_id=device_id)


# Locks


@dataclass(frozen=True, slots=True)
class LockState:
    locked: bool | None
    online: bool


async def get_lock_state(seam: AsyncSeam, *, device_id: str) -> LockState:
    with _seam_call("reading the lock", device_id=device_id):
        device = await seam.devices.get(device_id=device_id)
    properties = device.properties
    if properties is None:
        return LockState(locked=None, online=False)
    return LockState(locked=properties.locked, online=bool(properties.online))


class LockStateCache:
    """Seam's answer about each lock, kept `max_age` seconds in this process.

    A page may ask every few seconds, and Seam's rate limit is shared with the calls that
    put codes on the locks. Requests arriving while Seam is being asked share that one call;
    a failure is not kept, so the next request asks again.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, asyncio.Future[LockState]]] = {}

    async def get(self, seam: AsyncSeam, *, device_id: str, max_age: float) -> LockState:
        entry = self._entries.get(device_id)
        if entry is not None:
            fetched_at, answer = entry
            if not answer.done() or time.monotonic() - fetched_at < max_age:
                return await asyncio.shield(answer)
        answer = asyncio.ensure_future(get_lock_state(seam, device_id=device_id))
        self._entries[device_id] = (time.monotonic(), answer)
        answer.add_done_callback(lambda done: self._settle(device_id, done))
        # Shielded: a client that goes away does not cancel the call others wait on.
        return await asyncio.shield(answer)

    def _settle(self, device_id: str, answer: "asyncio.Future[LockState]") -> None:
        if answer.cancelled() or answer.exception() is not None:
            if self._entries.get(device_id, (0.0, None))[1] is answer:
                del self._entries[device_id]
        else:
            # The age counts from Seam's answer, not from the question.
            self._entries[device_id] = (time.monotonic(), answer)


# Access codes


@dataclass(frozen=True, slots=True)
class ProgrammedCode:
    access_code_id: str
    status: str


def _programmed(code: AccessCode) -> ProgrammedCode:
    return ProgrammedCode(access_code_id=code.access_code_id, status=code.status or "unknown")


async def _find_by_name(seam: AsyncSeam, *, device_id: str, name: str) -> AccessCode | None:
    with _seam_call("looking for the code", device_id=device_id):
        codes = await seam.access_codes.list(device_id=device_id, search=name)
    # Filtered here too: `search` matches parts of names, and Seam's fake server returns the
    # codes of every device.
    for code in codes:
        if code.device_id == device_id and code.name == name:
            return code
    return None


async def ensure_access_code(
    seam: AsyncSeam,
    *,
    device_id: str,
    name: str,
    code: str,
    starts_at: datetime,
    ends_at: datetime,
) -> ProgrammedCode:
    """The time-bound code `name` on the lock: found if an earlier attempt made it, else made.

    Creating is not idempotent on Seam's side, and an attempt whose answer was lost may
    have created the code all the same: looking it up by name first keeps it to one code.
    """
    with _seam_call("reading the lock", device_id=device_id):
        device = await seam.devices.get(device_id=device_id)
    if not device.can_program_online_access_codes:
        raise LockCannotTakeCodes(
            f"Seam device {device_id!r} cannot program online access codes "
            "(it is not a keypad lock Seam can set codes on)"
        )
    lengths = device.properties.supported_code_lengths if device.properties else None
    if lengths and len(code) not in lengths:
        accepted = ", ".join(str(int(length)) for length in sorted(lengths))
        raise LockCannotTakeCodes(
            f"Seam device {device_id!r} takes codes of {accepted} digits, not "
            f"{len(code)} (set ACCESS_CODE_LENGTH to one of them)"
        )

    # The pool is on unless the lock says it has none: a code that fails to set can then be
    # replaced at once by one of the codes the lock already holds (pull_backup_code).
    supports_pool = (
        device.properties.supports_backup_access_code_pool if device.properties else None
    )
    found = await _find_by_name(seam, device_id=device_id, name=name)
    if found is not None:
        logger.info("seam.code_found access_code_id=%s", found.access_code_id)
        return _programmed(found)
    try:
        created = await seam.access_codes.create(
            device_id=device_id,
            name=name,
            code=code,
            starts_at=starts_at.isoformat(),
            ends_at=ends_at.isoformat(),
            use_backup_access_code_pool=supports_pool is not False,
        )
    except SeamHttpApiError as error:
        if error.code != "duplicate_access_code":
            _translate(error, action="creating the code", device_id=device_id)
        # A create whose answer was lost, or a concurrent one, landed after our look-up.
        found = await _find_by_name(seam, device_id=device_id, name=name)
        if found is None:
            raise LockRequestRefused(
                f"Seam device {device_id!r} already has another code with the same digits"
            ) from error
        return _programmed(found)
    except (SeamError, httpx.HTTPError) as error:
        _translate(error, action="creating the code", device_id=device_id)
    return _programmed(created)


async def get_access_code_status(seam: AsyncSeam, *, access_code_id: str) -> str | None:
    """Seam's status of the code (`setting`, `set`, ...), or None once it is gone."""
    try:
        code = await seam.access_codes.get(access_code_id=access_code_id)
    except SeamHttpApiError as error:
        if error.status_code == 404:
            return None
        _translate(error, action="reading the code", device_id=None)
    except (SeamError, httpx.HTTPError) as error:
        _translate(error, action="reading the code", device_id=None)
    return code.status or "unknown"


async def delete_access_code(seam: AsyncSeam, *, access_code_id: str) -> bool:
    """Take the code off its lock: True when deleted now, False when it was already gone."""
    try:
        # Seam's API takes every call as a POST with a JSON body. The SDK's delete() sends a
        # DELETE with a query string instead, which Seam's fake server does not read.
        await seam.client.post("/access_codes/delete", json={"access_code_id": access_code_id})
    except SeamHttpApiError as error:
        if error.status_code == 404:
            return False
        _translate(error, action="deleting the code", device_id=None)
    except (SeamError, httpx.HTTPError) as error:
        _translate(error, action="deleting the code", device_id=None)
    return True


async def pull_backup_code(seam: AsyncSeam, *, access_code_id: str) -> BackupCode:
    """A code from the lock's backup pool for the code `access_code_id`, which works at once.

    Seam answers the same backup code again for the same original code, so asking twice is
    safe. A LockError that is not `retryable` means no backup code is to be had."""
    try:
        # Sent as a plain POST: Seam's API reference and its fake server answer the code as
        # `backup_access_code`, while the SDK's pull_backup_access_code() reads `access_code`
        # only and refuses the answer; both keys are read here.
        body = await seam.client.post(
            "/access_codes/pull_backup_access_code", json={"access_code_id": access_code_id}
        )
    except (SeamError, httpx.HTTPError) as error:
        _translate(error, action="pulling a backup code", device_id=None)
    found = body if isinstance(body, dict) else {}
    found = found.get("backup_access_code") or found.get("access_code") or {}
    backup_id, code = found.get("access_code_id"), found.get("code")
    if not isinstance(backup_id, str) or not isinstance(code, str) or not code:
        raise LockRequestRefused("pulling a backup code: Seam answered no code")
    return BackupCode(access_code_id=backup_id, code=code)


# Webhooks


class SeamEventInvalid(ServiceError):
    status_code = 400


@dataclass(frozen=True, slots=True)
class SeamEvent:
    """What the service reads of a Seam event, once its signature is checked."""

    id: str
    type: str
    occurred_at: datetime
    device_id: str | None = None
    access_code_id: str | None = None
    battery_level: Decimal | None = None
    battery_status: str | None = None


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def verify_webhook(payload: bytes, headers: Mapping[str, str], *, secret: str) -> SeamEvent:
    """The event, if Seam signed these bytes (Svix: `svix-id`, `svix-timestamp`,
    `svix-signature`, sent at most five minutes from now); SeamEventInvalid otherwise."""
    wanted = ("svix-id", "svix-timestamp", "svix-signature")
    try:
        Webhook(secret).verify(payload, {name: headers.get(name, "") for name in wanted})
    except (WebhookVerificationError, ValueError):
        # ValueError: a signature or secret that is not base64, a body that is not UTF-8.
        raise SeamEventInvalid(
            "Missing, invalid or stale Seam signature (svix-id, svix-timestamp, "
            "svix-signature; at most 5 minutes old)."
        ) from None
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    event_id = _text(body, "event_id") if isinstance(body, dict) else None
    event_type = _text(body, "event_type") if isinstance(body, dict) else None
    if not isinstance(body, dict) or event_id is None or event_type is None:
        raise SeamEventInvalid("The body is not a Seam event (no event_id or event_type).")
    occurred = _text(body, "occurred_at") or _text(body, "created_at")
    try:
        occurred_at = datetime.fromisoformat(occurred) if occurred else None
    except ValueError:
        occurred_at = None
    if occurred_at is None or occurred_at.tzinfo is None:
        raise SeamEventInvalid("The Seam event has no valid occurred_at time.")
    level = body.get("battery_level")
    return SeamEvent(
        id=event_id,
        type=event_type,
        occurred_at=occurred_at,
        device_id=_text(body, "device_id"),
        access_code_id=_text(body, "access_code_id"),
        battery_level=(
            Decimal(str(level)).quantize(Decimal("0.001"))
            if isinstance(level, int | float) and not isinstance(level, bool) and 0 <= level <= 1
            else None
        ),
        battery_status=_text(body, "battery_status"),
    )
