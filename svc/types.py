"""Small shared types: money, ids and the states a session moves through."""

from enum import StrEnum
from typing import NewType
from uuid import UUID

Pence = NewType("Pence", int)
"""An amount in the currency's minor unit (pence for GBP). Never a float."""

PodId = NewType("PodId", int)
SessionId = NewType("SessionId", UUID)


class PaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REQUIRES_ACTION = "requires_action"
    NOT_CHARGED = "not_charged"


class SessionState(StrEnum):
    OPEN = "open"
    """The customer is in the pod: no end time yet."""
    ENDED_UNSETTLED = "ended_unsettled"
    """The end time is fixed; the charge has not reached a final outcome yet."""
    SETTLED = "settled"
    """Ended, and the payment reached a final outcome."""


class AppEnv(StrEnum):
    LOCAL = "local"
    PRODUCTION = "production"


class SmtpSecurity(StrEnum):
    SSL = "ssl"
    STARTTLS = "starttls"
    NONE = "none"
