"""The calls for Seam's events, the locks' health and pods out of service: part of
`Database`, each call of a ``qwip_*`` SQL function written once, as in `base`."""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from svc.database_accessor.rows import _email_json, _timestamp, _uuid
from svc.models.records import LockHealth, QueuedEmail, SessionUnlocks

_T = TypeVar("_T")


class SeamCalls(ABC):
    """Mixed into `Database`, which supplies how a function is called."""

    @abstractmethod
    async def _call_value(self, function: str, params: dict[str, object]) -> Any: ...

    @abstractmethod
    async def _first_row(
        self, function: str, params: dict[str, object]
    ) -> Mapping[str, Any] | None: ...

    @abstractmethod
    async def _flag(self, function: str, params: dict[str, object]) -> bool: ...

    @abstractmethod
    def _expect(self, value: object, kind: type[_T], function: str) -> _T: ...

    async def is_seam_event_processed(self, event_id: str) -> bool:
        return await self._flag("qwip_seam_event_seen", {"p_event_id": event_id})

    async def record_seam_event(self, event_id: str, event_type: str) -> bool:
        return await self._flag(
            "qwip_record_seam_event", {"p_event_id": event_id, "p_event_type": event_type}
        )

    async def record_code_set(self, event_id: str, event_type: str, *, access_code_id: str) -> str:
        """The open session's code is on its lock: 'recorded', 'unknown' or 'duplicate'."""
        function = "qwip_seam_code_set"
        outcome = await self._call_value(
            function,
            {
                "p_event_id": event_id,
                "p_event_type": event_type,
                "p_access_code_id": access_code_id,
            },
        )
        return self._expect(outcome, str, function)

    async def get_session_of_access_code(self, access_code_id: str) -> UUID | None:
        """The open session whose code this is, while the code is not yet on the lock."""
        found = await self._call_value(
            "qwip_session_of_access_code", {"p_access_code_id": access_code_id}
        )
        return None if found is None else _uuid(found)

    async def record_unlock(
        self, event_id: str, event_type: str, *, access_code_id: str, occurred_at: datetime
    ) -> str:
        """One unlock by a session's code: 'recorded', 'unknown' or 'duplicate'."""
        function = "qwip_seam_lock_unlocked"
        outcome = await self._call_value(
            function,
            {
                "p_event_id": event_id,
                "p_event_type": event_type,
                "p_access_code_id": access_code_id,
                "p_occurred_at": occurred_at,
            },
        )
        return self._expect(outcome, str, function)

    async def get_session_unlocks(self, session_id: UUID) -> SessionUnlocks:
        row = await self._first_row("qwip_get_session_unlocks", {"p_session_id": session_id})
        if row is None:
            return SessionUnlocks()
        return SessionUnlocks(
            first_unlocked_at=_timestamp(row["first_unlocked_at"]),
            unlock_count=row["unlock_count"],
        )

    async def record_lock_health(
        self,
        health: LockHealth,
        *,
        alert: QueuedEmail | None,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> str:
        """What Seam says of a lock, on every pod that has it, with the operator's alert
        queued only for a new incident: 'alerted', 'recorded', 'unknown' or 'duplicate'."""
        function = "qwip_record_lock_health"
        outcome = await self._call_value(
            function,
            {
                "p_event_id": event_id,
                "p_event_type": event_type,
                "p_device_id": health.device_id,
                "p_occurred_at": health.occurred_at,
                "p_online": health.online,
                "p_battery_level": health.battery_level,
                "p_battery_low": health.battery_low,
                "p_tampered": health.tampered,
                "p_alert": _email_json(alert),
            },
        )
        return self._expect(outcome, str, function)

    async def set_pod_disabled(self, name: str, *, reason: str | None) -> bool:
        """Take the pod out of service (a reason) or put it back (None); False: no such pod."""
        return await self._flag("qwip_set_pod_disabled", {"p_name": name, "p_reason": reason})
