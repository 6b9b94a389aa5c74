"""Idempotent POSTs: a request that comes again with the same `Idempotency-Key` (a client
retrying after a timeout) gets the first answer again, and nothing is done twice.

The database is the source of truth: claiming a key is inserting its row, so of two identical
requests at the same moment exactly one runs (the other gets StillRunning, and the stored
answer once it retries). Answers are kept for TTL."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from hub.clock import utcnow
from hub.models import IdempotencyRecord
from hub.runtime import Runtime

TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: dict | None
    location: str | None


class KeyReused(Exception):
    """The key came before with another request (method, path or body)."""


class StillRunning(Exception):
    """The first request with this key has not answered yet."""


def request_hash(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and all(" " <= c <= "~" for c in key)


def claim(rt: Runtime, api_key_id: int, key: str, fingerprint: str) -> StoredAnswer | None:
    """None: this request owns the key and runs (then `store` or `release`). A StoredAnswer:
    replay it. Raises KeyReused or StillRunning."""
    now = utcnow()
    with rt.session() as session:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - TTL))
    try:
        with rt.session() as session:
            session.add(
                IdempotencyRecord(
                    api_key_id=api_key_id,
                    idempotency_key=key,
                    request_hash=fingerprint,
                    created_at=now,
                )
            )
        return None
    except IntegrityError:
        pass
    with rt.session() as session:
        record = session.get(IdempotencyRecord, (api_key_id, key))
        if record is None:  # its first answer expired between our insert and this read
            raise StillRunning
        if record.request_hash != fingerprint:
            raise KeyReused
        if record.status_code is None:
            raise StillRunning
        return StoredAnswer(record.status_code, record.response_body, record.location)


def store(rt: Runtime, api_key_id: int, key: str, answer: StoredAnswer) -> None:
    with rt.session() as session:
        session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.api_key_id == api_key_id,
                IdempotencyRecord.idempotency_key == key,
            )
            .values(
                status_code=answer.status_code,
                response_body=answer.body,
                location=answer.location,
            )
        )


def release(rt: Runtime, api_key_id: int, key: str) -> None:
    """The request failed on our side (5xx): forget the claim so a retry runs again."""
    with rt.session() as session:
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.api_key_id == api_key_id,
                IdempotencyRecord.idempotency_key == key,
                IdempotencyRecord.status_code.is_(None),
            )
        )
