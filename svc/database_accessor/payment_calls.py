"""The calls for owed sessions (the pay page, debts) and for refunds and disputes: part of
`Database`, each call of a ``qwip_*`` SQL function written once, as in `base`."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, TypeVar
from uuid import UUID

from svc.database_accessor.rows import _emails_json, _uuid
from svc.models.records import QueuedEmail, RecoveryAttempt
from svc.models.refunds import RefundReservation, SessionRefunds, StripeRefund

_T = TypeVar("_T")


class PaymentCalls(ABC):
    """Mixed into `Database`, which supplies how a function is called."""

    @abstractmethod
    async def _call_value(self, function: str, params: dict[str, object]) -> Any: ...

    @abstractmethod
    def _expect(self, value: object, kind: type[_T], function: str) -> _T: ...

    # Owed sessions: paying later, and no new booking meanwhile

    async def begin_recovery(
        self, session_id: UUID, *, after_attempt: int | None = None
    ) -> RecoveryAttempt | None:
        """The session's payment attempt as it stands, or (with `after_attempt`) the next
        one, made once however many callers ask; None for an unknown session."""
        function = "qwip_begin_recovery"
        result = await self._call_value(
            function, {"p_session_id": session_id, "p_after_attempt": after_attempt}
        )
        if not result:
            # Postgres's null: PostgREST may give it as an empty body.
            return None
        row = self._expect(result, dict, function)
        return RecoveryAttempt(
            attempt=int(row["attempt"]), payment_intent_id=row.get("payment_intent_id")
        )

    async def record_recovery(
        self, session_id: UUID, *, attempt: int, payment_intent_id: str
    ) -> None:
        await self._call_value(
            "qwip_record_recovery",
            {
                "p_session_id": session_id,
                "p_attempt": attempt,
                "p_payment_intent_id": payment_intent_id,
            },
        )

    async def record_card_fingerprint(self, session_id: UUID, *, fingerprint: str) -> None:
        await self._call_value(
            "qwip_record_card_fingerprint",
            {"p_session_id": session_id, "p_fingerprint": fingerprint},
        )

    async def find_unpaid_session(
        self, *, email: str | None, fingerprint: str | None
    ) -> UUID | None:
        """The oldest session still owed by this e-mail (any case) or this card."""
        found = await self._call_value(
            "qwip_find_unpaid_session", {"p_email": email, "p_fingerprint": fingerprint}
        )
        return _uuid(found) if found else None

    # Refunds and disputes (the rules: supabase/migrations/0010_refunds_and_disputes.sql)

    async def get_session_refunds(self, session_id: UUID) -> SessionRefunds | None:
        function = "qwip_session_refunds"
        result = await self._call_value(function, {"p_session_id": session_id})
        if result is None:
            return None
        return SessionRefunds.from_json(self._expect(result, dict, function))

    async def reserve_refund(
        self, session_id: UUID, *, request_id: UUID, amount_pence: int | None, reason: str | None
    ) -> RefundReservation:
        """Reserve a refund (None: all that may still be refunded), split over the session's
        PaymentIntents, under the session's row lock; or say why not."""
        function = "qwip_reserve_refund"
        result = await self._call_value(
            function,
            {
                "p_session_id": session_id,
                "p_request_id": request_id,
                "p_amount_pence": amount_pence,
                "p_reason": reason,
            },
        )
        return RefundReservation.from_json(self._expect(result, dict, function))

    async def record_refund(
        self,
        refund_id: int,
        *,
        stripe_refund_id: str | None,
        state: str,
        emails: Sequence[QueuedEmail] = (),
    ) -> str | None:
        """Stripe's answer to a reserved refund (only forward), with the request's e-mails;
        the refund's state now."""
        function = "qwip_record_refund"
        result = await self._call_value(
            function,
            {
                "p_refund_id": refund_id,
                "p_stripe_refund_id": stripe_refund_id,
                "p_state": state,
                "p_emails": _emails_json(emails),
            },
        )
        return None if result is None else self._expect(result, str, function)

    async def sync_refunds(
        self,
        session_id: UUID,
        *,
        payment_intent_id: str,
        refunds: Sequence[StripeRefund],
        event_id: str,
        event_type: str,
        emails: Sequence[QueuedEmail] = (),
    ) -> str:
        """Stripe's refunds of one PaymentIntent of the session, with the event, once:
        "recorded", "duplicate" or "unknown"."""
        function = "qwip_sync_refunds"
        result = await self._call_value(
            function,
            {
                "p_session_id": session_id,
                "p_payment_intent_id": payment_intent_id,
                "p_refunds": [refund.as_json() for refund in refunds],
                "p_event_id": event_id,
                "p_event_type": event_type,
                "p_emails": _emails_json(emails),
            },
        )
        return self._expect(result, str, function)

    async def record_dispute(
        self,
        session_id: UUID,
        *,
        dispute_id: str,
        event_id: str,
        event_type: str,
        emails: Sequence[QueuedEmail] = (),
    ) -> str:
        """The session marked disputed, with the event and the operator's e-mail, once."""
        function = "qwip_record_dispute"
        result = await self._call_value(
            function,
            {
                "p_session_id": session_id,
                "p_dispute_id": dispute_id,
                "p_event_id": event_id,
                "p_event_type": event_type,
                "p_emails": _emails_json(emails),
            },
        )
        return self._expect(result, str, function)
