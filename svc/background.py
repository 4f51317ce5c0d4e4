"""The service's periodic work: one loop and one back-off for every background job.

Every replica runs every job; the database hands each piece of work to one replica at a
time, so a job's round only has to be safe to run anywhere, at any time.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from svc.errors import ServiceError
from svc.services import Outbox

logger = logging.getLogger(__name__)

# A worker whose last round ended longer ago than this many of its intervals (and at least
# STALLED_AFTER_AT_LEAST_SECONDS, longer than a round of slow Stripe or SMTP calls lasts) is
# stuck: /readyz says so.
STALLED_AFTER_ROUNDS = 5
STALLED_AFTER_AT_LEAST_SECONDS = 120.0


@dataclass
class Worker:
    """A background job's task, and when its last round ended (monotonic seconds)."""

    name: str
    interval: float
    task: "asyncio.Task[None] | None" = None
    last_round: float = field(default_factory=time.monotonic)

    def trouble(self, now: float) -> str | None:
        """What is wrong with the worker, in words; None when it runs."""
        if self.task is not None and self.task.done():
            return f"{self.name} stopped"
        idle = now - self.last_round
        if idle > max(STALLED_AFTER_ROUNDS * self.interval, STALLED_AFTER_AT_LEAST_SECONDS):
            return f"{self.name} has not finished a round for {int(idle)} s"
        return None


class WorkersNotRunning(ServiceError):
    status_code = 503


def check_workers(workers: Sequence[Worker], *, now: float | None = None) -> None:
    """WorkersNotRunning naming each worker that stopped or is stuck."""
    moment = time.monotonic() if now is None else now
    troubles = [trouble for worker in workers if (trouble := worker.trouble(moment))]
    if troubles:
        raise WorkersNotRunning(f"Background work is not running: {'; '.join(troubles)}.")


def retry_delay(base_seconds: float, attempt: int, *, at_most: float) -> float:
    """The wait before retry number `attempt` (1 for the first): doubling, capped."""
    return float(min(base_seconds * 2 ** (attempt - 1), at_most))


async def run_periodically(
    name: str,
    job: Callable[[], Awaitable[object]],
    *,
    wake: Outbox,
    interval: float,
    quiet: float = 0.0,
    worker: Worker | None = None,
) -> None:
    """Run `job` as soon as `wake` is woken, and every `interval` seconds regardless.

    A round that fails is logged and the next one runs as usual: a fault in one piece of
    work (a message that cannot be composed, a provider that answers nonsense) must never
    stop the job for good. Each round, failed or not, is marked on `worker`."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background.error job=%s", name)
        if worker is not None:
            worker.last_round = time.monotonic()
        await wake.wait(interval, quiet=quiet)
