"""Small shared types: money, ids and the states a session moves through."""

from enum import StrEnum
from typing import NewType

Pence = NewType("Pence", int)
"""An amount in the currency's minor unit (pence for GBP). Never a float."""


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


class AccessCodeStatus(StrEnum):
    """Where a session's door code is. Seam's own statuses of a code it holds (`unset`,
    `setting`, `set`, `removing`, `unknown`) are kept as Seam gives them."""

    LOCAL = "local"
    """The pod has no smart lock (or smart locks are off): the code is on no lock."""
    PENDING = "pending"
    """On its way to the pod's lock: Seam has not taken it yet."""
    SET = "set"
    """Seam: the lock has the code."""
    REMOVING = "removing"
    """The session has ended; the code is coming off the lock."""
    REMOVED = "removed"
    """Off the lock (or never reached it before the session ended)."""
    EXPIRED = "expired"
    """Could not be taken off, but its time window is over: the lock refuses it."""
    FAILED = "failed"
    """Could not be put on the lock: the session was ended without charge."""


class StartOutcomeKind(StrEnum):
    """What an attempt to start a session from a SetupIntent came to."""

    STARTED = "started"
    EXISTING = "existing"
    """The SetupIntent's session had started already."""
    DUPLICATE = "duplicate"
    """The same Stripe event was processed before."""
    POD_UNAVAILABLE = "pod_unavailable"
    CODE_CLASH = "code_clash"
    """The access code chosen is held by another open session on the same lock: retry."""
    UNKNOWN_POD = "unknown_pod"
    REFUSED_BEFORE = "refused_before"
    """The SetupIntent was refused before (the pod was unavailable): it never starts one."""
    NOT_READY = "not_ready"
    """Stripe says the SetupIntent has not succeeded, or has no card or no Customer."""
    EXPIRED = "expired"
    """The SetupIntent was created more than BOOKING_WINDOW_MINUTES ago."""
    HOLD_RELEASED = "hold_released"
    """Its hold on the card is not held (released, abandoned): it starts nothing."""
    HOLD_REQUIRES_ACTION = "hold_requires_action"
    """The bank asks the cardholder to authenticate the hold first."""
    HOLD_DECLINED = "hold_declined"
    """The card was declined for the hold: nothing started, nothing is held or owed."""
    DEBT_OUTSTANDING = "debt_outstanding"
    """The customer (by e-mail or card) owes for an earlier session: nothing started."""


class PaymentRecorded(StrEnum):
    """What recording a payment outcome did (qwip_record_payment's answer)."""

    RECORDED = "recorded"
    UNCHANGED = "unchanged"
    """The payment had already moved past what was offered."""
    DUPLICATE = "duplicate"
    """The same Stripe event was processed before."""


class AppEnv(StrEnum):
    LOCAL = "local"
    """Stand-ins for whatever is not configured (localstripe, embedded Postgres, outbox)."""
    TEST = "test"
    """Production's rules, but with Stripe test keys only, so that a test stack may use
    local peers (a Stripe emulator, plain SMTP to this machine, an http:// address)."""
    PRODUCTION = "production"


class SmtpSecurity(StrEnum):
    SSL = "ssl"
    STARTTLS = "starttls"
    NONE = "none"
