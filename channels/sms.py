"""SMS through Twilio's REST API with the official `twilio` library (its aiohttp client).

What matters at city scale:
- Twilio bills and throttles by segment, not by message: the hub counts segments itself
  (channels.gsm) so rates and previews are honest, and one č turns a message into UCS-2.
- Twilio has no base-URL setting; the sandbox is reached through an HTTP client that sends
  every *.twilio.com request to the stand-in (robust against TWILIO_EDGE/TWILIO_REGION,
  which rewrite the host; see docs/channels.md).
- Error codes decide what happens to the address: a number that opted out or does not exist
  is dead (no retry, fall back to the next channel); a throttle or queue overflow is the
  provider's state, retried later without counting against the resident.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from channels.base import FAILED, GONE, RETRY, SENT, Outcome

# The address is dead: 21610 the recipient replied STOP; the rest say the number is not one
# that can get an SMS (invalid, not mobile, unreachable, unknown).
DEAD_NUMBER_CODES = frozenset({21211, 21217, 21401, 21407, 21610, 21612, 21614})
# The provider is busy: REST concurrency (20429), queue overflow (21611, 30001), its own errors.
PROVIDER_BUSY_CODES = frozenset({20429, 21611, 30001, 20500, 20503})
REQUEST_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class TwilioAccount:
    account_sid: str
    auth_token: str
    from_number: str = ""
    messaging_service_sid: str = ""
    api_url: str = ""  # empty: the real api.twilio.com; else a stand-in, e.g. http://127.0.0.1:P


@dataclass(frozen=True)
class OutgoingSms:
    key: int
    to: str  # E.164
    body: str
    status_callback: str | None = None


class _LocalTwilioHttp(AsyncTwilioHttpClient):
    """Sends what the library addresses to *.twilio.com to `api_url` instead."""

    def __init__(self, api_url: str, pool_size: int):
        super().__init__(pool_connections=False, timeout=REQUEST_TIMEOUT_S)
        self.api_url = urlsplit(api_url) if api_url else None
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )

    async def request(self, method, url, params=None, data=None, headers=None, auth=None, **kw):
        target = urlsplit(url)
        if self.api_url is not None and (target.hostname or "").endswith(".twilio.com"):
            url = urlunsplit(
                (self.api_url.scheme, self.api_url.netloc, target.path, target.query, "")
            )
        if auth is not None:
            # As a header: aiohttp 3.14 deprecates the BasicAuth object twilio would build.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        # The session's timeout applies; aiohttp no longer takes a bare number per request.
        return await super().request(method, url, params=params, data=data, headers=headers)


class TwilioSender:
    """One Twilio client (and HTTP connection pool) per process and account, reused by jobs."""

    def __init__(self, account: TwilioAccount, concurrency: int):
        self.account = account
        self.concurrency = max(1, concurrency)
        self._client: Client | None = None

    def _messages(self):
        if self._client is None:
            http = _LocalTwilioHttp(self.account.api_url, self.concurrency)
            self._client = Client(
                self.account.account_sid, self.account.auth_token, http_client=http
            )
        return self._client.messages

    async def send_one(self, sms: OutgoingSms) -> Outcome:
        sender = (
            {"messaging_service_sid": self.account.messaging_service_sid}
            if self.account.messaging_service_sid
            else {"from_": self.account.from_number}
        )
        callback = {"status_callback": sms.status_callback} if sms.status_callback else {}
        try:
            message = await self._messages().create_async(
                to=sms.to, body=sms.body, **sender, **callback
            )
        except TwilioRestException as error:
            return classify(sms.key, error.status, error.code, error.msg)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            return Outcome(
                sms.key,
                RETRY,
                error=f"Twilio unreachable: {type(error).__name__}",
                provider_down=True,
            )
        return Outcome(sms.key, SENT, provider_id=message.sid)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.http_client.session.close()
            self._client = None


def classify(key: int, status: int, code: int | None, text: str) -> Outcome:
    """A Twilio error as an outcome: dead address, provider busy (retry), or failed."""
    error = f"Twilio {code or status}: {text}"[:1000]
    if code in DEAD_NUMBER_CODES:
        return Outcome(key, GONE, error=error)
    if code in PROVIDER_BUSY_CODES or status == 429 or status >= 500:
        return Outcome(key, RETRY, error=error, provider_down=True)
    return Outcome(key, FAILED, error=error)
