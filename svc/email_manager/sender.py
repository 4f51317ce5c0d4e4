"""Delivery: the Mailer composes each message and hands it to the sender chosen at start,
SMTP, or in local mode without SMTP settings `.eml` files in OUTBOX_DIR."""

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiosmtplib

from svc.addresses import InvalidRecipient, check_recipient
from svc.email_manager.compose import Composed, compose
from svc.email_manager.schemas import EmailPayloadInvalid
from svc.env import Settings
from svc.models.records import OutboxEmail
from svc.types import SmtpSecurity

logger = logging.getLogger(__name__)


class EmailNotSent(Exception):
    """The message was not handed over; it stays queued and is tried again.

    `refused`: the fault lies with this message (it cannot be composed, or the mail server
    refused it), not with the way to the server; a message refused on its
    EMAIL_MAX_ATTEMPTS-th attempt is set aside as a dead letter. An outage of the server is
    never the message's fault: it waits for the server however long that takes.
    `hopeless`: no attempt can ever succeed (the recipient is not an address at all).
    """

    def __init__(self, reason: str, *, refused: bool = False, hopeless: bool = False) -> None:
        super().__init__(reason)
        self.refused = refused or hopeless
        self.hopeless = hopeless


_SMTP_TROUBLE = (aiosmtplib.SMTPException, OSError, TimeoutError)
# 421: the server is closing the connection (busy, shutting down), whatever the message.
_SERVICE_UNAVAILABLE = 421


def _send_failure(error: Exception) -> EmailNotSent:
    """What one message's failed hand-over says about that message."""
    reason = f"{type(error).__name__}: {error}"
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in error.recipients]
        return EmailNotSent(reason, refused=_SERVICE_UNAVAILABLE not in codes)
    if isinstance(error, aiosmtplib.SMTPSenderRefused):
        # The server refuses our sender: the settings are wrong, not this message.
        return EmailNotSent(reason)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return EmailNotSent(reason, refused=error.code != _SERVICE_UNAVAILABLE)
    if isinstance(error, _SMTP_TROUBLE):
        return EmailNotSent(reason)
    # Anything else (an address the client cannot encode, say) is about this message.
    return EmailNotSent(reason, refused=True)


class EmailSender(Protocol):
    async def send_all(
        self, messages: Sequence[tuple[OutboxEmail, Composed]]
    ) -> list[EmailNotSent | None]:
        """Hand over each message; what went wrong with each, in order."""
        ...


class SmtpSender:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def _client(self) -> aiosmtplib.SMTP:
        settings = self._settings
        password = settings.EMAIL_PASSWORD.get_secret_value() if settings.EMAIL_PASSWORD else None
        return aiosmtplib.SMTP(
            hostname=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.email_sender if password else None,
            password=password,
            use_tls=settings.SMTP_SECURITY is SmtpSecurity.SSL,
            start_tls=settings.SMTP_SECURITY is SmtpSecurity.STARTTLS,
            timeout=settings.SMTP_TIMEOUT_SECONDS,
        )

    async def send_all(
        self, messages: Sequence[tuple[OutboxEmail, Composed]]
    ) -> list[EmailNotSent | None]:
        """Over one connection: a burst of receipts then costs one handshake (and one login
        to Gmail, which counts them) instead of one each. Each message is handed over on
        its own: one the server refuses (some servers hang up after a refusal) leaves the
        others to go, over a new connection if need be."""
        sender = self._settings.email_sender
        outcomes: list[EmailNotSent | None] = []
        client: aiosmtplib.SMTP | None = None
        try:
            for email, message in messages:
                if client is None or not client.is_connected:
                    if client is not None:
                        client.close()
                    client = self._client()
                    try:
                        await client.connect()
                    except _SMTP_TROUBLE as error:
                        failure = EmailNotSent(f"{type(error).__name__}: {error}")
                        outcomes += [failure] * (len(messages) - len(outcomes))
                        break
                try:
                    await client.sendmail(sender, [email.recipient], message.raw)
                except Exception as error:  # one message's fault stays its own
                    outcomes.append(_send_failure(error))
                else:
                    outcomes.append(None)
        finally:
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except _SMTP_TROUBLE:
                    client.close()
        return outcomes


class FileSender:
    """Local mode only: the outbox folder is the developer's inbox."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    async def send_all(
        self, messages: Sequence[tuple[OutboxEmail, Composed]]
    ) -> list[EmailNotSent | None]:
        for email, message in messages:
            await asyncio.to_thread(self._write, email, message)
        return [None] * len(messages)

    def _write(self, email: OutboxEmail, composed: Composed) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = self._folder / f"{stamp}-{email.id:06d}-{email.kind}.eml"
        path.write_bytes(composed.raw)
        # The text is shown because the developer reads it here.
        logger.info(
            "email.written path=%s to=%s subject=%s\n%s",
            path,
            email.recipient,
            composed.subject,
            composed.text,
        )


class Mailer:
    """Composes queued messages and hands them to its sender."""

    def __init__(self, settings: Settings, sender: EmailSender) -> None:
        self._settings = settings
        self._sender = sender

    async def send(self, email: OutboxEmail) -> None:
        [failure] = await self.send_all([email])
        if failure is not None:
            raise failure

    async def send_all(self, emails: Sequence[OutboxEmail]) -> list[EmailNotSent | None]:
        """Send each message; what went wrong with each, in order. A message that cannot
        be composed is not sent, and says why; the others go."""
        outcomes: list[EmailNotSent | None] = [None] * len(emails)
        ready: list[tuple[int, tuple[OutboxEmail, Composed]]] = []
        for index, email in enumerate(emails):
            try:
                check_recipient(email.recipient)
                ready.append((index, (email, compose(email, self._settings))))
            except InvalidRecipient as error:
                logger.error("email.bad_recipient id=%s kind=%s", email.id, email.kind)
                outcomes[index] = EmailNotSent(str(error), hopeless=True)
            except EmailPayloadInvalid as error:
                logger.error(
                    "email.invalid id=%s kind=%s error=%r", email.id, email.kind, str(error)
                )
                outcomes[index] = EmailNotSent(str(error), refused=True)
            except Exception as error:  # one message's fault stays its own
                # A template or header the email package will not write: this message
                # fails, and only it.
                logger.exception("email.uncomposable id=%s kind=%s", email.id, email.kind)
                outcomes[index] = EmailNotSent(f"{type(error).__name__}: {error}", refused=True)
        if ready:
            sent = await self._sender.send_all([message for _, message in ready])
            for (index, _), outcome in zip(ready, sent, strict=True):
                outcomes[index] = outcome
        return outcomes
