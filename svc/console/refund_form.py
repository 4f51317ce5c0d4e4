"""The console's refund form: the amount as the operator types it (pounds or pence, empty
for all that is left), read into pence, and the words of what happened. The refund itself
is `svc.refunds.refund_session`, the same as ``python -m svc sessions refund``."""

import re
from decimal import Decimal
from uuid import UUID

from svc import refunds
from svc.errors import ServiceError
from svc.services import Services

# 1.50, £1.50 or 2 are pounds; 150p is pence. At most two decimals: pence are whole.
_POUNDS = re.compile(r"£?\s*(\d{1,7})(?:\.(\d{1,2}))?")
_PENCE = re.compile(r"(\d{1,9})\s*p")


class BadAmount(ServiceError):
    status_code = 400

    def __init__(self, typed: str) -> None:
        super().__init__(
            f"{typed!r} is not an amount: write pounds (1.50) or pence (150p), or leave it "
            "empty to refund all that is left. Nothing was refunded."
        )


def amount_pence(typed: str) -> int | None:
    """The pence of what the operator typed; None (all that is left) when empty."""
    text = typed.strip().lower()
    if not text:
        return None
    if pence := _PENCE.fullmatch(text):
        value = int(pence[1])
    elif pounds := _POUNDS.fullmatch(text):
        value = int(Decimal(f"{pounds[1]}.{pounds[2] or '0'}") * 100)
    else:
        raise BadAmount(typed)
    if value <= 0:
        raise BadAmount(typed)
    return value


async def refund_from_form(services: Services, session_id: UUID, fields: dict[str, str]) -> int:
    """Refund as the form asks; the pence refunded. A refusal is raised in words."""
    amount = amount_pence(fields.get("amount", ""))
    reason = fields.get("reason", "").strip() or None
    done = await refunds.refund_session(services, session_id, amount_pence=amount, reason=reason)
    return done.refunded_pence
