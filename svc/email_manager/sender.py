"""Delivery: the Mailer composes each message and hands it to the sender chosen at start,
SMTP, or in local mode without SMTP settings `.eml` files in OUTBOX_DIR."""

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import aiosmtplib

from svc.email_manager.compose import Composed, compose
from svc.email_manager.schemas import EmailPayloadInvalid
from svc.env import Settings
from svc.records import OutboxEmail
from svc.types import SmtpSecurity

logger = logging.getLogger(__name__)


class EmailNotSent(Exception):
    """The message could not be handed over; it stays queued and is tried again."""


_SMTP_TROUBLE = (aiosmtplib.SMTPException, OSError, TimeoutError)


class EmailSender(Protocol):
    async def send_all(
        self, messages: Sequence[tuple[OutboxEmail, Composed]]
    ) -> list[EmailNotSent | None]:
        """Hand over each message; what went wrong with each, in order."""
        ...


class SmtpSender:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send_all(
        self, messages: Sequence[tuple[OutboxEmail, Composed]]
    ) -> list[EmailNotSent | None]:
        """Over one connection: a burst of receipts then costs one handshake (and one login
        to Gmail, which counts them) instead of one each."""
        settings = self._settings
        password = settings.EMAIL_PASSWORD.get_secret_value() if settings.EMAIL_PASSWORD else None
        client = aiosmtplib.SMTP(
            hostname=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.email_sender if password else None,
            password=password,
            use_tls=settings.SMTP_SECURITY is SmtpSecurity.SSL,
            start_tls=settings.SMTP_SECURITY is SmtpSecurity.STARTTLS,
            timeout=settings.SMTP_TIMEOUT_SECONDS,
        )
        try:
            await client.connect()
        except _SMTP_TROUBLE as error:
            failure = EmailNotSent(f"{type(error).__name__}: {error}")
            return [failure] * len(messages)
        outcomes: list[EmailNotSent | None] = []
        try:
            for email, message in messages:
                if not client.is_connected:
                    outcomes.append(EmailNotSent("SMTPServerDisconnected: connection lost"))
                    continue
                try:
                    await client.sendmail(settings.email_sender, [email.recipient], message.raw)
                except _SMTP_TROUBLE as error:
                    outcomes.append(EmailNotSent(f"{type(error).__name__}: {error}"))
                else:
                    outcomes.append(None)
        finally:
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
        """Send each message; what went wrong with each, in order. A message whose payload
        does not fit its kind is not sent, and says why; the others go."""
        outcomes: list[EmailNotSent | None] = [None] * len(emails)
        ready: list[tuple[int, tuple[OutboxEmail, Composed]]] = []
        for index, email in enumerate(emails):
            try:
                ready.append((index, (email, compose(email, self._settings))))
            except EmailPayloadInvalid as error:
                logger.error("email.invalid id=%s kind=%s error=%s", email.id, email.kind, error)
                outcomes[index] = EmailNotSent(str(error))
        if ready:
            sent = await self._sender.send_all([message for _, message in ready])
            for (index, _), outcome in zip(ready, sent, strict=True):
                outcomes[index] = outcome
        return outcomes
