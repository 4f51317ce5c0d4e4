from pathlib import Path

import pytest
from pydantic import SecretStr

from svc.env import ConfigurationError, Settings, load_settings
from svc.types import AppEnv

PRODUCTION_REQUIRED = {
    "STRIPE_SECRET": "sk_live_abc",
    "STRIPE_WEBHOOK_SECRET": "whsec_abc",
    "STRIPE_PUBLISHABLE_KEY": "pk_live_abc",
    "EMAIL_FROM": "pods@example.com",
    "EMAIL_PASSWORD": "app-password",
    "OPERATOR_EMAIL": "ops@example.com",
    "DATABASE_URL": "postgresql://svc:pw@db.example.com:5432/postgres",
    "PUBLIC_URL": "https://pods.example.com",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable of ours in the environment, and a working directory without a .env."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_are_local_mode_with_every_stand_in() -> None:
    settings = load_settings()
    assert settings.is_local
    assert settings.uses_local_stripe
    assert settings.stripe_api_base == "http://localhost:8420"
    assert settings.uses_embedded_database
    assert not settings.uses_smtp
    assert settings.CURRENCY == "gbp"
    assert settings.MINIMUM_CHARGE_PENCE == 30
    assert settings.FREE_MINUTES == 0
    assert settings.MAX_SESSION_MINUTES == 180
    assert settings.ACCESS_CODE_LENGTH == 6
    assert settings.TIMEZONE == "Europe/London"
    assert (settings.SMTP_HOST, settings.SMTP_PORT, settings.SMTP_SECURITY) == (
        "smtp.gmail.com",
        465,
        "ssl",
    )


def test_production_lists_every_missing_variable_in_one_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert str(raised.value) == (
        "APP_ENV=production needs these variables set: STRIPE_SECRET, STRIPE_WEBHOOK_SECRET, "
        "STRIPE_PUBLISHABLE_KEY, EMAIL_FROM, OPERATOR_EMAIL, EMAIL_PASSWORD, "
        "DATABASE_URL (or SUPABASE_URL and SUPABASE_KEY), PUBLIC_URL"
    )


def test_production_names_only_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in PRODUCTION_REQUIRED.items():
        if name not in ("STRIPE_WEBHOOK_SECRET", "EMAIL_PASSWORD"):
            monkeypatch.setenv(name, value)
    with pytest.raises(
        ConfigurationError,
        match=r"needs these variables set: " r"STRIPE_WEBHOOK_SECRET, EMAIL_PASSWORD$",
    ):
        load_settings()


def test_production_with_everything_set_never_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in PRODUCTION_REQUIRED.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert not settings.is_local
    assert not settings.uses_local_stripe
    assert settings.stripe_api_base is None
    assert not settings.uses_embedded_database
    assert settings.uses_smtp
    assert settings.cors_origins == ["https://pods.example.com"]


def test_production_accepts_supabase_instead_of_a_connection_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in PRODUCTION_REQUIRED.items():
        if name != "DATABASE_URL":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co/")
    monkeypatch.setenv("SUPABASE_KEY", "service-role-key")
    settings = load_settings()
    assert settings.SUPABASE_URL == "https://abc.supabase.co"
    assert settings.uses_supabase_api
    assert not settings.uses_embedded_database


@pytest.mark.parametrize(
    ("variables", "supabase", "embedded"),
    [
        ({}, False, True),
        ({"SUPABASE_URL": "https://abc.supabase.co"}, False, True),
        ({"SUPABASE_KEY": "service-role-key"}, False, True),
        ({"SUPABASE_URL": "https://abc.supabase.co", "SUPABASE_KEY": "k"}, True, False),
        (
            {
                "SUPABASE_URL": "https://abc.supabase.co",
                "SUPABASE_KEY": "k",
                "DATABASE_URL": "postgresql://svc@db.example.com/postgres",
            },
            False,
            False,
        ),
    ],
)
def test_which_database_the_settings_name(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], supabase: bool, embedded: bool
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.uses_supabase_api, settings.uses_embedded_database) == (supabase, embedded)


