"""What the admin pages do: staff accounts and roles, a test message per channel, and the
health of the provider webhooks. Every change is audited in the same transaction.

An admin can neither demote nor disable themselves, so a city always keeps an admin who can
sign in. Disabling an account also raises its session generation (as "sign out everywhere"
does), so it is signed out on every device at its next request."""

from __future__ import annotations

import html
import secrets
from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from telegram.error import TelegramError

from channels.base import Outcome
from channels.email import OutgoingEmail
from channels.sms import OutgoingSms
from channels.telegram import OutgoingTelegram
from channels.webpush import OutgoingPush
from hub import health, outbound, providers, telegram_admin
from hub.adapters import PushAdapter, SendContext, mail_domain, twilio_status_callback
from hub.contacts import InvalidAddress, normalise_email, normalise_phone
from hub.delivery import run_in_loop
from hub.models import CHANNELS, ContactPoint, Priority, Role, StaffUser
from hub.portal import telegram_bot_username
from hub.runtime import Runtime
from hub.signin import account_locked_for
from hub.staff import audit, create_staff_user, set_password


class AdminError(ValueError):
    """A refused change; the message says why, and nothing was changed."""


def new_password() -> str:
    """A first or reset password, shown once (as `hub users create` does)."""
    return secrets.token_urlsafe(12)


# -- staff ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StaffRow:
    id: int
    email: str
    role: str
    active: bool
    last_signin_at: datetime | None
    locked_s: int  # seconds the account stays locked out after failed sign-ins (0: not locked)


def staff_rows(rt: Runtime) -> list[StaffRow]:
    with rt.session() as session:
        users = list(session.scalars(select(StaffUser).order_by(StaffUser.email)))
        rows = [(u.id, u.email, u.role, u.active, u.last_signin_at) for u in users]
    return [StaffRow(*row, locked_s=account_locked_for(rt, row[1])) for row in rows]


def create_user(rt: Runtime, *, actor: str, email: str, role: str) -> tuple[str, str]:
    """A new staff account; returns (its e-mail as stored, its first password)."""
    password = new_password()
    try:
        with rt.session() as session:
            user = create_staff_user(session, email=email, role=role, password=password)
            audit(session, actor, "staff.create", f"staff:{user.id}", role=role)
            return user.email, password
    except InvalidAddress as exc:
        raise AdminError(_("Not a valid e-mail address: %(reason)s", reason=exc)) from None
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    except IntegrityError:  # another admin created it a moment ago
        raise AdminError(_("a staff user %(email)s already exists", email=email)) from None


def _other_user(session, actor_id: int, user_id: int, refusal: str) -> StaffUser:
    if user_id == actor_id:
        raise AdminError(refusal)
    user = session.get(StaffUser, user_id)
    if user is None:
        raise AdminError(_("There is no such staff user."))
    return user


def change_role(rt: Runtime, *, actor: StaffUser, user_id: int, role: str) -> str:
    """Give another user a new role (at their next request); returns their e-mail."""
    if role not in Role.ALL:
        raise AdminError(_("Choose one of the roles."))
    with rt.session() as session:
        user = _other_user(
            session, actor.id, user_id, _("You cannot change your own role: ask another admin.")
        )
        before, user.role = user.role, role
        audit(session, actor.email, "staff.role", f"staff:{user_id}", before=before, after=role)
        return user.email


def set_active(rt: Runtime, *, actor: StaffUser, user_id: int, active: bool) -> str:
    """Disable (and sign out everywhere) or enable another user; returns their e-mail."""
    with rt.session() as session:
        user = _other_user(session, actor.id, user_id, _("You cannot disable your own account."))
        user.active = active
        if not active:
            user.session_generation += 1
        action = "staff.enable" if active else "staff.disable"
        audit(session, actor.email, action, f"staff:{user_id}")
        return user.email


