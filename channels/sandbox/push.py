"""The Web Push stand-in: a push service like Mozilla's autopush, with the browser's side of each
subscription built in, so a notification sent with the real pywebpush is checked, decrypted and
kept for /sandbox exactly as a browser would show it.

It checks what a real service checks (channels.md §3): the TTL header (RFC 8030), the VAPID
authorization (RFC 8292: an ES256 JWT for this origin, expiring within 24 hours, with a contact,
signed by the key in `k`, and that key must be the subscription's applicationServerKey if it was
made with one), a body of at most 4096 bytes, and aes128gcm encryption to the subscription's keys
(RFC 8291). It answers 201 with a Location, 404 for an unknown subscription, 410 for one that is
gone, 413, 400, 401 or 403 with autopush-style JSON errors.

Subscriptions live in the sandbox SQLite file, so any process can make one
(`create_subscription`) and hand its endpoint and keys to the hub as a browser would. Scenarios
(an expired subscription, a throttle, an outage, a smaller body limit) are set on the object in
this process or through `POST /control/push/<action>` from another."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import struct
import threading
import time
import uuid
from collections import Counter
from functools import lru_cache

import http_ece
from aiohttp import web
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import jwt

from channels.sandbox.store import SandboxStore

MAX_BODY_BYTES = 4096  # RFC 8291 §4: what every push service must accept
MAX_VAPID_EXP_S = 24 * 3600  # RFC 8292 §2
CLOCK_SKEW_S = 60
URGENCIES = ("very-low", "low", "normal", "high")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")


def create_subscription(
    store: SandboxStore, standin_url: str, application_server_key: str | None = None
) -> dict:
    """Subscribe a new pretend browser: its keys go into the store (where the stand-in, in any
    process, finds them) and the browser-style subscription comes back, as
    `PushSubscription.toJSON()` gives it: {"endpoint", "keys": {"p256dh", "auth"}}.

    With `application_server_key` (a VAPID public key, base64url) the service accepts only
    messages signed with that key, as browsers' push services do."""
    private = ec.generate_private_key(ec.SECP256R1())
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth = secrets.token_bytes(16)
    subscription_id = uuid.uuid4().hex
    store.add_push_subscription(
        subscription_id,
        _b64url(private.private_numbers().private_value.to_bytes(32, "big")),
        _b64url(auth),
        application_server_key.rstrip("=") if application_server_key else None,
    )
    return {
        "endpoint": f"{standin_url.rstrip('/')}/push/{subscription_id}",
        "keys": {"p256dh": _b64url(point), "auth": _b64url(auth)},
    }


