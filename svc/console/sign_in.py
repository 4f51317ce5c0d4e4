"""Signing in to the console: slowed after each failure, and limited per client address
in Postgres, so that every replica counts the same failures.

The count uses the booking limits' sliding window (`qwip_take_booking_slot`) under keys of
its own: each attempt takes a slot before the password is checked (so that attempts sent
at once cannot all slip under the limit), and a successful sign-in forgets its address's
count.
"""

import asyncio
import logging

from svc.booking_limits import ip_key
from svc.console.auth import ConsoleAuth
from svc.database_accessor import Database

logger = logging.getLogger(__name__)

SIGN_IN_ATTEMPTS = 5
"""Failed sign-ins from one address in SIGN_IN_WINDOW_SECONDS before it must wait."""
SIGN_IN_WINDOW_SECONDS = 900
FAILED_SIGN_IN_PAUSE_SECONDS = 1.0
"""Each wrong password is answered this much later: guessing is slow even under the limit."""


def attempts_key(client_ip: str) -> str:
    return f"admin_sign_in:{ip_key(client_ip)}"


async def sign_in(db: Database, auth: ConsoleAuth, *, password: str, client_ip: str) -> int | None:
    """None when the password is right; 0 when it is wrong; else the seconds the address
    must wait before another try (the password is then not even checked)."""
    key = attempts_key(client_ip)
    wait = await db.take_booking_slot(
        {key: SIGN_IN_ATTEMPTS}, window_seconds=SIGN_IN_WINDOW_SECONDS
    )
    if wait:
        logger.warning("console.sign_in_limited retry_after=%s", wait)
        return wait
    if await asyncio.to_thread(auth.check_password, password):
        await db.forget_attempts(key)
        logger.info("console.signed_in")
        return None
    logger.warning("console.sign_in_failed")
    await asyncio.sleep(FAILED_SIGN_IN_PAUSE_SECONDS)
    return 0
