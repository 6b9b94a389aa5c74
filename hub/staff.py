"""Staff accounts (argon2 password hashes) and the audit log of sensitive actions."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.contacts import normalise_email
from hub.models import AuditEntry, Role, StaffUser

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 10


def create_staff_user(session: Session, *, email: str, role: str, password: str) -> StaffUser:
    if role not in Role.ALL:
        raise ValueError(
            _("unknown role %(role)s; one of: %(roles)s", role=role, roles=", ".join(Role.ALL))
        )
    email = normalise_email(email).lower()
    if session.scalar(select(StaffUser.id).where(StaffUser.email == email)) is not None:
        raise ValueError(_("a staff user %(email)s already exists", email=email))
    user = StaffUser(email=email, role=role, password_hash="")
    set_password(user, password)
    session.add(user)
    session.flush()
    return user


def set_password(user: StaffUser, password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(
            _("the password must have at least %(num)d characters", num=MIN_PASSWORD_LENGTH)
        )
    user.password_hash = _hasher.hash(password)


def authenticate(session: Session, email: str, password: str) -> StaffUser | None:
    user = session.scalar(
        select(StaffUser).where(StaffUser.email == email.strip().lower(), StaffUser.active)
    )
    if user is None:
        _hasher.hash(password)  # same work either way, so timing does not reveal accounts
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


def audit(session: Session, actor: str, action: str, target: str = "", **detail) -> None:
    session.add(AuditEntry(actor=actor, action=action, target=target, detail=detail))


def audit_entries(
    session: Session, *, before: int | None = None, limit: int = 50
) -> list[AuditEntry]:
    """A page of the audit log, newest first; `before` is the id the previous page ended at."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    return list(session.scalars(query))
