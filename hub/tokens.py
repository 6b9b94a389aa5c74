"""Signed tokens in links and addresses: unsubscribe links, reply+TOKEN@ addresses.

A token is the id and an HMAC over it, per purpose: `123.Hx2…`. Made for every message sent,
so kept cheap (no JSON, no compression); short enough for the local part of an address."""

from __future__ import annotations

from itsdangerous import BadSignature, Signer


def _signer(secret_key: str, purpose: str) -> Signer:
    return Signer(secret_key, salt=f"mestni-glas:{purpose}")


def make_token(secret_key: str, purpose: str, value: int) -> str:
    return _signer(secret_key, purpose).sign(str(value)).decode("ascii")


def read_token(secret_key: str, purpose: str, token: str) -> int | None:
    """The signed whole number, or None for a forged, damaged or foreign token."""
    try:
        value = _signer(secret_key, purpose).unsign(token).decode("ascii")
    except (BadSignature, UnicodeError):
        return None
    return int(value) if value.isdigit() else None