@pytest.mark.parametrize("url", ["abc.supabase.co", "ftp://abc.supabase.co", "https://"])
def test_supabase_url_must_be_the_projects_address(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("SUPABASE_URL", url)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert str(raised.value) == (
        "SUPABASE_URL: SUPABASE_URL must be the project's https:// address "
        f"(Project Settings > API), e.g. https://abcd.supabase.co, got {url!r}"
    )


def test_dotenv_file_is_read(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        "STRIPE_SECRET=sk_test_from_dotenv\nSTRIPE_PUBLISHABLE_KEY=pk_test_from_dotenv\n"
        "STRIPE_WEBHOOK_SECRET=whsec_from_dotenv\nFREE_MINUTES=5\n"
        "CORS_ORIGINS=https://a.example, https://b.example\n"
    )
    settings = load_settings()
    assert settings.stripe_secret == "sk_test_from_dotenv"
    assert not settings.uses_local_stripe
    assert settings.FREE_MINUTES == 5
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_environment_wins_over_dotenv(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_environment / ".env").write_text("FREE_MINUTES=5\n")
    monkeypatch.setenv("FREE_MINUTES", "7")
    assert load_settings().FREE_MINUTES == 7


def test_empty_values_copied_from_the_example_mean_unset(clean_environment: Path) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    (clean_environment / ".env").write_text(example.read_text())
    settings = load_settings()
    assert settings.uses_local_stripe
    assert settings.uses_embedded_database
    assert settings.MINIMUM_CHARGE_PENCE == 30


def test_env_example_documents_every_setting() -> None:
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0]
        for line in example.splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert documented == set(Settings.model_fields)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DATABASE_URL", "sqlite:///qwip.db", "DATABASE_URL: DATABASE_URL must be a postgresql://"),
        ("TIMEZONE", "Mars/Olympus", "TIMEZONE: TIMEZONE 'Mars/Olympus' is not a known time zone"),
        ("END_SESSION_URL", "https://app.example/end", "END_SESSION_URL must contain {session_id}"),
        ("CURRENCY", "pounds", "CURRENCY must be a three-letter ISO code"),
        ("MINIMUM_CHARGE_PENCE", "-1", "MINIMUM_CHARGE_PENCE: Input should be greater than"),
        ("SMTP_SECURITY", "tls", "SMTP_SECURITY: Input should be 'ssl', 'starttls' or 'none'"),
        ("SEAM_API_KEY", "sk_live_abc", "SEAM_API_KEY must be a Seam API key, which starts with"),
        ("SEAM_ENDPOINT", "connect.getseam.com", "SEAM_ENDPOINT must be an http(s) address"),
        ("SEAM_WEBHOOK_SECRET", "whsec_", "SEAM_WEBHOOK_SECRET must be the webhook's signing"),
        ("SEAM_WEBHOOK_SECRET", "whsec_no!", "SEAM_WEBHOOK_SECRET must be the webhook's signing"),
    ],
)
def test_bad_values_are_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert message in str(raised.value)


def test_seam_endpoint_defaults_to_its_api() -> None:
    settings = Settings(_env_file=None, SEAM_API_KEY="seam_abc")
    assert settings.seam_endpoint == "https://connect.getseam.com"
    local = Settings(_env_file=None, SEAM_API_KEY="seam_abc", SEAM_ENDPOINT="http://127.0.0.1:9/")
    assert local.seam_endpoint == "http://127.0.0.1:9"


def test_links_follow_public_url_or_the_template() -> None:
    settings = Settings(_env_file=None, PUBLIC_URL="https://pods.example.com/")
    assert settings.end_session_link("abc") == "https://pods.example.com/end-session?sessionId=abc"
    templated = Settings(_env_file=None, END_SESSION_URL="https://app.example/end/{session_id}")
    assert templated.end_session_link("abc") == "https://app.example/end/abc"


def test_local_public_url_follows_the_port_served(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "local")
    monkeypatch.setenv("PORT", "8765")
    settings = load_settings()
    assert (settings.PORT, settings.PUBLIC_URL) == (8765, "http://localhost:8765")
    assert settings.end_session_link("abc") == "http://localhost:8765/end-session?sessionId=abc"
    assert settings.cors_origins == ["http://localhost:8765"]
    assert Settings(_env_file=None, PORT=8765).model_fields_set == {"APP_ENV", "PORT"}


def test_public_url_when_set_is_kept_whatever_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8765")
    settings = Settings(_env_file=None, PUBLIC_URL="https://pods.example.com")
    assert settings.PUBLIC_URL == "https://pods.example.com"
    assert Settings(_env_file=None).PUBLIC_URL == "http://localhost:8765"
    monkeypatch.delenv("PORT")
    assert Settings(_env_file=None).PUBLIC_URL == "http://localhost:8000"


def test_production_still_needs_public_url_when_the_platform_sets_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in PRODUCTION_REQUIRED.items():
        if name != "PUBLIC_URL":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("PORT", "8765")
    with pytest.raises(ConfigurationError, match=r"needs these variables set: PUBLIC_URL$"):
        load_settings()


def test_port_outside_the_tcp_range_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "70000")
    with pytest.raises(ConfigurationError, match="PORT: Input should be less than or equal to"):
        load_settings()


def _production(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in {**PRODUCTION_REQUIRED, **overrides}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (
            {"PUBLIC_URL": "http://pods.example.com"},
            "an http:// PUBLIC_URL (http://pods.example.com: its links carry session ids, "
            "use https://)",
        ),
        (
            {"STRIPE_API_BASE": "http://stripe.example.com"},
            "STRIPE_API_BASE (http://stripe.example.com: payments and the card page's "
            "JavaScript would come from there; unset it to use Stripe)",
        ),
        (
            {"STRIPE_SECRET": "sk_live_abc", "STRIPE_PUBLISHABLE_KEY": "pk_test_abc"},
            "a live STRIPE_SECRET with a test STRIPE_PUBLISHABLE_KEY "
            "(both keys must come from the same Stripe mode)",
        ),
        (
            {"STRIPE_SECRET": "sk_test_abc", "STRIPE_PUBLISHABLE_KEY": "pk_live_abc"},
            "a test STRIPE_SECRET with a live STRIPE_PUBLISHABLE_KEY "
            "(both keys must come from the same Stripe mode)",
        ),
        (
            {"STRIPE_SECRET": "rk_live_abc", "STRIPE_PUBLISHABLE_KEY": "pk_test_abc"},
            "a live STRIPE_SECRET with a test STRIPE_PUBLISHABLE_KEY "
            "(both keys must come from the same Stripe mode)",
        ),
        (
            {"STRIPE_SECRET": "rk_test_abc", "STRIPE_PUBLISHABLE_KEY": "pk_live_abc"},
            "a test STRIPE_SECRET with a live STRIPE_PUBLISHABLE_KEY "
            "(both keys must come from the same Stripe mode)",
        ),
        (
            {"STRIPE_SECRET": "pk_live_abc"},
            "a STRIPE_SECRET that is not a Stripe secret key "
            "(sk_live_, rk_live_, sk_test_ or rk_test_)",
        ),
        (
            {"STRIPE_PUBLISHABLE_KEY": "sk_live_abc"},
            "a STRIPE_PUBLISHABLE_KEY that is not a Stripe publishable key (pk_live_ or pk_test_)",
        ),
        (
            {"SMTP_SECURITY": "none"},
            "SMTP_SECURITY=none to smtp.gmail.com (mail and the SMTP password would cross the "
            "network unencrypted: use ssl or starttls)",
        ),
        (
            {"SMTP_SECURITY": "none", "SMTP_HOST": "127.0.0.2.example.com"},
            "SMTP_SECURITY=none to 127.0.0.2.example.com (mail and the SMTP password would "
            "cross the network unencrypted: use ssl or starttls)",
        ),
        ({"CORS_ORIGINS": "*"}, "CORS_ORIGINS with * (name each origin allowed)"),
        (
            {"CORS_ORIGINS": "https://pods.example.com, https://*.example.com"},
            "CORS_ORIGINS with * (name each origin allowed)",
        ),
    ],
)
def test_production_refuses_an_unsafe_setting(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str], refused: str
) -> None:
    _production(monkeypatch, **overrides)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert str(raised.value) == f"APP_ENV=production refuses these settings: {refused}"


def test_production_names_every_problem_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    for name, value in {
        "STRIPE_SECRET": "sk_live_abc",
        "STRIPE_PUBLISHABLE_KEY": "pk_test_abc",
        "STRIPE_API_BASE": "http://stripe.example.com",
        "PUBLIC_URL": "http://pods.example.com",
        "SMTP_HOST": "mail.example.com",
        "SMTP_SECURITY": "none",
        "CORS_ORIGINS": "*",
        "EMAIL_FROM": "pods@example.com",
        "DATABASE_URL": "postgresql://svc:pw@db.example.com:5432/postgres",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert str(raised.value) == (
        "APP_ENV=production needs these variables set: STRIPE_WEBHOOK_SECRET, OPERATOR_EMAIL; "
        "and refuses these settings: "
        "an http:// PUBLIC_URL (http://pods.example.com: its links carry session ids, "
        "use https://); "
        "STRIPE_API_BASE (http://stripe.example.com: payments and the card page's JavaScript "
        "would come from there; unset it to use Stripe); "
        "a live STRIPE_SECRET with a test STRIPE_PUBLISHABLE_KEY "
        "(both keys must come from the same Stripe mode); "
        "SMTP_SECURITY=none to mail.example.com (mail and the SMTP password would cross the "
        "network unencrypted: use ssl or starttls); "
        "CORS_ORIGINS with * (name each origin allowed)"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"PUBLIC_URL": "http://localhost:8000"},
        {"PUBLIC_URL": "http://127.0.0.1:8000"},
        {"SMTP_SECURITY": "none", "SMTP_HOST": "localhost"},
        {"SMTP_SECURITY": "none", "SMTP_HOST": "127.0.0.53"},
        {"SMTP_SECURITY": "none", "SMTP_HOST": "::1"},
        {"SMTP_SECURITY": "starttls", "SMTP_HOST": "mail.example.com", "SMTP_PORT": "587"},
        {"CORS_ORIGINS": "https://pods.example.com,https://app.example.com"},
        {"STRIPE_SECRET": "rk_live_abc"},
    ],
)
def test_production_accepts_what_stays_on_the_machine_or_is_encrypted(
    monkeypatch: pytest.MonkeyPatch, overrides: dict[str, str]
) -> None:
    _production(monkeypatch, **overrides)
    settings = load_settings()
    assert not settings.stripe_test_mode


@pytest.mark.parametrize("secret", ["sk_test_abc", "rk_test_abc"])
def test_production_with_test_keys_starts_in_test_mode(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    _production(monkeypatch, STRIPE_SECRET=secret, STRIPE_PUBLISHABLE_KEY="pk_test_abc")
    settings = load_settings()
    assert settings.stripe_test_mode
    assert (settings.stripe_secret, settings.stripe_publishable_key) == (secret, "pk_test_abc")


def test_local_mode_with_its_own_localstripe_is_not_test_mode_on_the_pages() -> None:
    assert not load_settings().stripe_test_mode


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"STRIPE_SECRET": "sk_live_abc"},
            "with STRIPE_SECRET set, these variables must be set too: STRIPE_PUBLISHABLE_KEY, "
            "STRIPE_WEBHOOK_SECRET",
        ),
        (
            {"STRIPE_SECRET": "sk_live_abc", "STRIPE_PUBLISHABLE_KEY": "pk_live_abc"},
            "with STRIPE_SECRET and STRIPE_PUBLISHABLE_KEY set, these variables must be set too: "
            "STRIPE_WEBHOOK_SECRET",
        ),
        (
            {"STRIPE_PUBLISHABLE_KEY": "pk_test_abc", "STRIPE_WEBHOOK_SECRET": "whsec_abc"},
            "with STRIPE_PUBLISHABLE_KEY and STRIPE_WEBHOOK_SECRET set, these variables must be "
            "set too: STRIPE_SECRET",
        ),
    ],
)
def test_local_mode_refuses_the_local_secret_next_to_a_real_key(
    monkeypatch: pytest.MonkeyPatch, given: dict[str, str], message: str
) -> None:
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert str(raised.value) == (
        f"{message} (the built-in local keys and webhook secret serve only the localstripe "
        "that local mode starts when no Stripe key is set)"
    )


def test_local_keys_never_reach_a_real_stripe_account() -> None:
    settings = Settings.model_construct(APP_ENV=AppEnv.LOCAL, STRIPE_SECRET=SecretStr("sk_x"))
    for name in ("stripe_webhook_secret", "stripe_publishable_key"):
        with pytest.raises(ConfigurationError, match="is not set$"):
            getattr(settings, name)


def test_local_mode_with_a_real_key_and_its_own_secret_uses_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("STRIPE_SECRET", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.setenv(name, PRODUCTION_REQUIRED[name])
    settings = load_settings()
    assert not settings.uses_local_stripe
    assert settings.stripe_api_base is None
    assert (
        settings.stripe_secret,
        settings.stripe_publishable_key,
        settings.stripe_webhook_secret,
    ) == ("sk_live_abc", "pk_live_abc", "whsec_abc")


def test_local_mode_without_keys_uses_the_local_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (
        settings.stripe_secret,
        settings.stripe_publishable_key,
        settings.stripe_webhook_secret,
    ) == ("sk_test_qwip_local", "pk_test_qwip_local", "whsec_qwip_local")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_mine")
    assert load_settings().stripe_webhook_secret == "whsec_mine"


def test_test_mode_is_production_on_local_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "test")
    for name, value in {
        **PRODUCTION_REQUIRED,
        "STRIPE_SECRET": "sk_test_abc",
        "STRIPE_PUBLISHABLE_KEY": "pk_test_abc",
        "STRIPE_API_BASE": "http://127.0.0.1:8420",
        "PUBLIC_URL": "http://qwip.test",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_SECURITY": "none",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert not settings.is_local
    assert not settings.uses_local_stripe
    assert settings.uses_smtp
    assert settings.stripe_test_mode


def test_test_mode_needs_every_production_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "test")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert str(raised.value) == (
        "APP_ENV=test needs these variables set: STRIPE_SECRET, STRIPE_WEBHOOK_SECRET, "
        "STRIPE_PUBLISHABLE_KEY, EMAIL_FROM, OPERATOR_EMAIL, EMAIL_PASSWORD, "
        "DATABASE_URL (or SUPABASE_URL and SUPABASE_KEY), PUBLIC_URL"
    )


def test_test_mode_refuses_live_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "test")
    for name, value in PRODUCTION_REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STRIPE_SECRET", "rk_live_abc")
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert str(raised.value) == (
        "APP_ENV=test refuses these settings: "
        "a live STRIPE_SECRET (APP_ENV=test runs only with Stripe test keys); "
        "a live STRIPE_PUBLISHABLE_KEY (APP_ENV=test runs only with Stripe test keys)"
    )


@pytest.mark.parametrize(
    "secret", ["whsec_c2VhbSB3ZWJob29rIHNlY3JldA==", "whsec_c2VhbSB3ZWJob29rIHNlY3JldA"]
)
def test_a_seam_webhook_secret_is_taken_with_or_without_padding(secret: str) -> None:
    settings = Settings(_env_file=None, SEAM_WEBHOOK_SECRET=secret)
    assert settings.SEAM_WEBHOOK_SECRET is not None
    assert settings.SEAM_WEBHOOK_SECRET.get_secret_value() == secret
