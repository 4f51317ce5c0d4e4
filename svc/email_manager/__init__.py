"""E-mail: the messages (one typed payload per kind, worded by templates, as plain text and
HTML) and their delivery.

Messages are queued in the database's outbox by the booking code (with the data they
need, as JSON) and rendered here when they are sent, by SMTP, or in local mode without
SMTP settings to `.eml` files in OUTBOX_DIR: the sender is chosen once, at start.
"""

from svc.addresses import InvalidRecipient, check_recipient, valid_recipient
from svc.email_manager.compose import Composed, Rendered, compose, render
from svc.email_manager.messages import (
    access_code_email,
    backup_code_emails,
    code_not_removed_alert,
    dead_letter_alert,
    debt_outstanding_email,
    hold_declined_email,
    lock_failed_emails,
    lock_incident_alert,
    operator_alert,
    pod_unavailable_email,
    reminder_email,
    settlement_emails,
)
from svc.email_manager.refund_messages import dispute_emails, refund_emails
from svc.email_manager.schemas import EmailPayload, EmailPayloadInvalid, read, stored
from svc.email_manager.sender import EmailNotSent, EmailSender, FileSender, Mailer, SmtpSender

__all__ = [
    "Composed",
    "EmailNotSent",
    "EmailPayload",
    "EmailPayloadInvalid",
    "EmailSender",
    "InvalidRecipient",
    "FileSender",
    "Mailer",
    "Rendered",
    "SmtpSender",
    "access_code_email",
    "backup_code_emails",
    "check_recipient",
    "code_not_removed_alert",
    "compose",
    "dead_letter_alert",
    "debt_outstanding_email",
    "dispute_emails",
    "hold_declined_email",
    "lock_failed_emails",
    "lock_incident_alert",
    "operator_alert",
    "pod_unavailable_email",
    "read",
    "refund_emails",
    "reminder_email",
    "render",
    "settlement_emails",
    "stored",
    "valid_recipient",
]
