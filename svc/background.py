"""The service's periodic work: one loop and one back-off for every background job.

Every replica runs every job; the database hands each piece of work to one replica at a
time, so a job's round only has to be safe to run anywhere, at any time.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from svc.services import Outbox

logger = logging.getLogger(__name__)


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
) -> None:
    """Run `job` as soon as `wake` is woken, and every `interval` seconds regardless.

    A round that fails is logged and the next one runs as usual: a fault in one piece of
    work (a message that cannot be composed, a provider that answers nonsense) must never
    stop the job for good."""
    while True:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background.error job=%s", name)
        await wake.wait(interval, quiet=quiet)
