"""What the service talks to, built once at start, and the wake-up of its background work."""

import asyncio
import time
from dataclasses import dataclass, field

import stripe
from seam import AsyncSeam

from svc.database_accessor import Database
from svc.email_manager import Mailer
from svc.env import Settings
from svc.metrics import Metrics
from svc.seam_accessor import LockStateCache

# A woken worker lingers at most this long for more work to do in the same round.
LINGER_AT_MOST_SECONDS = 0.5


@dataclass
class Outbox:
    """Wakes a background worker (the e-mail sender, the locks') as soon as it has work,
    instead of at its next round."""

    _event: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float, *, quiet: float = 0.0) -> None:
        """Until woken, or until `timeout` passes. With `quiet`, a wake is followed by a
        wait until no other came for `quiet` seconds (LINGER_AT_MOST_SECONDS at most): work
        queued together is done in one round, after the requests that queued it."""
        if await self._woken(timeout) and quiet:
            lingering_until = time.monotonic() + LINGER_AT_MOST_SECONDS
            while time.monotonic() < lingering_until and await self._woken(
                min(quiet, lingering_until - time.monotonic())
            ):
                pass

    async def _woken(self, timeout: float) -> bool:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
        # arrives as the event is set, and the worker then outlives the app's shutdown.
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True


@dataclass(frozen=True)
class Services:
    """What the lifecycle talks to, built once by the app's lifespan."""

    settings: Settings
    db: Database
    stripe: stripe.StripeClient
    mailer: Mailer
    outbox: Outbox
    seam: AsyncSeam | None = None
    """Seam's client when SEAM_API_KEY is set; without it every code is generated locally."""
    lock_work: Outbox = field(default_factory=Outbox)
    lock_states: LockStateCache = field(default_factory=LockStateCache)
    """Seam's last answer about each lock, for LOCK_STATUS_CACHE_SECONDS."""
    metrics: Metrics = field(default_factory=Metrics)
    """The app's counters (GET /metrics)."""

    def has_smart_lock(self, seam_device_id: str | None) -> bool:
        return self.seam is not None and seam_device_id is not None
