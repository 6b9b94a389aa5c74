"""API keys for other city systems: created by an admin, shown once, scoped to a role,
revocable.

A key reads `{name}-{service_id}-{secret}`, GOV.UK Notify's format, so systems built on a
Notify client work by changing only the base URL and the key: the client takes the service id
and the secret from the last 73 characters. The same whole key is a Bearer token for /api/v1."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.clock import utcnow
from hub.models import ApiKey, ApiKeyType, Role
from hub.providers import instance_key
from hub.runtime import Runtime
from hub.sealing import seal, unseal
from hub.staff import audit

MAX_NAME = 100
UUID_LENGTH = 36


class ApiKeyError(ValueError):
    pass


@dataclass(frozen=True)
class KeyHolder:
    """What an API view needs to know about the key a request came with."""

    id: int
    name: str
    role: str
    key_type: str


def service_id(rt: Runtime) -> str:
    """This hub's service id (the `iss` of a Notify client's JWT), made once."""
    return instance_key(rt, "service_id", lambda: str(uuid.uuid4()))


def create_api_key(rt: Runtime, *, name: str, role: str, key_type: str, created_by: str) -> str:
    """Store a new key and return it whole: the only time anyone sees its secret."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(c in name for c in "\r\n\0"):
        raise ApiKeyError(_("the name must be one line of 1 to %(n)d characters", n=MAX_NAME))
    if role not in Role.ALL:
        raise ApiKeyError(_("unknown role %(role)s", role=role))
    if key_type not in ApiKeyType.ALL:
        raise ApiKeyError(_("unknown key type %(type)s", type=key_type))
    secret = str(uuid.uuid4())
    with rt.session() as session:
        key = ApiKey(
            name=name,
            role=role,
            key_type=key_type,
            secret_hash=_digest(secret),
            secret_sealed=seal(rt.settings.secret_key, secret),
            created_by=created_by,
        )
        session.add(key)
        session.flush()
        audit(session, created_by, "api_key.create", f"api_key:{key.id}", role=role, type=key_type)
    slug = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "key"
    return f"{slug}-{service_id(rt)}-{secret}"


def revoke_api_key(rt: Runtime, key_id: int, *, actor: str) -> None:
    with rt.session() as session:
        key = session.get(ApiKey, key_id)
        if key is None or key.revoked_at is not None:
            raise ApiKeyError(_("no active API key %(id)d", id=key_id))
        key.revoked_at = utcnow()
        audit(session, actor, "api_key.revoke", f"api_key:{key_id}")


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def key_for_bearer(rt: Runtime, token: str) -> KeyHolder | None:
    """The active key a whole `{name}-{service_id}-{secret}` token is, or None."""
    parts = split_key(token)
    if parts is None or parts[0] != service_id(rt):
        return None
    with rt.session() as session:
        key = session.scalar(
            select(ApiKey).where(
                ApiKey.secret_hash == _digest(parts[1]), ApiKey.revoked_at.is_(None)
            )
        )
        return _holder(key) if key is not None else None


def signing_secrets(
    rt: Runtime, issuer: str, *, revoked: bool = False
) -> list[tuple[KeyHolder, str]]:
    """Every active (or, with `revoked`, every revoked) key of service `issuer` with its
    secret, to check a Notify JWT against (the JWT names only the service, so each key is
    tried, as Notify does; a revoked key's tokens are refused with a reason of their own)."""
    if issuer != service_id(rt):
        return []
    with rt.session() as session:
        state = ApiKey.revoked_at.is_not(None) if revoked else ApiKey.revoked_at.is_(None)
        keys = session.scalars(select(ApiKey).where(state))
        unsealed = [
            (_holder(key), unseal(rt.settings.secret_key, key.secret_sealed)) for key in keys
        ]
    # A key sealed under an earlier HUB_SECRET_KEY is void.
    return [(holder, secret) for holder, secret in unsealed if secret is not None]


def split_key(token: str) -> tuple[str, str] | None:
    """(service id, secret) from a whole key, the way Notify's clients read it."""
    token = token.strip()
    if len(token) < 2 * UUID_LENGTH + 1 or token[-UUID_LENGTH - 1] != "-":
        return None
    service, secret = token[-2 * UUID_LENGTH - 1 : -UUID_LENGTH - 1], token[-UUID_LENGTH:]
    if not (_is_uuid(service) and _is_uuid(secret)):
        return None
    return service, secret


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _holder(key: ApiKey) -> KeyHolder:
    return KeyHolder(id=key.id, name=key.name, role=key.role, key_type=key.key_type)


def _digest(secret: str) -> str:
    # The secret is a random UUID (122 bits): a plain hash is enough, no slow KDF needed.
    return hashlib.sha256(secret.encode()).hexdigest()
