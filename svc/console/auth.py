"""Who may use the console: the password (an argon2 hash in ADMIN_PASSWORD_HASH, or local
mode's one-time password), the signed session cookie, the forms' CSRF tokens, and the
limit on failed sign-ins.

The cookie holds no server-side state: a random nonce, whether it is signed in, and its
time, signed with itsdangerous. Each form carries an HMAC of the cookie's nonce, so a form
posted from elsewhere (no token) or with another browser's cookie (another nonce) is
refused. Signing in makes a new nonce, so a cookie planted before it is worth nothing after.
"""

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

from svc.env import Settings

logger = logging.getLogger(__name__)

COOKIE = "qwip_admin"
SESSION_SECONDS = 8 * 3600
"""A console session lasts a working day, then asks for the password again."""

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """What `python -m svc admin hash-password` prints: an argon2id hash, salted."""
    return _hasher.hash(password)


@dataclass(frozen=True, slots=True)
class Visitor:
    """A console cookie that checked out: its nonce, and whether it is signed in."""

    nonce: str
    signed_in: bool


class ConsoleAuth:
    """The console's keys, built once per app from the settings."""

    def __init__(
        self,
        *,
        password_hash: str | None,
        one_time_password: str | None,
        secure_cookie: bool,
    ) -> None:
        self.password_hash = password_hash
        self.one_time_password = one_time_password
        self.secure_cookie = secure_cookie
        # Every replica signs with the same key, derived from the hash it is given (a new
        # password thus signs every console out); local mode's one-time password lives as
        # long as the process, and so does its key.
        if password_hash is not None:
            key = hashlib.sha256(b"qwip-admin-cookie\x00" + password_hash.encode()).digest()
        else:
            key = secrets.token_bytes(32)
        self._key = key
        self._cookies = URLSafeTimedSerializer(key, salt="qwip-admin-session")

    def check_password(self, password: str) -> bool:
        """Sync and slow (argon2 takes a fraction of a second): run it in a thread."""
        if self.one_time_password is not None and hmac.compare_digest(
            password.encode(), self.one_time_password.encode()
        ):
            return True
        if self.password_hash is None:
            return False
        try:
            return _hasher.verify(self.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def cookie(self, visitor: Visitor) -> str:
        return self._cookies.dumps({"n": visitor.nonce, "in": visitor.signed_in})

    def read_cookie(self, value: str | None) -> Visitor | None:
        """The visitor a cookie names, or None when it is missing, forged or expired."""
        if not value:
            return None
        try:
            data = self._cookies.loads(value, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        nonce, signed_in = data.get("n"), data.get("in")
        if not isinstance(nonce, str) or not isinstance(signed_in, bool):
            return None
        return Visitor(nonce, signed_in)

    def csrf_token(self, visitor: Visitor) -> str:
        return hmac.new(self._key, b"csrf\x00" + visitor.nonce.encode(), "sha256").hexdigest()

    def csrf_matches(self, visitor: Visitor, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(
            token.encode(), self.csrf_token(visitor).encode()
        )


def new_visitor(*, signed_in: bool) -> Visitor:
    return Visitor(secrets.token_urlsafe(24), signed_in)


def build_auth(settings: Settings) -> ConsoleAuth | None:
    """The console's keys, or None when it is off: no ADMIN_PASSWORD_HASH outside local mode.

    Local mode always has a one-time password (printed in its banner), beside the hash
    when one is set."""
    configured = settings.ADMIN_PASSWORD_HASH
    if configured is None and not settings.is_local:
        return None
    return ConsoleAuth(
        password_hash=configured.get_secret_value() if configured else None,
        one_time_password=secrets.token_urlsafe(12) if settings.is_local else None,
        secure_cookie=not settings.is_local,
    )
