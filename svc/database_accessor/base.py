"""What every backend shares: the `Database` interface, its errors, the row mappers, and
each call of a ``qwip_*`` SQL function, written once."""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from svc.database_accessor.operator import OperatorQueries
from svc.database_accessor.payment_calls import PaymentCalls
from svc.database_accessor.rows import (
    _card_hold,
    _charge_claim,
    _email_json,
    _emails_json,
    _ended_session,
    _outbox_email,
    _session,
    _start_outcome,
    _uuid,
)
from svc.database_accessor.seam_calls import SeamCalls
from svc.errors import ServiceError
from svc.models.records import (
    BackupCode,
    CardHold,
    ChargeClaim,
    EndedSession,
    NewPod,
    OutboxEmail,
    Pod,
    PodChanges,
    QueuedEmail,
    ServiceGauges,
    SessionRecord,
    StartOutcome,
    StartSessionRequest,
)
from svc.types import PaymentRecorded, PaymentStatus


class DatabaseUnavailable(ServiceError):
    status_code = 503

    def __init__(self) -> None:
        super().__init__("The database cannot be reached right now; please try again shortly.")


class PodNameTaken(ServiceError):
    status_code = 409

    def __init__(self, name: str) -> None:
        super().__init__(f"A pod named {name!r} already exists.")


class InvalidPod(ServiceError):
    status_code = 422


Params = dict[str, object]
"""A function's arguments by name (``p_…``), as Python values: UUID, int, float, str, None,
and dicts or lists for ``jsonb``. Each backend sends them its own way."""

_T = TypeVar("_T")


