"""The Telegram Bot API stand-in: what python-telegram-bot talks to in the sandbox, the tests and
the benchmarks, answering as api.telegram.org does so that PTB raises what it raises there.

Routes /bot<token>/<method> (GET or POST; form-encoded, JSON or multipart bodies, as PTB and
other clients send them) for getMe, sendMessage, setWebhook, getWebhookInfo and deleteWebhook.
Errors have Telegram's shape {"ok": false, "error_code", "description", "parameters"?}:
- a wrong token: 401 Unauthorized;
- HTML Telegram would refuse (a tag it does not support, a tag left open): 400 "can't parse
  entities", checked as Telegram's parser (tdlib) checks it;
- Telegram's flood limits (core.telegram.org/bots/faq): about 30 messages a second per bot,
  counted over a sliding second, and 1 a second per chat (Telegram tolerates a short burst; here
  the second message within the second is refused): 429 with parameters.retry_after;
- scenarios set by a test, or by another process through POST /control/telegram/<action>: a
  chat that blocked the bot (403), a group that became a supergroup (400 with
  migrate_to_chat_id), slow answers, other limits.
Accepted messages go to the sandbox store (channel "telegram", to = the chat id, body = the text
as sent, meta = parse_mode, message_id, reply_to_message_id).

For inbound work it also plays Telegram's side of the webhook: post_update() POSTs an update to
the URL setWebhook registered, with the X-Telegram-Bot-Api-Secret-Token header, and
getWebhookInfo reports the last failed delivery as Telegram does.

Deliberate differences: http:// webhook URLs on any port are accepted (Telegram wants https on
443, 80, 88 or 8443) so a hub on 127.0.0.1 can receive; message ids count up across all chats;
updates that could not be delivered are counted as pending but not delivered again.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from channels.sandbox.store import SandboxStore

ALLOWED_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "blockquote"}
    | {"tg-spoiler", "span"}  # span only with class="tg-spoiler"
)
MAX_TEXT_LENGTH = 4096  # characters after entity parsing
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
PER_BOT_PER_S = 30
PER_CHAT_PER_S = 1.0
WEBHOOK_TIMEOUT_S = 10.0
DEFAULT_BOT_ID = 7000000001
# Update types Telegram sends only when allowed_updates names them.
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
STAT_NAMES = ("sent", "throttled", "blocked", "migrated", "rejected", "unauthorized")

Handler = Callable[[dict[str, Any]], web.Response]


class _Refused(Exception):
    """Telegram's error answer to a request, raised from deep in a check."""

    def __init__(self, code: int, description: str, parameters: dict | None = None):
        super().__init__(description)
        self.response = _error(code, description, parameters)


