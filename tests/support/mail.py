"""An SMTP server (aiosmtpd) for the tests, and a mailbox to read what it received."""

import asyncio
import re
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Received:
    recipients: list[str]
    message: EmailMessage

    @property
    def kind(self) -> str:
        return str(self.message["X-Qwip-Kind"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None
        return str(part.get_content())

    def access_code(self) -> str:
        found = re.search(r"door code for .+ is (\d+)\.", self.text)
        assert found, self.text
        return found.group(1)

    def end_session_link(self) -> str:
        found = re.search(r"End my session: (\S+)", self.text)
        assert found, self.text
        return found.group(1)


class Mailbox:
    """What the server received, safe to read from the test while the server thread writes."""

    def __init__(self) -> None:
        self._messages: list[Received] = []
        self._lock = threading.Lock()
        self.port = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.content or b"", policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._messages.append(Received(list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def messages(self, kind: str | None = None, to: str | None = None) -> list[Received]:
        with self._lock:
            return [
                m
                for m in self._messages
                if (kind is None or m.kind == kind) and (to is None or to in m.recipients)
            ]

    async def wait_for(
        self, kind: str, *, count: int = 1, to: str | None = None, timeout: float = 15
    ) -> list[Received]:
        """The messages of a kind once `count` have arrived; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(kind, to)
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"expected {count} {kind!r} e-mail(s), got {len(self.messages(kind, to))}; "
            f"all: {[(m.kind, m.recipients) for m in self.messages()]}"
        )


def start_smtp_server(port: int, mailbox: Mailbox | None = None) -> tuple[Mailbox, Controller]:
    """An SMTP server on `port` delivering into `mailbox` (a new one unless given)."""
    mailbox = mailbox or Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    mailbox.port = port
    return mailbox, controller
