"""Whether an address may be written into a message's envelope and To header at all.

A leaf module: the mailer, the data layer and the payments manager each check addresses,
and none of them may import another.

Checked before anything is queued, and again before a queued message is composed: an
address taken from Stripe (a card's billing e-mail is whatever the cardholder typed) is
not trusted to be one.
"""

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email


class InvalidRecipient(ValueError):
    """Not an e-mail address: no message may be sent to it."""


# The same address is checked when it is queued and again when it is sent: remembered.
@lru_cache(maxsize=4096)
def check_recipient(address: str) -> str:
    """The address as given, or InvalidRecipient saying what is wrong with it.

    Syntax only (no DNS lookup: that is slow and says nothing a delivery attempt will
    not). RFC 2606's `.test` names are allowed: they can never be delivered anywhere, so
    they harm nothing, and the tests and demos use them.
    """
    try:
        validate_email(address, check_deliverability=False, test_environment=True)
    except EmailNotValidError as error:
        raise InvalidRecipient(f"{address!r} is not an e-mail address: {error}") from None
    return address


def valid_recipient(address: str | None) -> str | None:
    """The address if it is one, else None."""
    if not address:
        return None
    try:
        return check_recipient(address)
    except InvalidRecipient:
        return None
