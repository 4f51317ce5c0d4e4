import pytest

from svc.locks import code_status_of
from svc.models.records import BackupCode
from tests.unit.test_email_manager import SESSION_ID, session

OPEN = {"end_time": None, "payment_status": None, "cost_pence": None}


@pytest.mark.parametrize(
    ("changes", "smart_locks", "status", "lock_has_code"),
    [
        ({**OPEN}, True, "local", None),  # a pod without a lock
        ({**OPEN, "seam_device_id": "lock_1"}, False, "local", None),  # smart locks off
        ({**OPEN, "seam_device_id": "lock_1"}, True, "pending", False),
        (
            {
                **OPEN,
                "seam_device_id": "lock_1",
                "access_code_id": "ac",
                "access_code_status": "unset",
            },
            True,
            "unset",
            False,
        ),
        (
            {
                **OPEN,
                "seam_device_id": "lock_1",
                "access_code_id": "ac",
                "access_code_status": "set",
            },
            True,
            "set",
            True,
        ),
        (
            {**OPEN, "seam_device_id": "lock_1", "access_code_status": "failed"},
            True,
            "failed",
            False,
        ),
        (
            {"seam_device_id": "lock_1", "access_code_id": "ac", "access_code_status": "set"},
            True,
            "removing",
            False,
        ),
        (
            {"seam_device_id": "lock_1", "access_code_id": "ac", "access_code_status": "removed"},
            True,
            "removed",
            False,
        ),
        (
            {"seam_device_id": "lock_1", "access_code_id": "ac", "access_code_status": "expired"},
            True,
            "expired",
            False,
        ),
        # ended before the code was ever made: nothing is on the lock
        ({"seam_device_id": "lock_1"}, True, "removed", False),
        # a code made while smart locks were on is still reported after they are turned off
        ({"access_code_id": "ac", "access_code_status": "removed"}, False, "removed", False),
    ],
)
def test_code_status_says_where_the_code_is(
    changes: dict[str, object], smart_locks: bool, status: str, lock_has_code: bool | None
) -> None:
    answer = code_status_of(session(**changes), smart_locks=smart_locks)
    assert answer.model_dump(mode="json") == {
        "session_id": str(SESSION_ID),
        "pod_name": "pod1",
        "is_complete": changes.get("end_time", "ended") is not None,
        "smart_lock": status != "local",
        "access_code_status": status,
        "lock_has_code": lock_has_code,
        "backup_code_in_use": False,
        # What the lock's events add, read apart (svc.locks.session_status).
        "first_unlocked_at": None,
        "unlock_count": 0,
    }


def test_a_backup_code_in_use_opens_the_door_whatever_became_of_the_first_code() -> None:
    unset = session(
        **OPEN, seam_device_id="lock_1", access_code_id="ac", access_code_status="unset"
    )
    answer = code_status_of(
        unset,
        smart_locks=True,
        backup=BackupCode(access_code_id="ac_backup", code="4821"),
    )
    assert answer.model_dump(mode="json") == {
        "session_id": str(SESSION_ID),
        "pod_name": "pod1",
        "is_complete": False,
        "smart_lock": True,
        "access_code_status": "unset",
        "lock_has_code": True,
        "backup_code_in_use": True,
        # What the lock's events add, read apart (svc.locks.session_status).
        "first_unlocked_at": None,
        "unlock_count": 0,
    }
