"""The operator's queries (the CLI and the console): each call of a ``qwip_*`` SQL function
written once, as in `base`, which mixes them into `Database`."""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any
from uuid import UUID

from svc.database_accessor.rows import _optional_timestamp, _session, _timestamp
from svc.models.operator import DayOfMoney, SessionDetails, SessionEmail, SessionRefund

# The most sessions one listing shows: the operator narrows it with the filters.
LIST_LIMIT = 500


class OperatorQueries(ABC):
    @abstractmethod
    async def _call_rows(
        self, function: str, params: dict[str, object]
    ) -> Sequence[Mapping[str, Any]]: ...

    @abstractmethod
    async def _call_value(self, function: str, params: dict[str, object]) -> Any: ...

    async def list_session_details(
        self,
        *,
        open_only: bool = False,
        owed_only: bool = False,
        refunded_only: bool = False,
        disputed_only: bool = False,
        since: datetime | None = None,
        email: str | None = None,
        limit: int = LIST_LIMIT,
    ) -> list[SessionDetails]:
        """Newest first; open ones only, owed, refunded or disputed ones only, started
        since, for one e-mail."""
        rows = await self._call_rows(
            "qwip_list_sessions",
            {
                "p_open": open_only,
                "p_owed": owed_only,
                "p_refunded": refunded_only,
                "p_disputed": disputed_only,
                "p_since": since,
                "p_email": email,
                "p_session_id": None,
                "p_limit": limit,
            },
        )
        return [_details(row) for row in rows]

    async def get_session_details(self, session_id: UUID) -> SessionDetails | None:
        rows = await self._call_rows(
            "qwip_list_sessions",
            {
                "p_open": False,
                "p_owed": False,
                "p_refunded": False,
                "p_disputed": False,
                "p_since": None,
                "p_email": None,
                "p_session_id": session_id,
                "p_limit": 1,
            },
        )
        return _details(rows[0]) if rows else None

    async def list_session_emails(self, session_id: UUID) -> list[SessionEmail]:
        rows = await self._call_rows("qwip_list_session_emails", {"p_session_id": session_id})
        return [
            SessionEmail(
                kind=row["kind"],
                recipient=row["recipient"],
                queued_at=_timestamp(row["created_at"]),
                sent_at=_optional_timestamp(row["sent_at"]),
                dead_at=_optional_timestamp(row["dead_at"]),
                attempts=row["attempts"],
                last_error=row["last_error"],
            )
            for row in rows
        ]

    async def list_session_refunds(self, session_id: UUID) -> list[SessionRefund]:
        rows = await self._call_rows("qwip_list_session_refunds", {"p_session_id": session_id})
        return [
            SessionRefund(
                amount_pence=row["amount_pence"],
                state=row["state"],
                reason=row["reason"],
                by_operator=row["by_operator"],
                stripe_refund_id=row["stripe_refund_id"],
                created_at=_timestamp(row["created_at"]),
            )
            for row in rows
        ]

    async def waive_charge(self, session_id: UUID, *, reason: str) -> bool:
        """Fix an ended, unsettled session's cost at 0 with the reason; false when its cost
        was fixed before. The caller holds its charge lease."""
        waived = await self._call_value(
            "qwip_waive_charge", {"p_session_id": session_id, "p_reason": reason}
        )
        if not isinstance(waived, bool):
            raise TypeError(f"qwip_waive_charge: expected a flag, got {waived!r}")
        return waived

    async def money_by_day(self, *, since: datetime, timezone: str) -> list[DayOfMoney]:
        rows = await self._call_rows(
            "qwip_money_by_day", {"p_since": since, "p_timezone": timezone}
        )
        return [
            DayOfMoney(
                day=_day(row["day"]),
                sessions=row["sessions"],
                seconds=int(row["seconds"]),
                taken_pence=int(row["taken_pence"]),
                owed_pence=int(row["owed_pence"]),
            )
            for row in rows
        ]

    async def refunds_by_day(self, *, since: datetime, timezone: str) -> dict[date, int]:
        """The pence refunded each day (refunds made that day) since `since`."""
        rows = await self._call_rows(
            "qwip_refunds_by_day", {"p_since": since, "p_timezone": timezone}
        )
        return {_day(row["day"]): int(row["refunded_pence"]) for row in rows}

    async def forget_attempts(self, key: str) -> None:
        """Forget what was counted under a key of `take_booking_slot`."""
        await self._call_value("qwip_forget_attempts", {"p_key": key})


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _details(row: Mapping[str, Any]) -> SessionDetails:
    return SessionDetails(
        session=_session(row),
        code_set_at=_optional_timestamp(row["code_set_at"]),
        settled_at=_optional_timestamp(row["settled_at"]),
        no_charge_reason=row["no_charge_reason"],
        refunded_pence=row["refunded_pence"],
        disputed_at=_optional_timestamp(row["disputed_at"]),
        dispute_id=row["dispute_id"],
        reminded_at=_optional_timestamp(row["reminded_at"]),
        backup_access_code_id=row["backup_access_code_id"],
        backup_code_at=_optional_timestamp(row["backup_code_at"]),
        first_unlocked_at=_optional_timestamp(row["first_unlocked_at"]),
        unlock_count=row["unlock_count"],
    )
