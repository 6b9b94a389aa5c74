"""Signed tokens in links and addresses: unsubscribe links, reply+TOKEN@ addresses."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer


def _serializer(secret_key: str, purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret_key, salt=f"mestni-glas:{purpose}")


def make_token(secret_key: str, purpose: str, value: int) -> str:
    return _serializer(secret_key, purpose).dumps(value)


def read_token(secret_key: str, purpose: str, token: str) -> int | None:
    """The signed integer, or None for a forged, damaged or foreign token."""
    try:
        value = _serializer(secret_key, purpose).loads(token)
    except BadSignature:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
