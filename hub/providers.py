"""Which account each provider is used with: the configured one, or on a sandboxed hub,
credentials the hub generated once and keeps in the database, so every web and worker host
agrees, the stand-ins check them and /sandbox can show them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from channels.sandbox.http import StandinServer
from channels.sandbox.store import SandboxStore
from channels.sms import TwilioAccount
from channels.webpush import generate_vapid_keys
from hub.models import InstanceKey
from hub.runtime import Runtime

# Twilio's magic "From" number for test credentials: a valid sender that reaches nobody.
SANDBOX_FROM_NUMBER = "+15005550006"


def instance_key(rt: Runtime, name: str, make: Callable[[], str]) -> str:
    """The value stored under `name`, made and stored first if there is none. Two processes
    that race both end with the value that was stored first."""
    cached = rt.keys.get(name)
    if cached is not None:
        return cached
    with rt.session() as session:
        row = session.get(InstanceKey, name)
        value = row.value if row is not None else None
    if value is None:
        try:
            with rt.session() as session:
                session.add(InstanceKey(name=name, value=make()))
        except IntegrityError:
            pass
        with rt.session() as session:
            value = session.get(InstanceKey, name).value
    rt.keys[name] = value
    return value


def twilio_account(rt: Runtime) -> TwilioAccount:
    s = rt.settings
    if not s.sms_uses_sandbox:
        return TwilioAccount(
            s.twilio_account_sid,
            s.twilio_auth_token,
            s.twilio_from_number,
            s.twilio_messaging_service_sid,
        )
    return TwilioAccount(
        s.twilio_account_sid
        or instance_key(rt, "sandbox-twilio-sid", lambda: "AC" + secrets.token_hex(16)),
        s.twilio_auth_token
        or instance_key(rt, "sandbox-twilio-token", lambda: secrets.token_hex(16)),
        s.twilio_from_number or SANDBOX_FROM_NUMBER,
        s.twilio_messaging_service_sid,
        api_url=s.sandbox_http_url,
    )


def telegram_token(rt: Runtime) -> str:
    s = rt.settings
    if s.telegram_bot_token:
        return s.telegram_bot_token
    return instance_key(
        rt,
        "sandbox-telegram-token",
        lambda: f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(26)}",
    )


def telegram_api_url(rt: Runtime) -> str | None:
    """None: the real api.telegram.org."""
    return rt.settings.sandbox_http_url if rt.settings.telegram_uses_sandbox else None


def telegram_webhook_secret(rt: Runtime) -> str:
    return rt.settings.telegram_webhook_secret or instance_key(
        rt, "telegram-webhook-secret", lambda: secrets.token_urlsafe(32)
    )


def vapid_keys(rt: Runtime) -> tuple[str, str]:
    """(private, public) VAPID keys: from the environment, or generated once for the hub.
    Both halves are stored as one value, so no host ever pairs one key with another's half."""
    s = rt.settings
    if s.vapid_private_key and s.vapid_public_key:
        return s.vapid_private_key, s.vapid_public_key
    private, public = json.loads(
        instance_key(rt, "vapid-keys", lambda: json.dumps(generate_vapid_keys()))
    )
    return private, public


def http_standin(rt: Runtime) -> StandinServer:
    """The Twilio, Telegram and push stand-ins, with this hub's sandbox credentials."""
    from channels.sandbox.push import PushStandin
    from channels.sandbox.telegram import TelegramStandin
    from channels.sandbox.twilio import TwilioStandin

    store = SandboxStore(rt.settings.sandbox_db_path)
    twilio = twilio_account(rt)
    return StandinServer(
        {
            "twilio": TwilioStandin(store, twilio.account_sid, twilio.auth_token),
            "telegram": TelegramStandin(store, telegram_token(rt)),
            "push": PushStandin(store),
        },
        port=rt.settings.sandbox_http_port,
    )


def demo_push_subscriber(rt: Runtime):
    """Makes pretend browsers subscribed at the sandbox push service (for demo residents).
    Call it before opening a session: the VAPID keys may have to be stored first."""
    from channels.sandbox.push import create_subscription

    public_key = vapid_keys(rt)[1]
    store = SandboxStore(rt.settings.sandbox_db_path)
    return lambda: create_subscription(store, rt.settings.sandbox_http_url, public_key)


def sandbox_accounts(rt: Runtime) -> list[tuple[str, str]]:
    """What /sandbox shows about the providers on stand-ins: the generated credentials (so a
    tester can sign a webhook or point a client at a stand-in) and where they listen."""
    s = rt.settings
    shown = []
    if s.email_uses_sandbox:
        shown.append(("SMTP", f"127.0.0.1:{s.sandbox_smtp_port}"))
    if s.sms_uses_sandbox:
        twilio = twilio_account(rt)
        shown += [
            ("Twilio API", twilio.api_url),
            ("TWILIO_ACCOUNT_SID", twilio.account_sid),
            ("TWILIO_AUTH_TOKEN", twilio.auth_token),
            ("TWILIO_FROM_NUMBER", twilio.from_number),
        ]
    if s.telegram_uses_sandbox:
        shown += [
            ("Telegram Bot API", s.sandbox_http_url),
            ("TELEGRAM_BOT_TOKEN", telegram_token(rt)),
        ]
    shown.append(("VAPID_PUBLIC_KEY", vapid_keys(rt)[1]))
    return shown