def reset_password(rt: Runtime, *, actor: StaffUser, user_id: int) -> tuple[str, str]:
    """A new password for another user, whose sessions end; returns (e-mail, password)."""
    password = new_password()
    with rt.session() as session:
        user = _other_user(
            session, actor.id, user_id, _("Reset your own password with another admin.")
        )
        set_password(user, password)
        user.session_generation += 1
        audit(session, actor.email, "staff.password_reset", f"staff:{user_id}")
        return user.email, password


# -- channels -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelInfo:
    channel: str
    mode: str  # "provider", "sandbox" (its stand-in), or "browser" (each browser's service)
    sender: list[tuple[str, str]]  # (what, value): who the messages come from; never a secret
    credentials: list[tuple[str, bool]]  # (environment variable, set?)
    rate_per_s: float
    rate_env: str
    concurrency: int
    concurrency_env: str
    address_label: str  # what the test form asks for


# The environment variables holding each channel's account; Settings has each in lower case.
CREDENTIALS = {
    "email": ("SMTP_HOST", "SMTP_USERNAME", "SMTP_PASSWORD"),
    "sms": ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"),
    "telegram": ("TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET"),
    "push": ("VAPID_PRIVATE_KEY", "VAPID_PUBLIC_KEY"),
}
ADDRESS_LABELS = {
    "email": _l("E-mail address"),
    "sms": _l("Phone number"),
    "telegram": _l("Chat id"),
    "push": _l("Endpoint of a subscribed browser"),
}


def channel_overview(rt: Runtime) -> list[ChannelInfo]:
    """What each channel sends with; rate and concurrency come from HUB_<CHANNEL>_RATE and
    HUB_<CHANNEL>_CONCURRENCY (hub.config)."""
    s = rt.settings
    return [
        ChannelInfo(
            channel=channel,
            mode="browser" if channel == "push" else _mode(s, channel),
            sender=_sender(rt, channel),
            credentials=[(name, bool(getattr(s, name.lower()))) for name in CREDENTIALS[channel]],
            rate_per_s=getattr(s, f"{channel}_rate_per_s"),
            rate_env=f"HUB_{channel.upper()}_RATE",
            concurrency=getattr(s, f"{channel}_concurrency"),
            concurrency_env=f"HUB_{channel.upper()}_CONCURRENCY",
            address_label=str(ADDRESS_LABELS[channel]),
        )
        for channel in CHANNELS
    ]


def _mode(settings, channel: str) -> str:
    return "sandbox" if getattr(settings, f"{channel}_uses_sandbox") else "provider"


def _sender(rt: Runtime, channel: str) -> list[tuple[str, str]]:
    """Who the channel's messages come from, as (setting, value)."""
    s = rt.settings
    if channel == "email":
        server = [("SMTP_HOST", f"{s.smtp_host}:{s.smtp_port}")] if s.smtp_host else []
        return [("MAIL_FROM", s.mail_from), *server]
    if channel == "sms":
        twilio = providers.twilio_account(rt)
        if twilio.messaging_service_sid:
            return [("TWILIO_MESSAGING_SERVICE_SID", twilio.messaging_service_sid)]
        return [("TWILIO_FROM_NUMBER", twilio.from_number)]
    if channel == "telegram":
        username = telegram_bot_username(rt)  # getMe, once per process
        return [(_("Bot"), f"@{username}" if username else _("not reachable now"))]
    return [("VAPID_SUBJECT", s.vapid_subject)]


TEST_KEY = 0  # the Outcome key of a test message (it has no delivery row)


def send_test(rt: Runtime, *, actor: str, channel: str, address: str) -> Outcome:
    """Send one test message now through the channel's sender, as notices are sent, and
    return what the provider said; audited with the outcome (not the address)."""
    text = _("A test message from Mestni glas. No need to answer it.")
    outgoing = _test_message(rt, channel, address.strip(), text)
    if channel == "push":
        sender = PushAdapter(SendContext(rt, 0, Priority.NORMAL, {})).sender()
        result = run_in_loop(sender.send_one(outgoing))
    else:
        result = run_in_loop(outbound.send_one(rt, channel, outgoing))
    with rt.session() as session:
        audit(
            session,
            actor,
            "channel.test",
            f"channel:{channel}",
            status=result.status,
            error=result.error or "",
        )
    return result


