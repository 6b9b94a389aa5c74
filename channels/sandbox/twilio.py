"""The Twilio stand-in: the Messages resource of Twilio's REST API, and the status callbacks
Twilio posts afterwards, signed as Twilio signs them.

It answers like Twilio: HTTP Basic auth with the account SID and auth token (401, code 20003,
otherwise), 201 with a message resource (sid, status "queued", num_segments), errors as
{"code", "message", "more_info", "status"}. Twilio's magic test numbers behave as with Twilio's
test credentials (+15005550001 invalid, +15005550002 cannot route, +15005550003 no permission
for the region, +15005550004 opted out with STOP, +15005550009 not a mobile number). A test or
another process can make any number fail with a given code, answer slowly, throttle (429,
20429), or end "undelivered" in its status callback."""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets
from collections import Counter
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from channels.gsm import sms_length
from channels.sandbox.store import SandboxStore

MAGIC_NUMBERS = {
    "+15005550001": (400, 21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (400, 21612, "The 'To' phone number is not currently reachable via SMS."),
    "+15005550003": (400, 21408, "Permission to send an SMS has not been enabled for the region."),
    "+15005550004": (400, 21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (400, 21614, "'To' number is not a valid mobile number"),
}
CALLBACK_DELAY_S = 0.05


class TwilioStandin:
    def __init__(self, store: SandboxStore, account_sid: str, auth_token: str):
        self.store = store
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.failures: dict[str, tuple[int, int, str]] = dict(MAGIC_NUMBERS)
        self.delays: dict[str, float] = {}
        self.undelivered: dict[str, int] = {}  # number -> ErrorCode of its "undelivered" callback
        self.throttle_next = 0
        self.callbacks_in_reverse = False  # "delivered" before "sent", as Twilio may
        self.stats: Counter[str] = Counter()
        self._validator = RequestValidator(auth_token)
        self._callbacks: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/2010-04-01/Accounts/{sid}/Messages.json", self.create_message)]

    # -- scenarios (also POST /control/twilio/<name>) -------------------------------------

    def control_fail(self, number: str, code: int, status: int = 400, message: str = "") -> dict:
        self.failures[number] = (status, code, message or f"Simulated error {code}")
        return {}

    def control_slow(self, number: str, seconds: float) -> dict:
        self.delays[number] = seconds
        return {}

    def control_undeliver(self, number: str, error_code: int = 30005) -> dict:
        self.undelivered[number] = error_code
        return {}

    def control_throttle(self, count: int) -> dict:
        self.throttle_next = count
        return {}

    def control_reverse_callbacks(self, on: bool = True) -> dict:
        self.callbacks_in_reverse = on
        return {}

    def control_stats(self) -> dict:
        return dict(self.stats)

    # -- the Messages resource -------------------------------------------------------------

    async def create_message(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            self.stats["unauthorised"] += 1
            return _error(401, 20003, "Authenticate")
        form = await request.post()
        to, body = form.get("To", ""), form.get("Body", "")
        sender = form.get("From") or form.get("MessagingServiceSid")
        if not to or not body or not sender:
            return _error(400, 21604, "A 'To' phone number, a 'Body' and a sender are required.")
        if self.throttle_next > 0:
            self.throttle_next -= 1
            self.stats["throttled"] += 1
            return _error(429, 20429, "Too Many Requests")
        if to in self.failures:
            self.stats["failed"] += 1
            return _error(*self.failures[to])
        if to in self.delays:
            await asyncio.sleep(self.delays[to])
        sid = "SM" + secrets.token_hex(16)
        length = sms_length(body)
        self.store.add(
            "sms",
            to,
            body,
            meta={
                "sid": sid,
                "from": sender,
                "segments": length.segments,
                "encoding": length.encoding,
            },
        )
        self.stats["accepted"] += 1
        if form.get("StatusCallback"):
            self._later(self._status_callbacks(form["StatusCallback"], sid, to, sender))
        return web.json_response(self._resource(sid, to, sender, body, length.segments), status=201)

    def _authorised(self, request: web.Request) -> bool:
        if request.match_info["sid"] != self.account_sid:
            return False
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (
            scheme == "Basic"
            and secrets.compare_digest(user, self.account_sid)
            and secrets.compare_digest(password, self.auth_token)
        )

    def _resource(self, sid: str, to: str, sender: str, body: str, segments: int) -> dict:
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": sender if sender.startswith("+") else None,
            "messaging_service_sid": None if sender.startswith("+") else sender,
            "body": body,
            "status": "queued",
            "num_segments": str(segments),
            "num_media": "0",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }

    # -- status callbacks -------------------------------------------------------------------

    def _later(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _status_callbacks(self, url: str, sid: str, to: str, sender: str) -> None:
        final = "undelivered" if to in self.undelivered else "delivered"
        order = ["sent", final]
        if self.callbacks_in_reverse:
            order.reverse()
        for status in order:
            await asyncio.sleep(CALLBACK_DELAY_S)
            params = {
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "AccountSid": self.account_sid,
                "To": to,
                "From": sender,
                "ApiVersion": "2010-04-01",
            }
            if status == "undelivered":
                params["ErrorCode"] = str(self.undelivered[to])
            await self.post_signed(url, params)

    async def close(self) -> None:
        if self._callbacks is not None:
            await self._callbacks.close()

    async def post_signed(self, url: str, params: dict[str, str]) -> int | None:
        """POST form parameters to the hub as Twilio does, with X-Twilio-Signature."""
        if self._callbacks is None or self._callbacks.closed:
            self._callbacks = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        signature = self._validator.compute_signature(url, params)
        try:
            async with self._callbacks.post(
                url, data=params, headers={"X-Twilio-Signature": signature}
            ) as response:
                self.stats[f"callback_{response.status}"] += 1
                return response.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.stats["callback_unreachable"] += 1
            return None


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )
