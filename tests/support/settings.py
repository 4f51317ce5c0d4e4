"""The settings of a service under test: its database, a Stripe stand-in and an SMTP
server on this machine. As a dict of environment variables: for `Settings(**...)` in
process, or the environment of a service started as a real process."""

WEBHOOK_SECRET = "whsec_test_qwip"
OPERATOR = "ops@qwip.test"


def service_settings(
    *,
    app_env: str,
    database_url: str,
    stripe_api_base: str,
    smtp_port: int,
    public_url: str,
    stripe_secret: str = "sk_test_qwip",
    webhook_secret: str = WEBHOOK_SECRET,
) -> dict[str, str]:
    return {
        "APP_ENV": app_env,
        "DATABASE_URL": database_url,
        "STRIPE_SECRET": stripe_secret,
        "STRIPE_PUBLISHABLE_KEY": "pk_test_qwip",
        "STRIPE_WEBHOOK_SECRET": webhook_secret,
        "STRIPE_API_BASE": stripe_api_base,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_port),
        "SMTP_SECURITY": "none",
        "EMAIL_FROM": "pods@qwip.test",
        "OPERATOR_EMAIL": OPERATOR,
        "PUBLIC_URL": public_url,
        # The tests and the benchmark save many cards from one address and e-mail: the
        # limits' own tests set theirs.
        "BOOKING_RATE_LIMIT_PER_IP": "100000",
        "BOOKING_RATE_LIMIT_PER_EMAIL": "100000",
        # Today's flow (charged at the end, off-session), which most tests assert: the
        # hold's own tests, and the reliability scenarios, turn holds on.
        "HOLD_MINUTES": "0",
    }