class Refusal(Exception):
    """An error answer: the status and autopush-style JSON saying why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self) -> web.Response:
        body = {
            "code": self.status,
            "error": _REASONS.get(self.status, ""),
            "message": self.message,
        }
        return web.json_response(body, status=self.status, headers=self.headers)


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class PushStandin:
    def __init__(self, store: SandboxStore, max_body_bytes: int = MAX_BODY_BYTES):
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()  # scenarios are set from other threads
        self._throttle = (0, "")  # (requests left, Retry-After)
        self._fail = (0, 500)  # (requests left, status)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/push/{id}", self.receive)]

    def subscribe(self, standin_url: str, application_server_key: str | None = None) -> dict:
        return create_subscription(self.store, standin_url, application_server_key)

    # -- scenarios (also POST /control/push/<name>) -------------------------------------------

    def control_subscribe(self, standin_url: str, application_server_key: str | None = None):
        return self.subscribe(standin_url, application_server_key)

    def control_expire(self, subscription_id: str) -> dict:
        """The browser unsubscribed: from now on 410."""
        return {"expired": self.store.expire_push_subscription(subscription_id)}

    def control_throttle(self, count: int, retry_after: int | str = 1) -> dict:
        """The next `count` requests get 429 with this Retry-After (seconds or an HTTP-date)."""
        with self._lock:
            self._throttle = (int(count), str(retry_after))
        return {}

    def control_fail(self, count: int, status: int = 500) -> dict:
        """The next `count` requests get `status` (an outage: 500, 502, 503)."""
        with self._lock:
            self._fail = (int(count), int(status))
        return {}

    def control_limit(self, max_body_bytes: int = MAX_BODY_BYTES) -> dict:
        """Accept bodies up to this size only (413 above), as a stricter service might."""
        self.max_body_bytes = int(max_body_bytes)
        return {}

    def control_reset(self) -> dict:
        with self._lock:
            self._throttle, self._fail = (0, ""), (0, 500)
        self.max_body_bytes = MAX_BODY_BYTES
        self.stats.clear()
        return {}

    def control_stats(self) -> dict:
        """{"accepted": n, "rejected": {"<status>": n, ...}}"""
        rejected = {k: v for k, v in self.stats.items() if k != "accepted"}
        return {"accepted": self.stats["accepted"], "rejected": rejected}

    def _scenario(self) -> Refusal | None:
        with self._lock:
            left, retry_after = self._throttle
            if left > 0:
                self._throttle = (left - 1, retry_after)
                return Refusal(429, "Too many requests", {"Retry-After": retry_after})
            left, status = self._fail
            if left > 0:
                self._fail = (left - 1, status)
                return Refusal(status, "Simulated failure")
        return None

    # -- the push resource ---------------------------------------------------------------------

    async def receive(self, request: web.Request) -> web.Response:
        try:
            location = await self._accept(request)
        except Refusal as refusal:
            self.stats[str(refusal.status)] += 1
            return refusal.response()
        self.stats["accepted"] += 1
        return web.Response(status=201, headers={"Location": location})

    async def _accept(self, request: web.Request) -> str:
        """Check, decrypt and keep one message; returns its Location or raises Refusal."""
        if refusal := self._scenario():
            raise refusal
        origin = f"{request.scheme}://{request.host}"
        subscription_id = request.match_info["id"]
        subscription = self.store.push_subscription(subscription_id)
        if subscription is None:
            raise Refusal(404, "No such subscription")
        if subscription["gone"]:
            raise Refusal(410, "Subscription expired")
        headers = _push_headers(request)
        _check_vapid(request.headers.get("Authorization", ""), origin, subscription["vapid_key"])
        body = await request.read()
        if len(body) > self.max_body_bytes:
            raise Refusal(413, f"Body of {len(body)} bytes; the limit is {self.max_body_bytes}")
        plain = _decrypt(request, body, subscription)
        title, text, url = _notification(plain)
        message_id = uuid.uuid4().hex
        self.store.add(
            "push",
            to=f"{origin}/push/{subscription_id}",
            body=text,
            subject=title,
            meta={**headers, "url": url, "payload_bytes": len(plain), "message_id": message_id},
        )
        return f"{origin}/m/{message_id}"


def _push_headers(request: web.Request) -> dict:
    """TTL (required), Urgency and Topic, as RFC 8030 §5 defines them."""
    ttl = request.headers.get("TTL")
    if ttl is None:
        raise Refusal(400, "Missing TTL header")
    if not (ttl.strip().isascii() and ttl.strip().isdigit()):
        raise Refusal(400, f"Invalid TTL header: {ttl!r}")
    urgency = request.headers.get("Urgency", "normal")
    if urgency not in URGENCIES:
        raise Refusal(400, f"Invalid Urgency header: {urgency!r}")
    topic = request.headers.get("Topic")
    if topic is not None and not _TOPIC.fullmatch(topic):
        raise Refusal(400, f"Invalid Topic header: {topic!r}")
    return {"ttl": int(ttl), "urgency": urgency, "topic": topic}


def _check_vapid(authorization: str, origin: str, required_key: str | None) -> None:
    """RFC 8292: `vapid t=<JWT>,k=<public key>`; raises Refusal 401 (bad token) or 403 (a key
    other than the one the subscription was made with)."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise Refusal(401, "Missing VAPID authorization ('vapid t=...,k=...')")
    fields = dict(part.strip().partition("=")[::2] for part in params.split(","))
    token, key = fields.get("t", ""), fields.get("k", "").rstrip("=")
    if not token or not key:
        raise Refusal(401, "VAPID authorization needs both t and k")
    claims = _verified_claims(token, key)
    if required_key and key != required_key:
        raise Refusal(403, "VAPID key does not match the subscription's applicationServerKey")
    if str(claims.get("aud", "")).rstrip("/").lower() != origin.lower():
        raise Refusal(401, f"VAPID aud must be {origin}, not {claims.get('aud')!r}")
    exp, now = claims.get("exp"), time.time()
    if not isinstance(exp, int) or exp <= now - CLOCK_SKEW_S:
        raise Refusal(401, "VAPID JWT expired or without exp")
    if exp > now + MAX_VAPID_EXP_S + CLOCK_SKEW_S:
        raise Refusal(401, "VAPID JWT exp is more than 24 hours ahead")
    if not claims.get("sub"):
        raise Refusal(401, "VAPID JWT without sub (a mailto: or https: contact)")


def _verified_claims(token: str, key: str) -> dict:
    try:
        header = json.loads(_b64urldecode(token.split(".", 1)[0]))
        if header.get("alg") != "ES256":
            raise Refusal(401, "VAPID JWT must be signed with ES256")
        claims = jwt.decode(token, key)
    except (InvalidSignature, ValueError, binascii.Error, AttributeError):
        raise Refusal(401, "VAPID JWT signature does not verify with k") from None
    if not isinstance(claims, dict):
        raise Refusal(401, "VAPID JWT claims are not an object")
    return claims


def _decrypt(request: web.Request, body: bytes, subscription: dict) -> bytes:
    if not body:
        return b""
    if request.headers.get("Content-Encoding", "").lower() != "aes128gcm":
        raise Refusal(400, "Content-Encoding must be aes128gcm (RFC 8291)")
    try:
        return http_ece.decrypt(
            body,
            private_key=_browser_key(subscription["private_key"]),
            auth_secret=_b64urldecode(subscription["auth"]),
            version="aes128gcm",
        )
    except (http_ece.ECEException, InvalidTag, ValueError, struct.error, IndexError):
        raise Refusal(400, "Cannot decrypt the body with the subscription's keys") from None


def _notification(plain: bytes) -> tuple[str | None, str, str | None]:
    """(title, body, url) of a JSON payload; a payload that is not JSON is all body."""
    text = plain.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return None, text, None
    if not isinstance(data, dict):
        return None, text, None
    return data.get("title"), str(data.get("body", "")), data.get("url")


@lru_cache(maxsize=4096)
def _browser_key(private_key: str) -> ec.EllipticCurvePrivateKey:
    """The subscription's private key, parsed once (a push is decrypted per message)."""
    return ec.derive_private_key(int.from_bytes(_b64urldecode(private_key), "big"), ec.SECP256R1())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64urldecode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