def _test_message(rt: Runtime, channel: str, address: str, text: str):
    """The channel's outgoing message to `address`; AdminError if the address is no good."""
    if not address:
        raise AdminError(_("Enter where to send the test message."))
    try:
        if channel == "email":
            domain = mail_domain(rt.settings)
            return OutgoingEmail(
                key=TEST_KEY,
                to=normalise_email(address),
                subject=_("Mestni glas: a test message"),
                text=text,
                html=None,
                message_id=f"<test.{secrets.token_hex(8)}@{domain}>",
                envelope_from=f"bounce@{domain}",
            )
        if channel == "sms":
            callback = twilio_status_callback(rt.settings)
            return OutgoingSms(TEST_KEY, normalise_phone(address), text, callback)
    except InvalidAddress as exc:
        raise AdminError(_("Not a valid address: %(reason)s", reason=exc)) from None
    if channel == "telegram":
        if not address.lstrip("-").isdigit():
            raise AdminError(_("A Telegram chat id is a whole number, such as 123456789."))
        return OutgoingTelegram(TEST_KEY, address, html.escape(text))
    if channel == "push":
        return _test_push(rt, address, text)
    raise AdminError(_("There is no such channel."))


def _test_push(rt: Runtime, endpoint: str, text: str) -> OutgoingPush:
    """A push needs the browser's keys: only a subscription the hub has can be tested."""
    with rt.session() as session:
        keys = session.scalar(
            select(ContactPoint.details).where(
                ContactPoint.channel == "push", ContactPoint.address == endpoint
            )
        )
    if keys is None:
        raise AdminError(_("No browser subscribed with this endpoint; copy it from a resident."))
    return OutgoingPush(
        key=TEST_KEY,
        endpoint=endpoint,
        p256dh=keys.get("p256dh", ""),
        auth=keys.get("auth", ""),
        title="Mestni glas",
        body=text,
        url=rt.settings.base_url,
        ttl_s=60,
        urgency="normal",
    )


# -- webhooks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookPanel:
    telegram: telegram_admin.WebhookInfo | None
    telegram_error: str  # why getWebhookInfo could not be asked ("" when it was)
    twilio_urls: list[tuple[str, str]]  # (what, URL) to paste into the Twilio console
    last_valid: dict[str, datetime | None]  # webhook name -> last signed request (UTC)


def webhook_panel(rt: Runtime) -> WebhookPanel:
    base = rt.settings.base_url
    info, error = None, ""
    try:
        info = telegram_admin.webhook_info(rt)
    except (TelegramError, OSError) as exc:
        error = str(exc) or type(exc).__name__
    return WebhookPanel(
        telegram=info,
        telegram_error=error,
        twilio_urls=[
            (_("A message comes in"), f"{base}/webhooks/twilio/sms"),
            (_("Status callback URL"), f"{base}/webhooks/twilio/status"),
        ],
        last_valid=last_valid_requests(rt),
    )


def last_valid_requests(rt: Runtime) -> dict[str, datetime | None]:
    """When each webhook last passed its signature check (hub.health keeps it in Redis)."""
    seen = health.webhooks_last_valid(rt)
    return {
        name: datetime.fromisoformat(value.rstrip("Z")) if value else None
        for name, value in seen.items()
    }


def register_telegram_webhook(rt: Runtime, *, actor: str) -> telegram_admin.WebhookInfo:
    """setWebhook with the hub's URL and secret; audited. Raises TelegramError or OSError."""
    info = telegram_admin.set_webhook(rt)
    with rt.session() as session:
        audit(session, actor, "telegram.set_webhook", "webhook:telegram", url=info.url)
    return info
