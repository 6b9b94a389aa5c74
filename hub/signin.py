"""Staff sign-in hardening: lock-out after repeated failures (per account and per client
address, counted in Redis so every web process sees the same counts), and sign-out everywhere
(a per-user session generation in the database that every request checks)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select, update

from hub.clock import utcnow
from hub.config import Settings
from hub.models import StaffUser
from hub.ratelimit import count_in_window
from hub.runtime import Runtime
from hub.staff import audit, authenticate

# Failures are counted within WINDOW_S; reaching the limit (HUB_SIGNIN_MAX_FAILURES for an
# account) locks sign-in for HUB_SIGNIN_LOCKOUT seconds. An address gets ADDRESS_FACTOR times
# the limit: several people may sign in from one city office behind one NAT.
WINDOW_S = 15 * 60
ADDRESS_FACTOR = 4
# The defaults, for tests and docs; rt.settings holds the values in force.
ACCOUNT_LIMIT = Settings.signin_max_failures
ADDRESS_LIMIT = ACCOUNT_LIMIT * ADDRESS_FACTOR
LOCK_S = Settings.signin_lockout_s
MAX_AUDITED_EMAIL = 320


@dataclass(frozen=True)
class SignIn:
    """What a sign-in attempt came to: a user (id and session generation), or the seconds
    to wait before trying again (0 when the password was simply wrong)."""

    user_id: int | None = None
    generation: int = 0
    retry_after_s: int = 0


def _keys(email: str, address: str) -> dict[str, str]:
    # The e-mail is hashed: Redis keys show up in monitoring, e-mail addresses should not.
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return {"account": f"hub:signin:account:{account}", "address": f"hub:signin:address:{address}"}


def _limits(settings: Settings) -> dict[str, int]:
    limit = settings.signin_max_failures
    return {"account": limit, "address": limit * ADDRESS_FACTOR}


def locked_for(rt: Runtime, email: str, address: str) -> int:
    """Seconds until sign-in is allowed again for this account or address (0: allowed now)."""
    keys = _keys(email, address)
    waits = [rt.redis.ttl(f"{key}:lock") for key in keys.values()]
    return max([w for w in waits if w > 0], default=0)


def account_locked_for(rt: Runtime, email: str) -> int:
    """Seconds this account stays locked out (0: not locked); the admin pages show it."""
    return max(rt.redis.ttl(f"{_keys(email, '')['account']}:lock"), 0)


def sign_in(rt: Runtime, email: str, password: str, address: str) -> SignIn:
    """Check a password unless the account or address is locked out; count failures."""
    wait = locked_for(rt, email, address)
    if wait:
        return SignIn(retry_after_s=wait)
    with rt.session() as session:
        user = authenticate(session, email, password)
        if user is not None:
            user.last_signin_at = utcnow()
            rt.redis.delete(_keys(email, address)["account"])
            return SignIn(user_id=user.id, generation=user.session_generation)
    return SignIn(retry_after_s=_count_failure(rt, email, address))


def _count_failure(rt: Runtime, email: str, address: str) -> int:
    """Count a failed attempt; lock the account or address out when it reaches its limit.
    Returns the lock-out's length when this failure started one."""
    actor = email.strip().lower()[:MAX_AUDITED_EMAIL]
    limits, lock_s = _limits(rt.settings), rt.settings.signin_lockout_s
    locked = []
    for kind, key in _keys(email, address).items():
        failures, _ = count_in_window(rt.redis, key, WINDOW_S)
        if failures >= limits[kind]:
            rt.redis.set(f"{key}:lock", 1, ex=lock_s)
            rt.redis.delete(key)
            locked.append(kind)
    with rt.session() as session:
        audit(session, actor, "signin.failed", f"address:{address}")
        for kind in locked:
            audit(session, actor, "signin.locked", f"address:{address}", by=kind, seconds=lock_s)
    return lock_s if locked else 0


def sign_out_everywhere(rt: Runtime, user_id: int) -> None:
    """End every session of this user, on every device."""
    with rt.session() as session:
        session.execute(
            update(StaffUser)
            .where(StaffUser.id == user_id)
            .values(session_generation=StaffUser.session_generation + 1)
        )
        email = session.scalar(select(StaffUser.email).where(StaffUser.id == user_id))
        audit(session, email or str(user_id), "signin.sign_out_everywhere", f"staff:{user_id}")
