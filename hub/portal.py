"""The resident portal's accounts: passwordless sign-in (and sign-up) with a one-time code or
link sent to an e-mail address or phone, and the resident's contact points (add and verify by
code, link Telegram by a deep link, order, remove). Views in hub.web.portal stay thin.

Codes are 6 digits, valid CODE_TTL, single use, at most MAX_WRONG_CODES wrong tries; the
link carries a 256-bit token instead. Only hashes are stored. Asking for a code is limited per
address and per client address (Redis counters that expire). Whether the address belongs to
anyone is never said: the same page follows either way, and a new address becomes a resident
only once its code is entered."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from flask_babel import force_locale, ngettext
from flask_babel import gettext as _
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from telegram.error import TelegramError

from channels import base as outcome
from channels.email import OutgoingEmail
from channels.sms import OutgoingSms
from channels.telegram import make_bot
from hub import outbound, providers, queues, runtime
from hub.adapters import mail_domain
from hub.clock import utcnow
from hub.contacts import InvalidAddress, normalise_email, normalise_phone
from hub.conversations import make_link_token
from hub.delivery import run_in_loop
from hub.models import (
    CodePurpose,
    ConsentRecord,
    ContactPoint,
    OneTimeCode,
    Resident,
    ResidentErasure,
)
from hub.ratelimit import count_in_window
from hub.sealing import seal, unseal

CODE_TTL = timedelta(minutes=10)
MAX_WRONG_CODES = 5  # then the code is dead: a million codes are not guessed in five tries
# (codes asked for, window in seconds): per address, and per client address (a household or
# an office behind one NAT asks for a few more).
ADDRESS_LIMIT = (5, 3600)
CLIENT_LIMIT = (20, 3600)
SEND_CODE_JOB = "hub.portal.send_code"
LINK_PATH = "/me/link/"
REMOVED = "removed by the resident"
BOT_USERNAME_KEY = "telegram-bot-username"
SIGN_IN_CHANNELS = ("email", "sms")


class PortalError(ValueError):
    """Bad input from a resident; the message says what to fix."""


class RateLimited(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(retry_after_s)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Proof:
    """What an entered code or opened link proved."""

    purpose: str
    channel: str
    address: str
    resident_id: int | None
    locale: str


def can_sign_in(session: Session, resident_id: int) -> bool:
    """The resident exists and has not deleted their account."""
    erased = select(ResidentErasure.resident_id).where(ResidentErasure.resident_id == resident_id)
    found = session.scalar(select(Resident.id).where(Resident.id == resident_id, ~erased.exists()))
    return found is not None


def parse_address(raw: str) -> tuple[str, str]:
    """(channel, normalised address) of what a resident typed: an e-mail address or a phone."""
    raw = (raw or "").strip()
    if not raw:
        raise PortalError(_("Enter an e-mail address or a mobile phone number."))
    try:
        if "@" in raw:
            return "email", normalise_email(raw)
        return "sms", normalise_phone(raw)
    except InvalidAddress:
        raise PortalError(
            _("%(value)s is not an e-mail address or a phone number we can use.", value=raw[:100])
        ) from None


# -- asking for a code ------------------------------------------------------------------------


def request_code(
    rt: runtime.Runtime,
    raw_address: str,
    *,
    purpose: str,
    locale: str,
    client: str,
    resident_id: int | None = None,
) -> tuple[int, str]:
    """Store a new code for the address and queue its message; returns (code id, the address
    as normalised). Raises PortalError for a bad address, RateLimited past the limits."""
    channel, address = parse_address(raw_address)
    wait = _count_request(rt, address, client)
    if wait:
        raise RateLimited(wait)
    code, token = f"{secrets.randbelow(10**6):06d}", secrets.token_urlsafe(32)
    link_hash = _sha256(token)
    with rt.session() as session:
        row = OneTimeCode(
            purpose=purpose,
            channel=channel,
            address=address,
            resident_id=resident_id,
            code_hash=_code_hash(rt.settings.secret_key, link_hash, code),
            link_hash=link_hash,
            locale=locale,
            attempts=0,
            expires_at=utcnow() + CODE_TTL,
        )
        session.add(row)
        session.flush()
        code_id = row.id
    # The job's arguments wait in Redis: the code and link go there sealed, never in clear.
    sealed = seal(rt.settings.secret_key, json.dumps([code, token]))
    queues.enqueue_once(
        rt.redis, "high", SEND_CODE_JOB, (code_id, sealed), f"portal-code-{code_id}"
    )
    return code_id, address


def _count_request(rt: runtime.Runtime, address: str, client: str) -> int:
    """Count a request against both limits; seconds to wait if either is exceeded, else 0."""
    # Addresses are hashed: Redis keys show up in monitoring, residents' addresses should not.
    keys = [
        (f"hub:portal:codes:address:{_sha256(address)[:32]}", ADDRESS_LIMIT),
        (f"hub:portal:codes:client:{client}", CLIENT_LIMIT),
    ]
    wait = 0
    for key, (limit, window_s) in keys:
        count, ttl = count_in_window(rt.redis, key, window_s)
        if count > limit:
            wait = max(wait, ttl, 1)
    return wait


def send_code(code_id: int, sealed: str) -> str:
    """RQ job: send a code's message, unless it was used or expired meanwhile."""
    rt = runtime.current()
    with rt.session() as session:
        row = session.get(OneTimeCode, code_id)
        if row is None or row.used_at is not None or row.expires_at <= utcnow():
            return "no longer needed"
        unsealed = unseal(rt.settings.secret_key, sealed)
        if unsealed is None:  # HUB_SECRET_KEY changed since: the job fails, they ask again
            raise RuntimeError("the code was sealed under another HUB_SECRET_KEY")
        code, token = json.loads(unsealed)
        message = _code_message(rt, row, code, f"{rt.settings.base_url}{LINK_PATH}{token}")
        channel = row.channel
    result = run_in_loop(outbound.send_one(rt, channel, message))
    if result.status == outcome.RETRY:
        raise outbound.TryAgain(result.error or "transient failure")
    return result.status


