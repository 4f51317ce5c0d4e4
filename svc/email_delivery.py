"""Sending the outbox: e-mails queued with what they report, delivered by one replica at
a time, retried with doubling delays while the mail server refuses them.

Each message fails on its own. One that can never be sent (its recipient is not an
address) or that is still refused at its EMAIL_MAX_ATTEMPTS-th attempt becomes a dead
letter: never handed out again, and OPERATOR_EMAIL is told once. A mail server that cannot
be reached is nobody's message's fault: the messages wait for it, however long.
"""

import logging
import math

from svc import email_manager, request_ids
from svc.background import retry_delay
from svc.email_manager import EmailNotSent
from svc.models.records import REQUEST_ID_KEY, OutboxEmail
from svc.services import Services

logger = logging.getLogger(__name__)

EMAIL_BATCH = 20
# The e-mail sender starts once nothing new was queued for this long: a burst of bookings
# or ends is delivered in a few rounds after the burst, over one SMTP connection each,
# instead of a connection (and a login to the mail server) for every few messages.
EMAIL_QUIET_SECONDS = 0.02
EMAIL_MAX_RETRY_SECONDS = 600


async def deliver_due_emails(services: Services) -> int:
    """Send what is due; each message is leased to this replica while it sends."""
    settings = services.settings
    # Long enough for one round of SMTP; short enough that a crashed replica's messages
    # are picked up by another one soon.
    lease = math.ceil(settings.SMTP_TIMEOUT_SECONDS * 2 + 5)
    emails = await services.db.claim_emails(limit=EMAIL_BATCH, lease_seconds=lease)
    if emails:
        failures = await services.mailer.send_all(emails)
        sent = [email for email, failure in zip(emails, failures, strict=True) if failure is None]
        if sent:
            await services.db.mark_emails_sent([email.id for email in sent])
        for email, failure in zip(emails, failures, strict=True):
            with request_ids.bound(email.payload.get(REQUEST_ID_KEY)):
                await _account_for(services, email, failure)
    return len(emails)


async def _account_for(
    services: Services, email: OutboxEmail, failure: EmailNotSent | None
) -> None:
    """Log, count, and set aside or retry, one message of the round."""
    metrics = services.metrics
    if failure is None:
        metrics.emails_sent.labels(email.kind).inc()
        logger.info("email.sent kind=%s attempt=%s", email.kind, email.attempts)
    elif failure.hopeless or (
        failure.refused and email.attempts >= services.settings.EMAIL_MAX_ATTEMPTS
    ):
        metrics.emails_failed.labels(email.kind, "dead").inc()
        await _dead_letter(services, email, failure)
    else:
        metrics.emails_failed.labels(email.kind, "retry").inc()
        await _postpone(services, email, failure)


async def _dead_letter(services: Services, email: OutboxEmail, failure: EmailNotSent) -> None:
    notice = email_manager.dead_letter_alert(
        email,
        reason=str(failure),
        hopeless=failure.hopeless,
        operator=services.settings.OPERATOR_EMAIL,
    )
    logger.error("email.dead kind=%s attempt=%s error=%r", email.kind, email.attempts, str(failure))
    if await services.db.dead_letter_email(
        email.id, error=str(failure), notice=notice[0] if notice else None
    ):
        services.outbox.wake()


async def _postpone(services: Services, email: OutboxEmail, failure: EmailNotSent) -> None:
    delay = retry_delay(
        services.settings.EMAIL_RETRY_BASE_SECONDS, email.attempts, at_most=EMAIL_MAX_RETRY_SECONDS
    )
    logger.warning(
        "email.retry kind=%s attempt=%s in_seconds=%s error=%r",
        email.kind,
        email.attempts,
        delay,
        str(failure),
    )
    await services.db.mark_email_failed(
        email.id, retry_in_seconds=math.ceil(delay), error=str(failure)
    )


async def deliver_all_due_emails(services: Services) -> None:
    """The e-mail job's round: send until nothing is due."""
    while await deliver_due_emails(services) == EMAIL_BATCH:
        pass
