"""The console's keys: the password, the signed cookie that expires, the CSRF token bound
to one cookie, and ADMIN_PASSWORD_HASH's shape."""

import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from pydantic import ValidationError

from svc.console.auth import SESSION_SECONDS, ConsoleAuth, Visitor, hash_password
from svc.env import Settings

PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)


def auth(**changes: object) -> ConsoleAuth:
    values: dict[str, object] = dict(
        password_hash=PASSWORD_HASH, one_time_password=None, secure_cookie=True
    )
    values.update(changes)
    return ConsoleAuth(**values)  # type: ignore[arg-type]


def test_the_password_of_the_hash_or_the_one_time_password_is_accepted() -> None:
    keys = auth(one_time_password="once-only-123")
    assert keys.check_password(PASSWORD) is True
    assert keys.check_password("once-only-123") is True
    assert keys.check_password("guess") is False
    assert keys.check_password("") is False
    assert auth(password_hash=None).check_password(PASSWORD) is False
    assert auth(password_hash="$argon2id$broken").check_password(PASSWORD) is False


def test_a_cookie_reads_back_on_every_replica_until_it_expires() -> None:
    visitor = Visitor("nonce-1", signed_in=True)
    cookie = auth().cookie(visitor)
    # Another replica, given the same hash, signs with the same key.
    assert auth().read_cookie(cookie) == visitor

    class Yesterday(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - SESSION_SECONDS - 1

    key = auth()._key
    expired = URLSafeTimedSerializer(key, salt="qwip-admin-session", signer=Yesterday)
    assert auth().read_cookie(expired.dumps({"n": "nonce-1", "in": True})) is None
    fresh = URLSafeTimedSerializer(key, salt="qwip-admin-session")
    assert auth().read_cookie(fresh.dumps({"n": "nonce-1", "in": True})) == visitor


@pytest.mark.parametrize(
    "cookie",
    [None, "", "garbage", "eyJuIjoieCIsImluIjp0cnVlfQ.forged.signature"],
)
def test_a_missing_or_forged_cookie_is_nobody(cookie: str | None) -> None:
    assert auth().read_cookie(cookie) is None


def test_a_cookie_signed_for_another_password_is_nobody() -> None:
    cookie = auth(password_hash=hash_password("another password entirely")).cookie(
        Visitor("n", signed_in=True)
    )
    assert auth().read_cookie(cookie) is None


def test_a_csrf_token_belongs_to_one_cookie() -> None:
    keys = auth()
    mine, theirs = Visitor("mine", signed_in=True), Visitor("theirs", signed_in=True)
    assert keys.csrf_matches(mine, keys.csrf_token(mine)) is True
    assert keys.csrf_matches(mine, keys.csrf_token(theirs)) is False
    assert keys.csrf_matches(mine, None) is False
    assert keys.csrf_matches(mine, "") is False


def test_a_password_given_instead_of_its_hash_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, ADMIN_PASSWORD_HASH=PASSWORD)
    assert "ADMIN_PASSWORD_HASH must be an argon2 hash ($argon2id$...)" in str(raised.value)
