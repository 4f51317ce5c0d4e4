"""Settings, read once from the environment and `.env`."""

import base64
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from svc import production
from svc.production import (
    GMAIL_SMTP_HOST,
    SECRET_KEY_MODES,
    is_set,
    key_mode,
)
from svc.types import AppEnv, SmtpSecurity

SEAM_DEFAULT_ENDPOINT = "https://connect.getseam.com"

# In local mode, with no Stripe keys, the service talks to localstripe with these
# made-up keys: localstripe accepts any key of the right shape.
LOCAL_STRIPE_SECRET = "sk_test_qwip_local"
LOCAL_STRIPE_PUBLISHABLE_KEY = "pk_test_qwip_local"
LOCAL_STRIPE_WEBHOOK_SECRET = "whsec_qwip_local"


class ConfigurationError(Exception):
    """The settings cannot run the service; the message says what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `KEY=` copied from .env.example means "not set"
        extra="ignore",
        case_sensitive=True,
    )

    APP_ENV: AppEnv = AppEnv.LOCAL
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: one readable line per record; json: one JSON object per line, for a collector.
    LOG_FORMAT: Literal["text", "json"] = "text"
    # A bearer token that GET /metrics then requires; unset, /metrics is open.
    METRICS_TOKEN: SecretStr | None = None

    # Stripe
    STRIPE_SECRET: SecretStr | None = None
    STRIPE_WEBHOOK_SECRET: SecretStr | None = None
    STRIPE_PUBLISHABLE_KEY: str | None = None
    STRIPE_API_BASE: str | None = None
    LOCALSTRIPE_PORT: int = 8420

    # Database: a connection string, else Supabase's URL and service-role key.
    DATABASE_URL: SecretStr | None = None
    SUPABASE_URL: str | None = None
    SUPABASE_KEY: SecretStr | None = None
    DATABASE_POOL_SIZE: int = Field(default=5, ge=1, le=100)
    LOCAL_DATA_DIR: Path = Path(".local")

    # E-mail
    EMAIL_FROM: str | None = None
    EMAIL_PASSWORD: SecretStr | None = None
    SMTP_HOST: str = GMAIL_SMTP_HOST
    SMTP_PORT: int = 465
    SMTP_SECURITY: SmtpSecurity = SmtpSecurity.SSL
    SMTP_TIMEOUT_SECONDS: float = Field(default=10, gt=0)
    OUTBOX_DIR: Path = Path("outbox")
    EMAIL_RETRY_BASE_SECONDS: float = Field(default=5, gt=0)
    # Attempts after which a message the mail server keeps refusing is set aside.
    EMAIL_MAX_ATTEMPTS: int = Field(default=8, ge=1)
    OPERATOR_EMAIL: str | None = None

    # Seam smart locks
    SEAM_API_KEY: SecretStr | None = None
    SEAM_ENDPOINT: str | None = None
    SEAM_RETRY_BASE_SECONDS: float = Field(default=2, gt=0)
    LOCK_STATUS_CACHE_SECONDS: float = Field(default=10, ge=0)
    # A session's code still not set on the lock this long after the start gets a backup code.
    CODE_FALLBACK_SECONDS: int = Field(default=120, ge=0)
    # Seam's webhook signing secret (whsec_…): unset, POST /webhook/seam refuses every event.
    SEAM_WEBHOOK_SECRET: SecretStr | None = None

    # The port served (Railway sets it; `make service PORT=...` too).
    PORT: int = Field(default=8000, ge=1, le=65535)

    # Links and browsers: in local mode an unset PUBLIC_URL is http://localhost:{PORT}.
    PUBLIC_URL: str = "http://localhost:8000"
    END_SESSION_URL: str | None = None
    CORS_ORIGINS: Annotated[list[str], NoDecode] = []

    # Booking abuse limits: card setups per client IP and per e-mail in a sliding window,
    # counted in the database (exact across replicas). FORWARDED_ALLOW_IPS: the peers
    # (addresses, networks, or *) whose X-Forwarded-For names the client; uvicorn reads it too.
    BOOKING_RATE_LIMIT_PER_IP: int = Field(default=10, ge=1)
    BOOKING_RATE_LIMIT_PER_EMAIL: int = Field(default=5, ge=1)
    BOOKING_RATE_LIMIT_WINDOW_SECONDS: int = Field(default=600, ge=1)
    FORWARDED_ALLOW_IPS: str = "127.0.0.1"
    # Cloudflare Turnstile on the booking page: on when both keys are set.
    TURNSTILE_SITE_KEY: str | None = None
    TURNSTILE_SECRET_KEY: SecretStr | None = None
    TURNSTILE_VERIFY_URL: str = "https://challenges.cloudflare.com/turnstile/v0/siteverify"

    # The operator's console at /admin: off without this argon2 hash of its password
    # (`python -m svc admin hash-password`), except in local mode (a one-time password).
    ADMIN_PASSWORD_HASH: SecretStr | None = None

    # Business rules
    CURRENCY: str = "gbp"
    MINIMUM_CHARGE_PENCE: int = Field(default=30, ge=0)
    FREE_MINUTES: int = Field(default=0, ge=0)
    MAX_SESSION_MINUTES: int = Field(default=180, ge=1)
    # The customer is e-mailed this many minutes before MAX_SESSION_MINUTES (0: no reminder).
    REMINDER_MINUTES: int = Field(default=15, ge=0)
    # A saved card starts a session only this long after its SetupIntent was created.
    BOOKING_WINDOW_MINUTES: int = Field(default=30, ge=1)
    # The hold placed on the card at booking: the price of this many minutes (0: no hold,
    # the whole cost is charged off-session at the end, as before holds existed).
    HOLD_MINUTES: int = Field(default=60, ge=0)
    # A hold whose session has not started after this many quiet minutes is released.
    HOLD_ABANDON_MINUTES: float = Field(default=15, gt=0)
    ACCESS_CODE_LENGTH: int = Field(default=6, ge=4, le=10)
    TIMEZONE: str = "Europe/London"
    # VAT receipts: with all three set, each receipt is a UK simplified VAT invoice.
    VAT_NUMBER: str | None = None
    BUSINESS_NAME: str | None = None
    BUSINESS_ADDRESS: str | None = None
    VAT_RATE: Decimal = Field(default=Decimal(20), ge=0, le=100)

    # Background work: e-mail retries, unsettled charges, overdue sessions.
    BACKGROUND_INTERVAL_SECONDS: float = Field(default=5, gt=0)
    # How long one replica may hold a session's charge; longer than any Stripe call lasts.
    CHARGE_LEASE_SECONDS: int = Field(default=120, ge=5)
    # An ended session whose charge did not finish is retried after this many idle seconds.
    SETTLE_RETRY_SECONDS: int = Field(default=60, ge=1)

    @field_validator("CORS_ORIGINS", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("CURRENCY")
    @classmethod
    def _currency_code(cls, value: str) -> str:
        code = value.strip().lower()
        if len(code) != 3 or not code.isascii() or not code.isalpha():
            raise ValueError(f"CURRENCY must be a three-letter ISO code such as gbp, got {value!r}")
        return code

    @field_validator("TIMEZONE")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"TIMEZONE {value!r} is not a known time zone (e.g. Europe/London)"
            ) from None
        return value

    @field_validator("PUBLIC_URL")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"PUBLIC_URL must be an http(s) address, got {value!r}")
        return value.rstrip("/")

    @field_validator("SEAM_API_KEY")
    @classmethod
    def _seam_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("seam_"):
            raise ValueError("SEAM_API_KEY must be a Seam API key, which starts with seam_")
        return value

    @field_validator("ADMIN_PASSWORD_HASH")
    @classmethod
    def _argon2_hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("$argon2"):
            raise ValueError(
                "ADMIN_PASSWORD_HASH must be an argon2 hash ($argon2id$...), as "
                "`python -m svc admin hash-password` prints; never the password itself"
            )
        return value

    @model_validator(mode="after")
    def _turnstile_keys_together(self) -> Self:
        if is_set(self.TURNSTILE_SITE_KEY) != is_set(self.TURNSTILE_SECRET_KEY):
            raise ValueError(
                "TURNSTILE_SITE_KEY and TURNSTILE_SECRET_KEY go together: set both, or neither"
            )
        return self

    @field_validator("SEAM_WEBHOOK_SECRET")
    @classmethod
    def _seam_webhook_secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        encoded = value.get_secret_value().removeprefix("whsec_").rstrip("=")
        try:
            # As Svix reads it: padding optional.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except ValueError:
            key = b""
        if not key:
            raise ValueError(
                "SEAM_WEBHOOK_SECRET must be the webhook's signing secret from Seam (whsec_ "
                "followed by base64)"
            )
        return value

    @field_validator("SEAM_ENDPOINT")
    @classmethod
    def _seam_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"SEAM_ENDPOINT must be an http(s) address, got {value!r}")
        return value.rstrip("/")

    @field_validator("END_SESSION_URL")
    @classmethod
    def _end_session_template(cls, value: str | None) -> str | None:
        if value is not None and "{session_id}" not in value:
            raise ValueError("END_SESSION_URL must contain {session_id}")
        return value

    @field_validator("SUPABASE_URL")
    @classmethod
    def _supabase_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "SUPABASE_URL must be the project's https:// address (Project Settings > API), "
                f"e.g. https://abcd.supabase.co, got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        scheme = value.get_secret_value().split("://", 1)[0]
        if scheme not in ("postgres", "postgresql"):
            raise ValueError(
                f"DATABASE_URL must be a postgresql:// connection string, got a {scheme}:// one "
                "(leave it unset in local mode for the embedded Postgres)"
            )
        return value

    @model_validator(mode="after")
    def _local_links_follow_the_port(self) -> Self:
        if self.is_local and "PUBLIC_URL" not in self.model_fields_set:
            # Straight into the instance's values: an assignment would count PUBLIC_URL as
            # set by the operator, which it was not.
            self.__dict__["PUBLIC_URL"] = f"http://localhost:{self.PORT}"
        return self

    @model_validator(mode="after")
    def _local_stand_ins_only_with_localstripe(self) -> Self:
        # The made-up keys and webhook secret are public: with a real Stripe account they
        # would let anyone sign events, so a real key brings its own of all three.
        if self.is_local and not self.uses_local_stripe:
            given = [name for name in STRIPE_KEYS if is_set(getattr(self, name))]
            missing = [name for name in STRIPE_KEYS if name not in given]
            if missing:
                raise ValueError(
                    f"with {' and '.join(given)} set, these variables must be set too: "
                    f"{', '.join(missing)} (the built-in local keys and webhook secret serve "
                    "only the localstripe that local mode starts when no Stripe key is set)"
                )
        return self

    @model_validator(mode="after")
    def _vat_all_or_nothing(self) -> Self:
        vat = ("VAT_NUMBER", "BUSINESS_NAME", "BUSINESS_ADDRESS")
        missing = [name for name in vat if not is_set(getattr(self, name))]
        if 0 < len(missing) < len(vat):
            raise ValueError(
                "VAT receipts need VAT_NUMBER, BUSINESS_NAME and BUSINESS_ADDRESS together: "
                f"set {', '.join(missing)} too, or unset the others"
            )
        return self

    @model_validator(mode="after")
    def _production_has_everything(self) -> Self:
        if self.is_local:
            return self
        problems = []
        missing = production.missing(self)
        if missing:
            problems.append("needs these variables set: " + ", ".join(missing))
        refused = production.unsafe(self)
        if refused:
            problems.append("refuses these settings: " + "; ".join(refused))
        if problems:
            raise ValueError(f"APP_ENV={self.APP_ENV} " + "; and ".join(problems))
        return self

    # What stands in for what, derived once so every module agrees.

    @property
    def is_local(self) -> bool:
        return self.APP_ENV is AppEnv.LOCAL

    @property
    def uses_local_stripe(self) -> bool:
        """Local mode without Stripe keys: localstripe, started by the service itself."""
        return self.is_local and self.STRIPE_SECRET is None and self.STRIPE_PUBLISHABLE_KEY is None

    @property
    def stripe_test_mode(self) -> bool:
        """Outside local mode with Stripe test keys: the log and every page say TEST MODE."""
        return not self.is_local and key_mode(self.STRIPE_SECRET, SECRET_KEY_MODES) == "test"

    @property
    def uses_supabase_api(self) -> bool:
        """No connection string but a Supabase project's URL and key: PostgREST over HTTP."""
        return self.DATABASE_URL is None and is_set(self.SUPABASE_URL) and is_set(self.SUPABASE_KEY)

    @property
    def uses_embedded_database(self) -> bool:
        return self.DATABASE_URL is None and not self.uses_supabase_api

    @property
    def uses_smtp(self) -> bool:
        """SMTP once it is configured; until then (local mode) e-mails go to OUTBOX_DIR."""
        return (
            not self.is_local
            or self.EMAIL_PASSWORD is not None
            or "SMTP_HOST" in (self.model_fields_set)
        )

    # The made-up local keys only ever go to the localstripe the service starts itself; the
    # validators make sure that otherwise the real ones are set.

    @property
    def stripe_secret(self) -> str:
        if self.STRIPE_SECRET:
            return self.STRIPE_SECRET.get_secret_value()
        return self._local_stripe_value("STRIPE_SECRET", LOCAL_STRIPE_SECRET)

    @property
    def stripe_webhook_secret(self) -> str:
        if self.STRIPE_WEBHOOK_SECRET:
            return self.STRIPE_WEBHOOK_SECRET.get_secret_value()
        return self._local_stripe_value("STRIPE_WEBHOOK_SECRET", LOCAL_STRIPE_WEBHOOK_SECRET)

    @property
    def stripe_publishable_key(self) -> str:
        if self.STRIPE_PUBLISHABLE_KEY:
            return self.STRIPE_PUBLISHABLE_KEY
        return self._local_stripe_value("STRIPE_PUBLISHABLE_KEY", LOCAL_STRIPE_PUBLISHABLE_KEY)

    def _local_stripe_value(self, name: str, local_value: str) -> str:
        if not self.uses_local_stripe:
            raise ConfigurationError(f"{name} is not set")
        return local_value

    @property
    def stripe_api_base(self) -> str | None:
        if self.STRIPE_API_BASE:
            return self.STRIPE_API_BASE.rstrip("/")
        if self.uses_local_stripe:
            return f"http://localhost:{self.LOCALSTRIPE_PORT}"
        return None

    @property
    def seam_endpoint(self) -> str:
        return self.SEAM_ENDPOINT or SEAM_DEFAULT_ENDPOINT

    @property
    def email_sender(self) -> str:
        return self.EMAIL_FROM or "qwip@localhost"

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.TIMEZONE)

    @property
    def uses_turnstile(self) -> bool:
        return is_set(self.TURNSTILE_SITE_KEY) and is_set(self.TURNSTILE_SECRET_KEY)

    @property
    def booking_origins(self) -> set[str]:
        """The origins whose pages may start a card setup: PUBLIC_URL's and CORS_ORIGINS."""
        parts = urlsplit(self.PUBLIC_URL)
        return {f"{parts.scheme}://{parts.netloc}", *self.cors_origins}

    @property
    def cors_origins(self) -> list[str]:
        if self.CORS_ORIGINS:
            return self.CORS_ORIGINS
        parts = urlsplit(self.PUBLIC_URL)
        return [f"{parts.scheme}://{parts.netloc}"]

    def end_session_link(self, session_id: object) -> str:
        if self.END_SESSION_URL:
            return self.END_SESSION_URL.format(session_id=session_id)
        return f"{self.PUBLIC_URL}/end-session?sessionId={session_id}"

    def pay_link(self, session_id: object) -> str:
        """The pay page of an owed session (e-mailed, and answered with a refused booking)."""
        return f"{self.PUBLIC_URL}/pay?sessionId={session_id}"


STRIPE_KEYS = ("STRIPE_SECRET", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET")


def load_settings() -> Settings:
    """Settings from the environment and `.env`, or one clear ConfigurationError."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise ConfigurationError("; ".join(problems)) from None
