"""Web Push (RFC 8030, 8291, 8292) with pywebpush: encrypted notifications to browsers, signed
with the city's VAPID key, over one reused aiohttp session per sender.

A push service keeps a notification the moment it answers 201, so `send_one` fits the
request/response loop in channels.base (`send_each`). What the answer means (channels.md §3):
404/410 the subscription is dead (GONE: fall back to the next channel); 413 the payload is too
big (shrink it and try again); 429 and 5xx the service is busy or down (RETRY, not the resident's
fault); 401/403 our VAPID key or JWT does not match what the subscription was made with (FAILED:
a configuration error that retrying will not fix).

Keys. The VAPID private key is a string: base64url (unpadded) of the raw 32-byte P-256 scalar,
as `generate_vapid_keys` makes it; a PEM or a base64url DER key is accepted too. The public key
is base64url (unpadded) of the 65-byte uncompressed point, which is what the browser's
`pushManager.subscribe({applicationServerKey})` takes. The key is parsed once per sender, and no
error or outcome ever contains it.

Two pywebpush habits matter: given VAPID claims, it signs a new JWT for every message (an ECDSA
signature, as costly as the rest of the hub's work on a message) and writes `aud` (the push
service's origin) into the claims dict; so the sender signs the JWT itself, once per push
service, and reuses it until an hour before it expires (RFC 8292 allows reuse; a JWT made for
one service is never sent to another, which would refuse it). And its default TTL is 0
("deliver only if the browser is online right now"), so every message sets its own."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
import http_ece
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException
from pywebpush import WebPushException, webpush_async

from channels.base import FAILED, GONE, RETRY, SENT, Outcome

# Services must accept 4096-byte bodies (RFC 8291: 3993 bytes of plaintext); keep a margin.
MAX_PAYLOAD_BYTES = 3000
MAX_SHRINKS = 2  # after a 413: halve the budget and try again, at most this many times
ELLIPSIS = "…"
URGENCIES = ("very-low", "low", "normal", "high")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")  # RFC 8030 §5.4: at most 32 base64url characters
MAX_ERROR_CHARS = 1000
VAPID_VALID_S = 12 * 3600  # a signed JWT's lifetime (pywebpush's own choice; at most 24 h)
VAPID_RENEW_S = 3600  # sign a new one when the last has less than this left


@dataclass(frozen=True)
class OutgoingPush:
    key: int  # the caller's id for the message (a delivery id)
    endpoint: str  # the subscription's endpoint URL
    p256dh: str  # the browser's public key, base64url
    auth: str  # the browser's auth secret, base64url
    title: str
    body: str
    url: str  # where a click leads: the full notice
    ttl_s: int  # how long the service keeps it for a browser that is offline
    urgency: str  # very-low, low, normal or high
    topic: str | None = None  # a newer message with the same topic replaces a pending one


# -- keys ----------------------------------------------------------------------------------------


def generate_vapid_keys() -> tuple[str, str]:
    """A new VAPID key pair: (private: base64url raw scalar, public: base64url uncompressed point).

    The private key goes into the hub's settings; the public key goes to the browser as the
    `applicationServerKey` of its subscriptions."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = _b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    return private, public_key_of(private)


def public_key_of(vapid_private_key: str) -> str:
    """The `applicationServerKey` (base64url uncompressed point) for a VAPID private key."""
    return _public_key(load_vapid_key(vapid_private_key))


def load_vapid_key(vapid_private_key: str) -> Vapid02:
    """Parse a VAPID private key (base64url raw or DER, or PEM) once; raises ValueError, whose
    message never repeats the key."""
    text = vapid_private_key.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError
            return Vapid02(key)
        return Vapid02.from_string(text)
    except (ValueError, TypeError, binascii.Error):
        pass
    raise ValueError("the VAPID private key is not a P-256 key (base64url raw or DER, or PEM)")


def _public_key(vapid: Vapid02) -> str:
    point = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _b64url(point)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- the payload ---------------------------------------------------------------------------------