class TelegramStandin:
    def __init__(
        self,
        store: SandboxStore,
        token: str,
        username: str = "MestniGlasBot",
        first_name: str = "Mestni glas",
    ):
        self.store = store
        self.token = token
        self.bot_user = {
            "id": _bot_id(token),
            "is_bot": True,
            "first_name": first_name,
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.stats: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()
        self._message_ids = itertools.count(1)
        self._update_ids = itertools.count(700_000_001)
        self._methods: dict[str, Handler] = {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "setwebhook": self._set_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "deletewebhook": self._delete_webhook,
        }
        self.control_reset()

    def routes(self) -> list[web.RouteDef]:
        return [web.route("*", "/bot{token}/{method}", self.handle)]

    # -- scenarios (also POST /control/telegram/<name>) -----------------------------------------

    def control_reset(self) -> dict:
        """Forget scenarios, limits, counts, the webhook and the flood windows."""
        self.per_bot, self.per_chat = PER_BOT_PER_S, PER_CHAT_PER_S
        self.latency_s = 0.0
        self.blocked: set[str] = set()
        self.migrated: dict[str, int] = {}
        self.webhook: dict[str, Any] | None = None
        self.pending: deque[dict] = deque()
        self.last_webhook_error: tuple[int, str] | None = None
        self.stats.clear()
        self._sent_at: deque[float] = deque()  # this bot's accepted messages, oldest first
        self._chat_last: dict[str, float] = {}  # chat -> its last accepted message
        self._chat_order: deque[tuple[float, str]] = deque()  # to forget quiet chats
        return {}

    def control_block(self, chat_id: str | int) -> dict:
        self.blocked.add(str(chat_id))
        return {}

    def control_unblock(self, chat_id: str | int) -> dict:
        self.blocked.discard(str(chat_id))
        return {}

    def control_migrate(self, chat_id: str | int, new_chat_id: str | int) -> dict:
        self.migrated[str(chat_id)] = int(new_chat_id)
        return {}

    def control_set_rate(self, per_bot: int | None = None, per_chat: float | None = None) -> dict:
        """Messages a second per bot and per chat (0: no limit); None keeps the current one."""
        if per_bot is not None:
            self.per_bot = int(per_bot)
        if per_chat is not None:
            self.per_chat = float(per_chat)
        return {"per_bot": self.per_bot, "per_chat": self.per_chat}

    def control_slow(self, seconds: float) -> dict:
        """Answer every request after `seconds`, as a distant or loaded API would."""
        self.latency_s = float(seconds)
        return {}

    def control_stats(self) -> dict:
        return {name: self.stats[name] for name in STAT_NAMES} | dict(self.stats)

    def control_send_update(self, text: str, chat_id: str | int, **fields: Any) -> dict:
        """A resident writes `text` to the bot: a message update to the webhook."""
        update = self.message_update(text, chat_id, **fields)
        return {"update_id": update["update_id"], **self._post_soon(update)}

    def control_send_chat_member(self, chat_id: str | int, status: str = "kicked") -> dict:
        """A resident blocks ("kicked") or restarts ("member") the bot: a my_chat_member update."""
        update = self.chat_member_update(chat_id, status)
        return {"update_id": update["update_id"], **self._post_soon(update)}

    # -- the Bot API -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        if not secrets.compare_digest(request.match_info["token"].encode(), self.token.encode()):
            self.stats["unauthorized"] += 1
            return _error(401, "Unauthorized")
        method = self._methods.get(request.match_info["method"].lower())
        if method is None:
            return _error(404, "Not Found")
        try:
            params = await _params(request)
        except ValueError:
            return _error(400, "Bad Request: can't parse JSON object")
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return method(params)

    def _get_me(self, params: dict[str, Any]) -> web.Response:
        return _ok(self.bot_user)

    def _send_message(self, params: dict[str, Any]) -> web.Response:
        chat, text = str(params.get("chat_id", "")).strip(), params.get("text")
        try:
            shown = self._shown_text(chat, text, params.get("parse_mode"))
        except _Refused as refusal:
            return refusal.response
        wait = self._flood_wait(chat)
        if wait:
            self.stats["throttled"] += 1
            return _error(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
        chat_id, message_id = int(chat), next(self._message_ids)
        meta: dict[str, Any] = {"parse_mode": params.get("parse_mode"), "message_id": message_id}
        if reply_to := _reply_to(params):
            meta["reply_to_message_id"] = reply_to
        self.store.add("telegram", to=str(chat_id), body=text, meta=meta)
        self.stats["sent"] += 1
        return _ok(self._message(chat_id, message_id, shown))

    def _shown_text(self, chat: str, text: Any, parse_mode: Any) -> str:
        """The text the chat would show; _Refused with Telegram's answer if it is not taken."""
        if not chat:
            raise self._rejected("Bad Request: chat_id is empty")
        if not isinstance(text, str) or not text:
            raise self._rejected("Bad Request: message text is empty")
        if chat in self.blocked:
            self.stats["blocked"] += 1
            raise _Refused(403, "Forbidden: bot was blocked by the user")
        if chat in self.migrated:
            self.stats["migrated"] += 1
            description = "Bad Request: group chat was upgraded to a supergroup chat"
            raise _Refused(400, description, {"migrate_to_chat_id": self.migrated[chat]})
        if not _is_chat_id(chat):  # an @username we do not know
            raise self._rejected("Bad Request: chat not found")
        try:
            shown = plain_text(text, parse_mode)
        except ValueError as exc:
            raise self._rejected(f"Bad Request: {exc}") from None
        if not shown.strip():
            raise self._rejected("Bad Request: message text is empty")
        if len(shown) > MAX_TEXT_LENGTH:
            raise self._rejected("Bad Request: message is too long")
        return shown

    def _rejected(self, description: str) -> _Refused:
        self.stats["rejected"] += 1
        return _Refused(400, description)

    def _flood_wait(self, chat: str) -> int:
        """Seconds to wait if this message would break a flood limit; else 0, and count it."""
        now = time.monotonic()
        sent_at = self._sent_at
        while sent_at and sent_at[0] <= now - 1.0:
            sent_at.popleft()
        interval = 1.0 / self.per_chat if self.per_chat > 0 else 0.0
        self._forget_chats(now - max(interval, 1.0))
        last = self._chat_last.get(chat)
        if interval and last is not None and now - last < interval:
            return max(1, math.ceil(last + interval - now))
        if self.per_bot > 0 and len(sent_at) >= self.per_bot:
            return max(1, math.ceil(sent_at[0] + 1.0 - now))
        sent_at.append(now)
        if interval:
            self._chat_last[chat] = now
            self._chat_order.append((now, chat))
        return 0

    def _forget_chats(self, horizon: float) -> None:
        order = self._chat_order
        while order and order[0][0] <= horizon:
            at, chat = order.popleft()
            if self._chat_last.get(chat) == at:
                del self._chat_last[chat]

    def _message(self, chat_id: int, message_id: int, text: str) -> dict:
        return {
            "message_id": message_id,
            "from": self.bot_user,
            "chat": _chat(chat_id),
            "date": int(time.time()),
            "text": text,
        }

    # -- the webhook -----------------------------------------------------------------------------

    def _set_webhook(self, params: dict[str, Any]) -> web.Response:
        url = str(params.get("url") or "").strip()
        secret = params.get("secret_token")
        if secret is not None and not SECRET_TOKEN.fullmatch(str(secret)):
            return _error(400, "Bad Request: secret token contains unallowed characters")
        if url and not url.startswith(("http://", "https://")):
            return _error(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        if _flag(params.get("drop_pending_updates")):
            self.pending.clear()
        if not url:
            self.webhook = None
            return _ok(True, "Webhook was deleted")
        self.webhook = {
            "url": url,
            "secret_token": None if secret is None else str(secret),
            "allowed_updates": _string_list(params.get("allowed_updates")),
            "max_connections": int(params.get("max_connections") or 40),
        }
        self.last_webhook_error = None
        return _ok(True, "Webhook was set")

    def _get_webhook_info(self, params: dict[str, Any]) -> web.Response:
        hook = self.webhook or {}
        info: dict[str, Any] = {
            "url": hook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self.pending),
        }
        if hook:
            info["max_connections"] = hook["max_connections"]
            if hook["allowed_updates"]:
                info["allowed_updates"] = hook["allowed_updates"]
        if self.last_webhook_error:
            info["last_error_date"], info["last_error_message"] = self.last_webhook_error
        return _ok(info)

    def _delete_webhook(self, params: dict[str, Any]) -> web.Response:
        if _flag(params.get("drop_pending_updates")):
            self.pending.clear()
        self.webhook = None
        return _ok(True, "Webhook was deleted")

    async def post_update(self, update: dict) -> dict:
        """Deliver `update` to the webhook as Telegram does; a failure is kept as pending and
        shown by getWebhookInfo. Returns {"delivered": bool, "error"?: str}."""
        hook, kind = self.webhook, _update_kind(update)
        if hook is None:
            self.pending.append(update)  # Telegram would keep it for getUpdates
            return {"delivered": False, "error": "no webhook is set"}
        allowed = hook["allowed_updates"]
        if (kind not in allowed) if allowed else (kind in OPT_IN_UPDATES):
            return {"delivered": False, "error": f"{kind} updates are not allowed"}
        error = await _deliver(hook, update)
        if error is None:
            self.stats["webhook_delivered"] += 1
            return {"delivered": True}
        self.stats["webhook_failed"] += 1
        self.pending.append(update)
        self.last_webhook_error = (int(time.time()), error)
        return {"delivered": False, "error": error}

    def _post_soon(self, update: dict) -> dict:
        """post_update from a control call: a task in the server's loop, or run here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.post_update(update))
        task = loop.create_task(self.post_update(update))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return {"queued": True}

    def message_update(
        self,
        text: str,
        chat_id: str | int,
        first_name: str = "Ana",
        username: str | None = None,
        language_code: str = "sl",
        reply_to_message_id: int | None = None,
    ) -> dict:
        """An update as Telegram sends it when a resident writes to the bot in private."""
        user = _resident(int(chat_id), first_name, username, language_code)
        message: dict[str, Any] = {
            "message_id": next(self._message_ids),
            "from": user,
            "chat": _chat(int(chat_id), first_name, username),
            "date": int(time.time()),
            "text": text,
        }
        if command := re.match(r"/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?", text):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": command.end()}]
        if reply_to_message_id:
            message["reply_to_message"] = {
                "message_id": int(reply_to_message_id),
                "from": self.bot_user,
                "chat": message["chat"],
                "date": message["date"],
            }
        return {"update_id": next(self._update_ids), "message": message}

    def chat_member_update(self, chat_id: str | int, status: str = "kicked") -> dict:
        """An update as Telegram sends it when a resident blocks or restarts the bot."""
        old = "member" if status != "member" else "kicked"
        return {
            "update_id": next(self._update_ids),
            "my_chat_member": {
                "chat": _chat(int(chat_id)),
                "from": _resident(int(chat_id)),
                "date": int(time.time()),
                "old_chat_member": self._bot_member(old),
                "new_chat_member": self._bot_member(status),
            },
        }

    def _bot_member(self, status: str) -> dict:
        member: dict[str, Any] = {"user": self.bot_user, "status": status}
        if status == "kicked":
            member["until_date"] = 0  # for ever
        return member


# -- HTML as Telegram parses it ----------------------------------------------------------------

_SPECIAL = re.compile(r"[<&]")
_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,7})|#[xX]([0-9a-fA-F]{1,6}));")
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_TAG_NAME = re.compile(r"[A-Za-z0-9-]*")
_CLASS = re.compile(r"""\bclass\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""")


def plain_text(text: str, parse_mode: Any) -> str:
    """What the chat shows for `text` in `parse_mode`; ValueError with Telegram's description."""
    mode = str(parse_mode or "").lower()
    if mode == "html":
        return html_plain_text(text)
    if mode in ("", "markdown", "markdownv2"):
        return text
    raise ValueError("unsupported parse_mode")


def html_plain_text(text: str) -> str:
    """The text Telegram shows for `text` in parse_mode HTML, or ValueError("can't parse
    entities: …") where Telegram would refuse it. As tdlib's parser: an `&` that starts no known
    entity stays text, a `<` always starts a tag, and only Telegram's tags are allowed."""
    shown: list[str] = []
    open_tags: list[str] = []
    position = 0
    while (special := _SPECIAL.search(text, position)) is not None:
        start = special.start()
        shown.append(text[position:start])
        if text[start] == "&":
            entity = _ENTITY.match(text, start)
            decoded = _decoded(entity) if entity else None
            shown.append(decoded if decoded is not None else "&")
            position = entity.end() if decoded is not None else start + 1
        else:
            position = _read_tag(text, start, open_tags)
    shown.append(text[position:])
    if open_tags:
        raise _entities_error(f'Can\'t find end tag corresponding to start tag "{open_tags[-1]}"')
    return "".join(shown)


def _decoded(entity: re.Match) -> str | None:
    named, decimal, hexadecimal = entity.groups()
    if named:
        return _NAMED[named]
    code = int(decimal) if decimal else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def _read_tag(text: str, start: int, open_tags: list[str]) -> int:
    """Check the tag at `start`, keep `open_tags` up to date; the position after it."""
    end = text.find(">", start)
    if text.startswith("</", start):
        if end < 0:
            raise _entities_error(f"Unclosed end tag at byte offset {_bytes(text, start)}")
        name = text[start + 2 : end].strip().lower()
        if not open_tags:
            raise _entities_error(f"Unexpected end tag at byte offset {_bytes(text, start)}")
        if name and name != open_tags[-1]:
            raise _entities_error(
                f"Unmatched end tag at byte offset {_bytes(text, start)}, "
                f'expected "</{open_tags[-1]}>", found "</{name}>"'
            )
        open_tags.pop()
        return end + 1
    name = _TAG_NAME.match(text, start + 1).group(0).lower()
    if name not in ALLOWED_TAGS:
        raise _entities_error(
            f'Unsupported start tag "{name}" at byte offset {_bytes(text, start)}'
        )
    if end < 0:
        raise _entities_error(f"Unclosed start tag at byte offset {_bytes(text, start)}")
    if name == "span" and _class(text[start + 5 : end]) != "tg-spoiler":
        raise _entities_error(
            f'Tag "span" must have class "tg-spoiler" at byte offset {_bytes(text, start)}'
        )
    open_tags.append(name)
    return end + 1


def _class(attributes: str) -> str | None:
    found = _CLASS.search(attributes)
    return next((value for value in found.groups() if value is not None), None) if found else None


def _bytes(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _entities_error(detail: str) -> ValueError:
    return ValueError(f"can't parse entities: {detail}")


# -- small helpers -----------------------------------------------------------------------------


async def _params(request: web.Request) -> dict[str, Any]:
    """Query, form, multipart and JSON parameters together; ValueError for bad JSON."""
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            body = json.loads(await request.text())
            if not isinstance(body, dict):
                raise ValueError("a JSON object is required")
            params.update(body)
        else:
            form = await request.post()
            params.update((name, value) for name, value in form.items() if isinstance(value, str))
    return params


async def _deliver(hook: dict[str, Any], update: dict) -> str | None:
    """POST one update to the webhook; None, or the error getWebhookInfo would show."""
    headers = (
        {"X-Telegram-Bot-Api-Secret-Token": hook["secret_token"]} if hook["secret_token"] else {}
    )
    timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(hook["url"], json=update, headers=headers) as response,
        ):
            if 200 <= response.status < 300:
                return None
            return f"Wrong response from the webhook: {response.status} {response.reason}"
    except TimeoutError:
        return "Read timeout expired"
    except aiohttp.ClientConnectorError:
        return "Connection refused"
    except aiohttp.ClientError as exc:
        return f"Connection failed: {exc.__class__.__name__}"


def _ok(result: Any, description: str | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": True, "result": result}
    if description:
        body["description"] = description
    return web.json_response(body)


def _error(code: int, description: str, parameters: dict | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


def _bot_id(token: str) -> int:
    prefix = token.partition(":")[0]
    return int(prefix) if prefix.isdigit() else DEFAULT_BOT_ID


def _is_chat_id(chat: str) -> bool:
    return re.fullmatch(r"-?[0-9]{1,20}", chat) is not None


def _chat(chat_id: int, first_name: str = "Ana", username: str | None = None) -> dict:
    """A chat as Telegram describes it: users have positive ids, supergroups -100…"""
    if chat_id > 0:
        chat = {"id": chat_id, "type": "private", "first_name": first_name}
        return chat | ({"username": username} if username else {})
    kind = "supergroup" if str(chat_id).startswith("-100") else "group"
    return {"id": chat_id, "type": kind, "title": "Skupina"}


def _resident(
    user_id: int, first_name: str = "Ana", username: str | None = None, language_code: str = "sl"
) -> dict:
    user = {
        "id": user_id,
        "is_bot": False,
        "first_name": first_name,
        "language_code": language_code,
    }
    return user | ({"username": username} if username else {})


def _reply_to(params: dict[str, Any]) -> int | None:
    """reply_to_message_id, or reply_parameters.message_id as PTB 21+ sends it."""
    if str(params.get("reply_to_message_id", "")).isdigit():
        return int(params["reply_to_message_id"])
    reply = params.get("reply_parameters")
    try:
        reply = json.loads(reply) if isinstance(reply, str) else reply
        return int(reply["message_id"]) if isinstance(reply, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _string_list(value: Any) -> list[str] | None:
    """allowed_updates as JSON (form-encoded by PTB), a list, or comma-separated."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
    return [str(item).strip() for item in value]


def _update_kind(update: dict) -> str:
    return next((key for key in update if key != "update_id"), "")