def _code_message(rt: runtime.Runtime, row: OneTimeCode, code: str, link: str):
    minutes = int(CODE_TTL.total_seconds() // 60)
    with force_locale(row.locale):
        if row.channel == "sms":
            text = ngettext(
                "Mestni glas code: %(code)s (valid %(num)d minute). Or open %(link)s",
                "Mestni glas code: %(code)s (valid %(num)d minutes). Or open %(link)s",
                minutes,
                code=code,
                link=link,
            )
            return OutgoingSms(row.id, row.address, text)
        if row.purpose == CodePurpose.SIGN_IN:
            subject = _("Your sign-in code for Mestni glas")
        else:
            subject = _("Confirm your address for Mestni glas")
        text = ngettext(
            "Your code is %(code)s. It is valid for %(num)d minute.\n\n"
            "Or open this link: %(link)s\n\n"
            "If you did not ask for it, ignore this message: nothing happens without the code.",
            "Your code is %(code)s. It is valid for %(num)d minutes.\n\n"
            "Or open this link: %(link)s\n\n"
            "If you did not ask for it, ignore this message: nothing happens without the code.",
            minutes,
            code=code,
            link=link,
        )
    domain = mail_domain(rt.settings)
    return OutgoingEmail(
        key=row.id,
        to=row.address,
        subject=subject,
        text=text,
        html=None,
        message_id=f"<code{row.id}.{secrets.token_hex(6)}@{domain}>",
        envelope_from=f"bounce@{domain}",
    )


# -- using a code or link ---------------------------------------------------------------------


def confirm_code(
    session: Session, secret_key: str, code_id: int | None, code: str, now: datetime | None = None
) -> Proof | None:
    """The proof a code gives, or None (unknown, wrong, used, expired, too many tries)."""
    now = now or utcnow()
    code = "".join((code or "").split())
    row = session.get(OneTimeCode, code_id) if code_id is not None else None
    if row is None or not _usable(row, now) or not (len(code) == 6 and code.isdigit()):
        return None
    if not hmac.compare_digest(row.code_hash, _code_hash(secret_key, row.link_hash, code)):
        session.execute(
            update(OneTimeCode)
            .where(OneTimeCode.id == row.id)
            .values(attempts=OneTimeCode.attempts + 1)
        )
        return None
    return _use(session, row, now)


def confirm_link(session: Session, token: str, now: datetime | None = None) -> Proof | None:
    now = now or utcnow()
    row = session.scalar(select(OneTimeCode).where(OneTimeCode.link_hash == _sha256(token)))
    if row is None or not _usable(row, now):
        return None
    return _use(session, row, now)


def link_is_usable(session: Session, token: str, now: datetime | None = None) -> bool:
    row = session.scalar(select(OneTimeCode).where(OneTimeCode.link_hash == _sha256(token)))
    return row is not None and _usable(row, now or utcnow())


def _usable(row: OneTimeCode, now: datetime) -> bool:
    return row.used_at is None and row.expires_at > now and row.attempts < MAX_WRONG_CODES


def _use(session: Session, row: OneTimeCode, now: datetime) -> Proof | None:
    # Conditional: of two requests using one code at once, one wins.
    used = session.execute(
        update(OneTimeCode)
        .where(OneTimeCode.id == row.id, OneTimeCode.used_at.is_(None))
        .values(used_at=now)
    ).rowcount
    if not used:
        return None
    return Proof(row.purpose, row.channel, row.address, row.resident_id, row.locale)


def sign_in_with(session: Session, proof: Proof, now: datetime | None = None) -> int:
    """The resident a sign-in proof is for; a new resident (with consent recorded) for an
    address nobody has verified."""
    now = now or utcnow()
    contact = _contact(session, proof.channel, proof.address)
    if contact is not None and contact.verified:
        return contact.resident_id
    if contact is not None:  # someone typed this address and never proved it: the holder wins
        session.delete(contact)
        session.flush()
    resident = Resident(name="", locale=proof.locale, created_at=now)
    session.add(resident)
    session.flush()
    session.add(_new_contact(resident.id, proof.channel, proof.address, 1, now))
    _consent(session, resident.id, "granted", "notices", now)
    _consent(session, resident.id, "granted", f"channel:{proof.channel}", now)
    return resident.id


def verify_with(session: Session, proof: Proof, now: datetime | None = None) -> ContactPoint:
    """Add (or re-verify) the proven address as the resident's contact point."""
    now = now or utcnow()
    contact = _contact(session, proof.channel, proof.address)
    if contact is not None and contact.resident_id == proof.resident_id:
        contact.verified, contact.active, contact.opted_out_at = True, True, None
        _consent(session, proof.resident_id, "granted", f"channel:{proof.channel}", now)
        return contact
    if contact is not None and contact.verified:
        raise PortalError(
            _("This address belongs to another account. Sign in with it to use that account.")
        )
    if contact is not None:
        session.delete(contact)
        session.flush()
    contact = _new_contact(
        proof.resident_id, proof.channel, proof.address, _next_rank(session, proof.resident_id), now
    )
    session.add(contact)
    _consent(session, proof.resident_id, "granted", f"channel:{proof.channel}", now)
    session.flush()
    return contact


def _new_contact(resident_id: int, channel: str, address: str, rank: int, now) -> ContactPoint:
    return ContactPoint(
        resident_id=resident_id,
        channel=channel,
        address=address,
        rank=rank,
        verified=True,
        active=True,
        failure_count=0,
        created_at=now,
    )


def _consent(session: Session, resident_id: int, action: str, scope: str, now) -> None:
    session.add(
        ConsentRecord(
            resident_id=resident_id, action=action, scope=scope, source="portal", created_at=now
        )
    )


def _contact(session: Session, channel: str, address: str) -> ContactPoint | None:
    return session.scalar(
        select(ContactPoint).where(ContactPoint.channel == channel, ContactPoint.address == address)
    )


# -- the resident's contact points ------------------------------------------------------------


def contact_points(session: Session, resident_id: int) -> list[ContactPoint]:
    """The resident's addresses in their order of preference (removed ones left out)."""
    return list(
        session.scalars(
            select(ContactPoint)
            .where(
                ContactPoint.resident_id == resident_id,
                ContactPoint.deactivated_reason.is_distinct_from(REMOVED),
            )
            .order_by(ContactPoint.rank, ContactPoint.id)
        )
    )


def move_contact(session: Session, resident_id: int, contact_id: int, step: int) -> None:
    """Move an address one place earlier (step -1) or later (+1) in the resident's order."""
    contacts = contact_points(session, resident_id)
    index = _index_of(contacts, contact_id)
    other = index + step
    if step not in (-1, 1) or not 0 <= other < len(contacts):
        raise PortalError(_("This address cannot move that way."))
    contacts[index], contacts[other] = contacts[other], contacts[index]
    _renumber(contacts)


def remove_contact(
    session: Session, resident_id: int, contact_id: int, now: datetime | None = None
) -> None:
    """Remove an address: nothing is sent to it again and it is forgotten. The row stays,
    emptied, so the notices already sent to it keep their statistics."""
    now = now or utcnow()
    contacts = contact_points(session, resident_id)
    contact = contacts[_index_of(contacts, contact_id)]
    sign_in_left = [
        c for c in contacts if c.id != contact.id and c.channel in SIGN_IN_CHANNELS and c.verified
    ]
    if contact.channel in SIGN_IN_CHANNELS and not sign_in_left:
        raise PortalError(
            _(
                "You sign in with this address. Add another e-mail address or phone number "
                "first, or delete your account."
            )
        )
    forget_contact(contact, REMOVED)
    _consent(session, resident_id, "withdrawn", f"channel:{contact.channel}", now)
    _renumber([c for c in contacts if c.id != contact.id])


def forget_contact(contact: ContactPoint, reason: str) -> None:
    """Empty a contact point of its address for good (the unique address becomes a tombstone)."""
    contact.address = f"removed:{contact.id}"
    contact.details, contact.verified, contact.active = None, False, False
    contact.deactivated_reason = reason


def _index_of(contacts: list[ContactPoint], contact_id: int) -> int:
    for index, contact in enumerate(contacts):
        if contact.id == contact_id:
            return index
    raise PortalError(_("You have no such address."))


def _renumber(contacts: list[ContactPoint]) -> None:
    for rank, contact in enumerate(contacts, start=1):
        contact.rank = rank


def _next_rank(session: Session, resident_id: int) -> int:
    highest = session.scalar(
        select(func.coalesce(func.max(ContactPoint.rank), 0)).where(
            ContactPoint.resident_id == resident_id
        )
    )
    return highest + 1


# -- web push ---------------------------------------------------------------------------------


def add_push_subscription(
    session: Session, resident_id: int, subscription: object, now: datetime | None = None
) -> ContactPoint:
    """A browser's `PushSubscription.toJSON()` becomes the resident's push contact point (the
    browser proved itself by subscribing; an endpoint another resident had is theirs now: one
    browser, one current owner)."""
    now = now or utcnow()
    endpoint, keys = _checked_subscription(subscription)
    contact = _contact(session, "push", endpoint)
    if contact is None:
        contact = _new_contact(resident_id, "push", endpoint, _next_rank(session, resident_id), now)
        session.add(contact)
    elif contact.resident_id != resident_id:
        contact.resident_id, contact.rank = resident_id, _next_rank(session, resident_id)
    contact.details, contact.verified, contact.active = keys, True, True
    contact.opted_out_at = contact.deactivated_reason = None
    _consent(session, resident_id, "granted", "channel:push", now)
    session.flush()
    return contact


def _checked_subscription(subscription: object) -> tuple[str, dict]:
    refused = PortalError(_("The browser sent a subscription we cannot use."))
    if not isinstance(subscription, dict) or not isinstance(subscription.get("keys"), dict):
        raise refused
    endpoint, keys = subscription.get("endpoint"), subscription["keys"]
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.netloc:
        raise refused
    if len(endpoint) > 1000:
        raise refused
    # The browser's P-256 public key (an uncompressed point) and its 16-byte auth secret.
    sizes = {"p256dh": 65, "auth": 16}
    if any(_b64url_length(keys.get(name)) != size for name, size in sizes.items()):
        raise refused
    return endpoint, {name: keys[name] for name in sizes}


def _b64url_length(value: object) -> int:
    if not isinstance(value, str) or len(value) > 200:
        return -1
    try:
        return len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error):
        return -1


def vapid_public_key(rt: runtime.Runtime) -> str:
    """The `applicationServerKey` a browser subscribes with."""
    return providers.vapid_keys(rt)[1]


# -- Telegram ---------------------------------------------------------------------------------


def telegram_link(rt: runtime.Runtime, resident_id: int) -> str | None:
    """A deep link that links the Telegram chat it is opened in to the resident (the webhook
    handles its `/start <token>`); None while the bot cannot be reached."""
    username = telegram_bot_username(rt)
    if username is None:
        return None
    with rt.session() as session:
        token = make_link_token(session, resident_id, "telegram")
    return f"https://t.me/{username}?start={token}"


def telegram_bot_username(rt: runtime.Runtime) -> str | None:
    """The bot's @username (getMe, asked once per process), or None if Telegram is down."""
    if BOT_USERNAME_KEY not in rt.keys:
        try:
            rt.keys[BOT_USERNAME_KEY] = asyncio.run(_ask_username(rt))
        except (TelegramError, OSError):
            return None
    return rt.keys[BOT_USERNAME_KEY]


async def _ask_username(rt: runtime.Runtime) -> str:
    bot = make_bot(providers.telegram_token(rt), 1, providers.telegram_api_url(rt))
    async with bot:
        return bot.username


# -- hashing and sealing ----------------------------------------------------------------------


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _code_hash(secret_key: str, link_hash: str, code: str) -> str:
    return hmac.new(secret_key.encode(), f"{link_hash}:{code}".encode(), "sha256").hexdigest()
