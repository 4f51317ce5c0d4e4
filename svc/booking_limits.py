"""What keeps the booking endpoint from being a card-testing tool: a valid e-mail, the
client's real address, and how many card setups an address and an e-mail may start.

The counts live in Postgres (`qwip_take_booking_slot`), so the limits are exact whichever
replica answers.
"""

import hashlib
import ipaddress
import logging
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

# uvicorn's own parser of FORWARDED_ALLOW_IPS, so the service and uvicorn's proxy headers
# read the setting alike (addresses, networks, *; the first untrusted hop from the right).
from uvicorn.middleware.proxy_headers import _TrustedHosts

from svc.database_accessor import Database
from svc.env import Settings
from svc.errors import ServiceError

logger = logging.getLogger(__name__)


class InvalidEmail(ServiceError):
    status_code = 422


class TooManyBookings(ServiceError):
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        minutes = -(-retry_after // 60)
        super().__init__(
            "Too many card setups from this connection or for this e-mail address in the "
            f"last few minutes. Please try again in {minutes} minute"
            f"{'' if minutes == 1 else 's'}."
        )
        self.retry_after = retry_after


def valid_email(address: str) -> str:
    """The address, normalised, or InvalidEmail saying what is wrong with it."""
    try:
        # No DNS look-up: it would be a network call per booking, and a slow one.
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidEmail(f"email: {address!r} is not a valid e-mail address. {error}") from None
    return checked.normalized


@lru_cache(maxsize=8)
def _trusted(forwarded_allow_ips: str) -> _TrustedHosts:
    return _TrustedHosts(forwarded_allow_ips)


def client_ip(peer: str | None, forwarded_for: list[str], *, forwarded_allow_ips: str) -> str:
    """The client's address: the peer's, or from X-Forwarded-For when the peer is trusted.

    uvicorn may already have put the forwarded address in place of the peer's (it reads
    FORWARDED_ALLOW_IPS too); applying the same rule again then changes nothing, since the
    address it chose is the first untrusted one.
    """
    trusted = _trusted(forwarded_allow_ips)
    host = peer or "unknown"
    if forwarded_for and peer in trusted:
        forwarded, _ = trusted.get_trusted_client_address(", ".join(forwarded_for))
        host = forwarded or host
    return host


def ip_key(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"ip:{host[:100]}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"ip:{address.ipv4_mapped}"
        # One IPv6 subscriber holds a whole /64: count the network, not each address in it.
        return f"ip:{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"ip:{address}"


def _email_key(email: str) -> str:
    # Hashed: the table needs only to tell addresses apart, not to know them.
    return "email:" + hashlib.sha256(email.lower().encode()).hexdigest()


async def take_booking_slot(
    db: Database, settings: Settings, *, ip: str, email: str | None
) -> None:
    """Count one card setup against the client's address and the e-mail, or raise
    TooManyBookings (with the seconds until a slot frees) when either is at its limit.
    (Without an e-mail, which only the seed's GET of local mode allows, the address alone.)"""
    limits = {ip_key(ip): settings.BOOKING_RATE_LIMIT_PER_IP}
    if email is not None:
        limits[_email_key(email)] = settings.BOOKING_RATE_LIMIT_PER_EMAIL
    wait = await db.take_booking_slot(
        limits, window_seconds=settings.BOOKING_RATE_LIMIT_WINDOW_SECONDS
    )
    if wait:
        logger.warning("booking.rate_limited retry_after=%s", wait)
        raise TooManyBookings(wait)
