"""Secrets the hub must use again later (a Notify key's secret to check JWTs, a callback
endpoint's secret to sign POSTs, a resident's sign-in code waiting in a Redis job) are kept
sealed with HUB_SECRET_KEY, never in the clear: a copy of the database or of Redis alone does
not give them away."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


def seal(secret_key: str, plain: str) -> str:
    return _fernet(secret_key).encrypt(plain.encode()).decode()


def unseal(secret_key: str, sealed: str) -> str | None:
    """The plain secret, or None when it was sealed under another HUB_SECRET_KEY."""
    try:
        return _fernet(secret_key).decrypt(sealed).decode()
    except InvalidToken:
        return None


def _fernet(secret_key: str) -> Fernet:
    material = hashlib.sha256(b"sealed-secrets:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(material))