class Database(PaymentCalls, OperatorQueries, SeamCalls, ABC):
    """Every query of the service. A backend answers the few that are plain reads and
    writes its own way; every other method is one call of a ``qwip_*`` SQL function,
    written once here.

    For those, a backend supplies two ways to call a function by name with named arguments:
    `_call_rows` for a set-returning one (its rows) and `_call_value` for any other (its
    value, None for void). The rule itself lives in the migration; here only its arguments
    and the reading of its answer. The operator's queries are in `operator`.
    """

    answers_from: ClassVar[str]
    """Who answered, for the error when an answer has the wrong shape."""

    # What each backend answers its own way (the rest are calls of SQL functions, below).

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def list_pods(self) -> list[Pod]: ...

    @abstractmethod
    async def get_pod_by_name(self, name: str) -> Pod | None: ...

    @abstractmethod
    async def get_pod_by_id(self, pod_id: int) -> Pod | None: ...

    @abstractmethod
    async def insert_pod(self, pod: NewPod) -> Pod: ...

    @abstractmethod
    async def update_pod(self, name: str, changes: PodChanges) -> Pod | None: ...

    @abstractmethod
    async def release_charge(self, session_id: UUID) -> None: ...

    @abstractmethod
    async def is_event_processed(self, event_id: str) -> bool: ...

    @abstractmethod
    async def mark_emails_sent(self, email_ids: Sequence[int]) -> None: ...

    # How a backend calls a SQL function by name, with named arguments

    @abstractmethod
    async def _call_rows(self, function: str, params: Params) -> Sequence[Mapping[str, Any]]: ...

    @abstractmethod
    async def _call_value(self, function: str, params: Params) -> Any: ...

    def _expect(self, value: object, kind: type[_T], function: str) -> _T:
        if not isinstance(value, kind):
            raise TypeError(
                f"{function}: expected {kind.__name__} from {self.answers_from}, got {value!r}"
            )
        return value

    async def _first_row(self, function: str, params: Params) -> Mapping[str, Any] | None:
        """The first row a set-returning function answers, or None when it answers none."""
        rows = await self._call_rows(function, params)
        return rows[0] if rows else None

    async def _flag(self, function: str, params: Params) -> bool:
        return self._expect(await self._call_value(function, params), bool, function)

    async def _session_ids(self, function: str, params: Params) -> list[UUID]:
        ids = self._expect(await self._call_value(function, params), list, function)
        return [_uuid(value) for value in ids]

    # Sessions

    async def _get_session(self, params: Params) -> SessionRecord | None:
        row = await self._first_row("qwip_get_session_with_hold", params)
        return _session(row) if row else None

    async def get_session_by_id(self, session_id: UUID) -> SessionRecord | None:
        return await self._get_session({"p_session_id": session_id})

    async def get_session_by_setup_intent(self, setup_intent_id: str) -> SessionRecord | None:
        return await self._get_session({"p_setup_intent_id": setup_intent_id})

    async def start_session(self, request: StartSessionRequest) -> StartOutcome:
        """Start the SetupIntent's session, or say why not; its first attempt decides for
        good (started, or pod unavailable), recorded in the same transaction."""
        function = "qwip_start_session_once"
        started, unavailable = request.started_email, request.unavailable_email
        result = await self._call_value(
            function,
            {
                "p_event_id": request.event_id,
                "p_event_type": request.event_type,
                "p_session_id": request.session_id,
                "p_setup_intent_id": request.setup_intent_id,
                "p_pod_id": request.pod_id,
                "p_user_email": request.user_email,
                "p_customer_id": request.customer_id,
                "p_payment_method": request.payment_method,
                "p_access_code": request.access_code,
                "p_free_minutes": request.free_minutes,
                "p_started_email": _email_json(started),
                "p_unavailable_email": _email_json(unavailable),
            },
        )
        return _start_outcome(self._expect(result, dict, function))

    async def end_session(
        self, session_id: UUID, *, max_minutes: int, lease_seconds: int
    ) -> EndedSession | None:
        """Fix the session's end if it is still open (the first call's end counts), free
        its pod, and take its charge lease if nobody holds it; the session as it then
        stands, or None for an unknown id."""
        row = await self._first_row(
            "qwip_end_session_with_hold",
            {
                "p_session_id": session_id,
                "p_max_minutes": max_minutes,
                "p_lease_seconds": lease_seconds,
            },
        )
        return _ended_session(row) if row else None

    async def claim_charge(
        self, session_id: UUID, *, cost_pence: int, lease_seconds: int
    ) -> ChargeClaim | None:
        """Fix the cost unless it was fixed before, and take the charge lease if free.
        None once the session is settled (or if it has not ended)."""
        row = await self._first_row(
            "qwip_claim_charge",
            {
                "p_session_id": session_id,
                "p_cost_pence": cost_pence,
                "p_lease_seconds": lease_seconds,
            },
        )
        return _charge_claim(row) if row else None

    async def record_payment(
        self,
        session_id: UUID,
        *,
        cost_pence: int,
        status: PaymentStatus,
        payment_intent_id: str | None,
        error: str | None,
        emails: Sequence[QueuedEmail],
        event_id: str | None = None,
        event_type: str | None = None,
        captured_pence: int | None = None,
        released_pence: int | None = None,
    ) -> PaymentRecorded:
        """Record a payment outcome with the session's cost (a cost fixed before stands)
        and queue its e-mails, once: "recorded", "unchanged" (settled before) or
        "duplicate" (the event was seen before). With a hold: what was captured of it and
        what was released (sent only then, so a session without a hold calls it as before)."""
        function = "qwip_record_payment"
        params: Params = {
            "p_session_id": session_id,
            "p_cost_pence": cost_pence,
            "p_status": status.value,
            "p_payment_intent_id": payment_intent_id,
            "p_error": error,
            "p_emails": _emails_json(emails),
            "p_event_id": event_id,
            "p_event_type": event_type,
        }
        if captured_pence is not None or released_pence is not None:
            function = "qwip_record_settlement"
            params["p_captured_pence"] = captured_pence
            params["p_released_pence"] = released_pence
        outcome = await self._call_value(function, params)
        return PaymentRecorded(self._expect(outcome, str, function))

    # Card holds

    async def begin_hold(
        self,
        setup_intent_id: str,
        *,
        session_id: UUID,
        pod_id: int,
        amount_pence: int,
        currency: str,
    ) -> CardHold:
        """Record the SetupIntent's hold before it is placed (the first caller's session id
        and amount count), and return it as it stands."""
        function = "qwip_begin_hold"
        result = await self._call_value(
            function,
            {
                "p_setup_intent_id": setup_intent_id,
                "p_session_id": session_id,
                "p_pod_id": pod_id,
                "p_amount_pence": amount_pence,
                "p_currency": currency,
            },
        )
        return _card_hold(setup_intent_id, self._expect(result, dict, function))

    async def record_hold(
        self,
        setup_intent_id: str,
        *,
        payment_intent_id: str | None,
        state: str,
        error: str | None = None,
    ) -> str:
        """Record what Stripe said of a hold (only forward); the state it now has."""
        function = "qwip_record_hold"
        result = await self._call_value(
            function,
            {
                "p_setup_intent_id": setup_intent_id,
                "p_payment_intent_id": payment_intent_id,
                "p_state": state,
                "p_error": error,
            },
        )
        return self._expect(result, str, function)

    async def claim_abandoned_holds(self, *, idle_seconds: int) -> list[CardHold]:
        """Holds whose session never started, quiet that long: each now this caller's to
        release (marked releasing)."""
        function = "qwip_claim_abandoned_holds"
        rows = self._expect(
            await self._call_value(function, {"p_idle_seconds": idle_seconds}), list, function
        )
        return [_card_hold(str(row["setup_intent_id"]), row) for row in rows]

    async def list_unsettled_sessions(self, *, idle_seconds: int) -> list[UUID]:
        return await self._session_ids(
            "qwip_list_unsettled_sessions", {"p_idle_seconds": idle_seconds}
        )

    async def list_overdue_sessions(self, *, max_minutes: int) -> list[UUID]:
        return await self._session_ids("qwip_list_overdue_sessions", {"p_max_minutes": max_minutes})

    # Access codes on smart locks

    async def list_access_code_work(self, *, limit: int) -> list[UUID]:
        return await self._session_ids("qwip_list_access_code_work", {"p_limit": limit})

    async def claim_access_code_work(self, session_id: UUID, *, lease_seconds: int) -> int | None:
        function = "qwip_claim_access_code_work"
        attempt = await self._call_value(
            function, {"p_session_id": session_id, "p_lease_seconds": lease_seconds}
        )
        # null: another replica holds the lease, or a retry delay runs
        return None if attempt is None else self._expect(attempt, int, function)

    async def retry_access_code_work(self, session_id: UUID, *, retry_in_seconds: float) -> None:
        await self._call_value(
            "qwip_retry_access_code_work",
            {"p_session_id": session_id, "p_retry_in_seconds": retry_in_seconds},
        )

    async def record_access_code(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool:
        return await self._flag(
            "qwip_record_access_code",
            {"p_session_id": session_id, "p_access_code_id": access_code_id, "p_status": status},
        )

    async def update_access_code_status(
        self, session_id: UUID, *, access_code_id: str, status: str
    ) -> bool:
        return await self._flag(
            "qwip_update_access_code_status",
            {"p_session_id": session_id, "p_access_code_id": access_code_id, "p_status": status},
        )

    async def fail_access_code(self, session_id: UUID) -> bool:
        return await self._flag("qwip_fail_access_code", {"p_session_id": session_id})

    # Backup codes and reminders

    async def list_backup_code_work(self, *, after_seconds: int, limit: int) -> list[UUID]:
        return await self._session_ids(
            "qwip_list_backup_code_work", {"p_after_seconds": after_seconds, "p_limit": limit}
        )

    async def claim_backup_code_work(self, session_id: UUID, *, lease_seconds: int) -> int | None:
        """This attempt's number, or None: another replica asks Seam now, or the session has a
        backup code, has ended or was given up on."""
        function = "qwip_claim_backup_code_work"
        attempt = await self._call_value(
            function, {"p_session_id": session_id, "p_lease_seconds": lease_seconds}
        )
        return None if attempt is None else self._expect(attempt, int, function)

    async def record_backup_code(
        self, session_id: UUID, backup: BackupCode, *, emails: Sequence[QueuedEmail]
    ) -> str:
        """ "recorded" (and the e-mails queued), "taken" (another session has this backup
        code) or "unchanged" (the session has one, has ended or was given up on)."""
        function = "qwip_record_backup_code"
        outcome = await self._call_value(
            function,
            {
                "p_session_id": session_id,
                "p_backup_access_code_id": backup.access_code_id,
                "p_backup_access_code": backup.code,
                "p_emails": _emails_json(emails),
            },
        )
        return self._expect(outcome, str, function)

    async def fail_access_code_without_backup(self, session_id: UUID) -> bool:
        return await self._flag(
            "qwip_fail_access_code_without_backup", {"p_session_id": session_id}
        )

    async def get_backup_code(self, session_id: UUID) -> BackupCode | None:
        row = await self._first_row("qwip_get_backup_code", {"p_session_id": session_id})
        if row is None:
            return None
        return BackupCode(
            access_code_id=row["backup_access_code_id"], code=row["backup_access_code"]
        )

    async def list_reminders_due(self, *, max_minutes: int, before_minutes: int) -> list[UUID]:
        return await self._session_ids(
            "qwip_list_reminders_due",
            {"p_max_minutes": max_minutes, "p_before_minutes": before_minutes},
        )

    async def record_reminder(self, session_id: UUID, *, emails: Sequence[QueuedEmail]) -> bool:
        """Mark the session reminded and queue the e-mails, once: true for the caller that did."""
        return await self._flag(
            "qwip_record_reminder", {"p_session_id": session_id, "p_emails": _emails_json(emails)}
        )

    # Stripe events

    async def record_event(
        self, event_id: str, event_type: str, emails: Sequence[QueuedEmail] = ()
    ) -> bool:
        return await self._flag(
            "qwip_record_event",
            {"p_event_id": event_id, "p_event_type": event_type, "p_emails": _emails_json(emails)},
        )

    # Booking abuse limits

    async def take_booking_slot(self, limits: Mapping[str, int], *, window_seconds: int) -> int:
        """Count one card setup against each key (at most `limits[key]` in the window), all
        or none: 0 when it may go ahead, else the seconds until a slot frees."""
        function = "qwip_take_booking_slot"
        wait = await self._call_value(
            function,
            {"p_limits": dict(limits), "p_window_seconds": window_seconds},
        )
        return self._expect(wait, int, function)

    # E-mail outbox

    async def queue_emails(self, emails: Sequence[QueuedEmail]) -> None:
        if emails:
            await self._call_value("qwip_queue_emails", {"p_emails": _emails_json(emails)})

    async def claim_emails(self, *, limit: int, lease_seconds: int) -> list[OutboxEmail]:
        rows = await self._call_rows(
            "qwip_claim_emails", {"p_limit": limit, "p_lease_seconds": lease_seconds}
        )
        return [_outbox_email(row) for row in rows]

    async def mark_email_failed(self, email_id: int, *, retry_in_seconds: int, error: str) -> None:
        await self._call_value(
            "qwip_postpone_email",
            {"p_email_id": email_id, "p_retry_in_seconds": retry_in_seconds, "p_error": error},
        )

    async def dead_letter_email(
        self, email_id: int, *, error: str, notice: QueuedEmail | None
    ) -> bool:
        """Set an unsent message aside for good and queue the operator's notice of it, in
        one transaction; true for the one caller that did."""
        return await self._flag(
            "qwip_dead_letter_email",
            {"p_email_id": email_id, "p_error": error, "p_notice": _email_json(notice)},
        )

    # Metrics

    async def get_service_gauges(self) -> ServiceGauges:
        """Open sessions, pence owed, e-mails waiting and dead: one call, at each scrape."""
        function = "qwip_service_gauges"
        row = await self._first_row(function, {})
        if row is None:
            raise TypeError(f"{function}: no row from {self.answers_from}")
        return ServiceGauges(
            open_sessions=int(row["open_sessions"]),
            owed_pence=int(row["owed_pence"]),
            emails_waiting=int(row["emails_waiting"]),
            emails_dead=int(row["emails_dead"]),
        )
