"""Notify's authentication: `Authorization: Bearer <JWT>`, HS256, `iss` the service id, `iat`
within 30 seconds of now either way, signed with the secret of one of the service's active
keys. The JWT names only the service, so every key is tried, as Notify does; the messages
are Notify's, so its clients and their users recognise them."""

from __future__ import annotations

import time
import uuid

import jwt

from hub.apikeys import KeyHolder, service_id, signing_secrets
from hub.notify.errors import auth_error
from hub.runtime import Runtime

ALGORITHM = "HS256"
CLOCK_SKEW_S = 30
NOT_VALID = "Invalid token: signature, api token is not valid"


def authenticate(rt: Runtime, authorization: str | None) -> KeyHolder:
    """The key that signed the request's token; raises ApiError (401/403) otherwise."""
    token = _bearer_token(authorization)
    issuer = _issuer(token)
    try:
        uuid.UUID(str(issuer))
    except ValueError:
        raise auth_error("Invalid token: service id is not the right data type") from None
    if issuer != service_id(rt):
        raise auth_error("Invalid token: service not found")
    active, revoked = signing_secrets(rt, issuer), signing_secrets(rt, issuer, revoked=True)
    if not active and not revoked:
        raise auth_error("Invalid token: service has no API keys")
    for holder, secret in active:
        if _signed_with(token, secret):
            return holder
    if any(_signed_with(token, secret) for _, secret in revoked):
        raise auth_error("Invalid token: API key revoked")
    raise auth_error("Invalid token: API key not found")


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise auth_error("Unauthorized: authentication token must be provided", 401)
    if authorization[:7].title() != "Bearer ":
        raise auth_error("Unauthorized: authentication bearer scheme must be used", 401)
    return authorization[7:].strip()


def _issuer(token: str) -> str:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise auth_error(NOT_VALID) from None
    if "iss" not in claims:
        raise auth_error("Invalid token: iss field not provided")
    return claims["iss"]


def _signed_with(token: str, secret: str) -> bool:
    """True if `secret` signed the token and its `iat` is fresh; False if another key did."""
    try:
        claims = jwt.decode(
            token,
            key=secret,
            algorithms=[ALGORITHM],
            options={"require": ["iss", "iat"], "verify_iat": False},
        )
    except jwt.InvalidAlgorithmError:
        raise auth_error("Invalid token: algorithm used is not HS256") from None
    except (jwt.InvalidSignatureError, jwt.MissingRequiredClaimError, jwt.DecodeError):
        return False
    except jwt.InvalidTokenError:
        raise auth_error(NOT_VALID) from None
    try:
        issued_at = int(claims["iat"])
    except (TypeError, ValueError):
        return False
    # Real time, not hub.clock: the client's clock is the real one.
    if abs(time.time() - issued_at) > CLOCK_SKEW_S:
        raise auth_error("Error: Your system clock must be accurate to within 30 seconds")
    return True