def build_payload(title: str, body: str, url: str, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The notification as the service worker reads it: JSON {"title", "body", "url"} in UTF-8.

    Too long, the body is cut (between characters, ending with "…") until the JSON fits; the
    title and the link stay whole, and the link leads to the full notice. Raises ValueError when
    even an empty body would not fit."""
    payload = _json(title, body, url)
    if len(payload) <= max_bytes:
        return payload
    if len(_json(title, ELLIPSIS, url)) > max_bytes:
        raise ValueError(f"the title and link alone exceed {max_bytes} bytes")
    fits, too_long = 0, len(body)  # characters of the body: the JSON grows with their number
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if len(_json(title, _cut(body, middle), url)) <= max_bytes:
            fits = middle
        else:
            too_long = middle
    return _json(title, _cut(body, fits), url)


def _cut(body: str, characters: int) -> str:
    return body[:characters].rstrip() + ELLIPSIS


def _json(title: str, body: str, url: str) -> bytes:
    data = {"title": title, "body": body, "url": url}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def message_problem(msg: OutgoingPush) -> str | None:
    """Why a push service would refuse this message whatever we did (None: nothing)."""
    if msg.urgency not in URGENCIES:
        return f"urgency must be one of {', '.join(URGENCIES)}, not {msg.urgency!r}"
    if msg.topic is not None and not _TOPIC.fullmatch(msg.topic):
        return f"topic must be 1-32 base64url characters, not {msg.topic!r}"
    if msg.ttl_s < 0:
        return f"TTL must not be negative ({msg.ttl_s})"
    try:
        scheme = urlsplit(msg.endpoint).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        return f"not a push endpoint: {msg.endpoint!r}"
    return None


# -- the answer ----------------------------------------------------------------------------------


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_TOO_BIG = Outcome(key=-1, status="too-big")  # a 413: shrink and try again


def classify(key: int, status: int, text: str, retry_after: str | None, location: str) -> Outcome:
    """Map a push service's answer to an outcome (the table in channels.md §3)."""
    said = f"{status} {text}".strip()
    if 200 <= status < 300:
        return Outcome(key, SENT, provider_id=location or "")
    if status in (404, 410):
        return Outcome(key, GONE, error=f"subscription expired: {said}")
    if status == 413:
        return _TOO_BIG
    if status == 429 or status >= 500:
        wait = retry_after_s(retry_after)
        what = "throttled by" if status == 429 else "error at"
        return Outcome(
            key,
            RETRY,
            error=f"{what} the push service: {said}",
            retry_after_s=wait,
            provider_down=True,
        )
    if status in (401, 403):
        error = (
            f"push service refused our VAPID authorization ({said}): the VAPID key does not "
            "match the subscription's applicationServerKey, or the JWT claims are wrong"
        )
        return Outcome(key, FAILED, error=error)
    return Outcome(key, FAILED, error=f"push service refused the message: {said}")


# -- sending -------------------------------------------------------------------------------------


class PushSender:
    """Sends Web Push messages through one aiohttp session (kept-alive connections to each push
    service, at most `concurrency` at once), made in the event loop of the first send and kept
    for the next jobs in that loop; `close()` it at the end (or `async with PushSender(...)`)."""

    def __init__(
        self,
        vapid_private_key: str,
        vapid_subject: str,
        concurrency: int,
        timeout_s: float = 30.0,
    ):
        self._vapid = load_vapid_key(vapid_private_key)
        self._hidden = _secret_parts(vapid_private_key)
        self.public_key = _public_key(self._vapid)
        self.concurrency = max(1, concurrency)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._claims: dict[str, str | int] = {"sub": vapid_subject}
        try:  # a bad subject would otherwise fail every message
            self._vapid.sign({"sub": vapid_subject, "aud": "https://push.example"})
        except VapidException as exc:
            raise ValueError(f"VAPID subject {vapid_subject!r}: {exc}") from None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signed: dict[str, tuple[int, dict[str, str]]] = {}  # by audience: (exp, headers)

    async def __aenter__(self) -> PushSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            if self._loop is asyncio.get_running_loop():
                await self._session.close()
            else:
                self._session.detach()  # made in another loop, which may be closed
        self._session = self._loop = None

    async def send_one(self, msg: OutgoingPush) -> Outcome:
        """Send one message; never raises for anything the network or the service does."""
        problem = message_problem(msg)
        if problem:
            return Outcome(msg.key, FAILED, error=problem)
        budget = MAX_PAYLOAD_BYTES
        for _ in range(MAX_SHRINKS + 1):
            try:
                payload = build_payload(msg.title, msg.body, msg.url, budget)
            except ValueError as exc:
                return Outcome(msg.key, FAILED, error=str(exc))
            outcome = await self._post(msg, payload)
            if outcome is not _TOO_BIG:
                return outcome
            budget //= 2
        error = f"413 payload too large even at {len(payload)} bytes"
        return Outcome(msg.key, FAILED, error=error)

    async def _post(self, msg: OutgoingPush, payload: bytes) -> Outcome:
        subscription = {"endpoint": msg.endpoint, "keys": {"p256dh": msg.p256dh, "auth": msg.auth}}
        try:
            headers: dict[str, str | int | float] = {
                **self._vapid_headers(msg.endpoint),
                "Urgency": msg.urgency,
            }
            if msg.topic:
                headers["Topic"] = msg.topic
            response = await webpush_async(
                subscription,
                data=payload,  # bytes go out as they are
                ttl=msg.ttl_s,
                headers=headers,
                timeout=self.timeout,  # a ClientTimeout: a bare None would mean no timeout
                aiohttp_session=self._session_here(),
            )
        except WebPushException as exc:
            if exc.response is None:  # raised before sending: the subscription's keys
                return self._failed(msg, f"subscription not usable: {exc.message}")
            return await self._answer(msg, exc.response)
        except aiohttp.InvalidURL as exc:
            return self._failed(msg, f"not a push endpoint: {exc}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            host = urlsplit(msg.endpoint).netloc
            error = self._clean(f"push service {host} unreachable: {type(exc).__name__} {exc}")
            return Outcome(msg.key, RETRY, error=error, provider_down=True)
        except (ValueError, http_ece.ECEException, VapidException) as exc:
            return self._failed(msg, f"subscription not usable: {type(exc).__name__} {exc}")
        return await self._answer(msg, response)

    def _vapid_headers(self, endpoint: str) -> dict[str, str]:
        """The VAPID Authorization header for the push service of `endpoint` (its origin is
        the JWT's audience), signed once and reused while it has an hour or more to live."""
        url = urlsplit(endpoint)
        audience = f"{url.scheme}://{url.netloc}"
        now = int(time.time())
        expires, headers = self._signed.get(audience, (0, {}))
        if expires - now < VAPID_RENEW_S:
            expires = now + VAPID_VALID_S
            headers = self._vapid.sign({**self._claims, "aud": audience, "exp": expires})
            self._signed[audience] = (expires, headers)
        return headers

    async def _answer(self, msg: OutgoingPush, response: aiohttp.ClientResponse) -> Outcome:
        try:
            text = (await response.text(errors="replace")).strip()
        except (aiohttp.ClientError, OSError):
            text = ""
        outcome = classify(
            msg.key,
            response.status,
            " ".join(text.split())[:500],
            response.headers.get("Retry-After"),
            response.headers.get("Location", ""),
        )
        if outcome.error:
            return replace(outcome, error=self._clean(outcome.error))
        return outcome

    def _failed(self, msg: OutgoingPush, error: str) -> Outcome:
        return Outcome(msg.key, FAILED, error=self._clean(error))

    def _clean(self, error: str) -> str:
        """At most MAX_ERROR_CHARS, and never the private key (outcomes are stored and shown)."""
        for part in self._hidden:
            error = error.replace(part, "[VAPID private key]")
        return error[:MAX_ERROR_CHARS]

    def _session_here(self) -> aiohttp.ClientSession:
        """The sender's session, made on first use inside the running loop. A session made in
        another loop is dropped, not closed (that loop may be closed): its connections are
        useless here."""
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is not loop:
            self._session.detach()
            self._session = None
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.concurrency)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
            self._loop = loop
        return self._session


def _secret_parts(vapid_private_key: str) -> list[str]:
    """The key and, for a PEM, each line of it: what must never appear in an error."""
    text = vapid_private_key.strip()
    parts = {text, *(line.strip() for line in text.splitlines())}
    return sorted((p for p in parts if len(p) >= 16 and not p.startswith("-----")), key=len)[::-1]
