"""Cloudflare Turnstile: the booking page's challenge, verified here before Stripe is called.

https://developers.cloudflare.com/turnstile/get-started/server-side-validation/
"""

import logging

import aiohttp

from svc.env import Settings
from svc.errors import ServiceError

logger = logging.getLogger(__name__)

VERIFY_TIMEOUT_SECONDS = 10


class ChallengeFailed(ServiceError):
    status_code = 403


class ChallengeUnavailable(ServiceError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__(
            "The check that you are not a robot cannot be verified right now; nothing was "
            "saved. Please try again in a minute."
        )


async def verify(settings: Settings, *, token: str | None, remote_ip: str) -> None:
    """Raise ChallengeFailed unless Cloudflare vouches for the token (single-use)."""
    if not token:
        raise ChallengeFailed(
            "Complete the check that you are not a robot (the box above the button), "
            "then try again."
        )
    assert settings.TURNSTILE_SECRET_KEY is not None
    form = {
        "secret": settings.TURNSTILE_SECRET_KEY.get_secret_value(),
        "response": token,
        "remoteip": remote_ip,
    }
    # One short-lived connection: a booking verifies one token, and Turnstile is optional,
    # so no client is kept open for the app's life.
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=VERIFY_TIMEOUT_SECONDS)
        ) as http:
            async with http.post(settings.TURNSTILE_VERIFY_URL, data=form) as response:
                if response.status >= 500:
                    raise ChallengeUnavailable()
                answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        logger.warning("turnstile.unavailable error=%s", type(error).__name__)
        raise ChallengeUnavailable() from error
    if not isinstance(answer, dict) or answer.get("success") is not True:
        codes = answer.get("error-codes") if isinstance(answer, dict) else None
        logger.info("turnstile.refused codes=%s", codes)
        raise ChallengeFailed(
            "The check that you are not a robot did not pass or has expired; "
            "complete it again, then try again."
        )
