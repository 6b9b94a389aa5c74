"""Inbound e-mail: residents' replies, bounce reports and auto-replies, parsed for the hub.

The hub links a reply to its notice in three ways, most robust first: the `reply+TOKEN@` address
it put in Reply-To (the hub verifies the token, this module only extracts it), the Message-ID
`<n{notice}.d{delivery}@…>` echoed in In-Reply-To and References (a client that replied to From
instead), and nothing at all (a new message). Bounce reports go to the per-message envelope
sender `bounce+{delivery}@…`, so the recipient alone names the delivery; the Message-ID in the
report's copy of the original headers is the fall-back when a relay rewrote the address.

Inbound mail is hostile input: wrong charsets, broken base64, headers the modern email policy
chokes on, HTML-only bodies, nesting without end. Nothing here raises on bad input (only empty
bytes are a caller's error): every header read and every part falls back to something usable,
and a part that cannot be read at all is skipped. Parsing uses email.policy.default for its
RFC 2047 and address handling, and compat32 when that fails.

What a support agent reads is `text`: the new part of a reply, without the quoted notice,
attribution lines ("On … wrote:", "Dne … je … napisal:"), Outlook header blocks and signatures.
`full_text` keeps the whole body for when the heuristics cut too much.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.policy
import hashlib
import html
import quopri
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr

MAX_TEXT = 100_000  # characters of full_text (and so of text)
MAX_HTML = 1_000_000  # characters of HTML converted; markup is most of it
MAX_DEPTH = 20  # multipart nesting followed
MAX_PARTS = 500  # MIME parts looked at
MAX_DIAGNOSTIC = 1_000


@dataclass(frozen=True)
class Bounce:
    delivery_id: int | None  # from the bounce+<id>@ recipient, or the original Message-ID
    status: str  # RFC 3464 Status, e.g. "5.1.1"
    action: str  # "failed", "delayed", "delivered", …
    permanent: bool  # status starts with "5."
    recipient: str | None  # Final-Recipient, else Original-Recipient address
    diagnostic: str | None  # Diagnostic-Code text, without its "smtp;" type


@dataclass(frozen=True)
class InboundEmail:
    message_id: str  # without angle brackets; sha256-based when the header is missing
    sender: str  # From address, domain lower-cased
    sender_name: str
    subject: str
    reply_tokens: list[str]  # envelope recipients first, then To, Cc, Delivered-To
    in_reply_to: list[str]
    references: list[str]
    text: str  # the new part only: no quoted history, no signature
    full_text: str  # the whole plain-text body (HTML converted when there is no plain text)
    auto: bool  # an auto-reply to ignore; never set together with bounce
    bounce: Bounce | None
    attachments: list[tuple[str, str, int]]  # (filename, content type, size): listed, not kept


# -- public helpers ----------------------------------------------------------------------------

_BRACKETED_ID = re.compile(r"<([^<>]*)>")
_DELIVERY_ID = re.compile(r"^n\d{1,18}\.d(\d{1,18})@", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9._-]+")
_BOUNCE_LOCAL = re.compile(r"bounce\+(\d{1,18})", re.IGNORECASE)


def message_ids(header_value: str) -> list[str]:
    """The ids in a Message-ID, In-Reply-To or References value, in order, without duplicates.

    Ids are taken from angle brackets; a value without any (some clients) is split on white
    space and commas, keeping what looks like an id."""
    value = header_value or ""
    found = ["".join(m.split()) for m in _BRACKETED_ID.findall(value)]
    if not found:
        found = [t.strip("<>") for t in re.split(r"[\s,]+", value) if "@" in t]
    return list(dict.fromkeys(i for i in found if i))


def delivery_id_from_message_id(message_id: str) -> int | None:
    """The delivery in a hub Message-ID: "n12.d345@x" (or "<n12.d345@x>") -> 345."""
    match = _DELIVERY_ID.match((message_id or "").strip().strip("<>"))
    return int(match.group(1)) if match else None


def reply_token(address: str) -> str | None:
    """The TOKEN of "reply+TOKEN@domain" (also inside "Name <…>"), exactly as written."""
    local = _local_part(address)
    if local[:6].lower() != "reply+":
        return None
    token = local[6:]
    return token if _TOKEN.fullmatch(token) else None


def _bounce_delivery_id(address: str) -> int | None:
    match = _BOUNCE_LOCAL.fullmatch(_local_part(address))
    return int(match.group(1)) if match else None


def _local_part(address: str) -> str:
    address = (address or "").strip()
    if "<" in address:
        address = parseaddr(address)[1]
    local, at, _domain = address.strip("<>").rpartition("@")
    return local if at else ""


# -- the entry point --------------------------------------------------------------------------


def parse_inbound(
    raw: bytes, mail_from: str = "", rcpt_tos: list[str] | tuple = ()
) -> InboundEmail:
    """Parse one received message; mail_from and rcpt_tos are its SMTP envelope ("<>" for the
    null sender, as aiosmtpd reports it). Raises ValueError for empty bytes only."""
    if not raw:
        raise ValueError("empty message")
    msg = _parse(raw)
    rcpt_tos = [str(r) for r in (rcpt_tos or ())]
    subject = " ".join(_header(msg, "Subject").split())
    sender_name, sender = _sender(msg, mail_from)
    body = _Body()
    _collect(msg, body, 0)
    full_text = body.text()
    bounce = _bounce(msg, rcpt_tos, full_text, sender, mail_from)
    own_ids = message_ids(_header(msg, "Message-ID"))
    return InboundEmail(
        message_id=own_ids[0] if own_ids else _hashed_id(raw),
        sender=sender,
        sender_name=sender_name,
        subject=subject,
        reply_tokens=_reply_tokens(msg, rcpt_tos),
        in_reply_to=message_ids(_header(msg, "In-Reply-To")),
        references=message_ids(_header(msg, "References")),
        text=new_text(full_text),
        full_text=full_text,
        auto=bounce is None and _is_auto(msg, subject, mail_from),
        bounce=bounce,
        attachments=body.attachments,
    )


def _parse(raw: bytes) -> Message:
    """The message tree: the modern policy, else compat32, else the headers alone."""
    for policy in (email.policy.default, email.policy.compat32):
        try:
            return email.message_from_bytes(raw, policy=policy)
        except Exception:
            continue
    try:  # only deep nesting gets here (RecursionError): keep the headers, drop the body
        return HeaderParser().parsestr(raw.decode("ascii", "surrogateescape"), headersonly=True)
    except Exception:
        return Message()


def _hashed_id(raw: bytes) -> str:
    return f"{hashlib.sha256(raw).hexdigest()}@sha256.invalid"


# -- headers ----------------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str:
    """A header's decoded value, "" when missing; never raises on a malformed header."""
    if isinstance(msg.policy, email.policy.EmailPolicy):
        try:
            value = msg.get(name)
            return "" if value is None else _fix_8bit(str(value))
        except Exception:
            pass
    return _decode_raw_header(_raw_header(msg, name))


def _raw_headers(msg: Message, name: str) -> list[str]:
    """Every value of a header as received (no RFC 2047 decoding), for address scanning."""
    try:
        return [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]
    except Exception:
        return []


def _raw_header(msg: Message, name: str) -> str:
    values = _raw_headers(msg, name)
    return values[0] if values else ""


def _decode_raw_header(value: str) -> str:
    try:
        return _fix_8bit(str(make_header(decode_header(value))))
    except Exception:
        return _fix_8bit(value)


def _fix_8bit(value: str) -> str:
    """Raw 8-bit header bytes reach us as surrogate escapes: decode them as text."""
    if not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None)


def _sender(msg: Message, mail_from: str) -> tuple[str, str]:
    """(display name, address) of From; the envelope sender when From is missing or empty."""
    name, address = "", ""
    try:
        addresses = msg["From"].addresses if msg["From"] is not None else ()
        if addresses and addresses[0].addr_spec:
            name, address = addresses[0].display_name, addresses[0].addr_spec
    except Exception:
        pass
    if not address:
        name, address = parseaddr(_raw_header(msg, "From"))
        name = _decode_raw_header(name)
    if not address and mail_from.strip() not in ("", "<>"):
        address = mail_from.strip().strip("<>")
    return _fix_8bit(name).strip(), _normalise_address(_fix_8bit(address))


def _normalise_address(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}" if at else address.strip()


def _reply_tokens(msg: Message, rcpt_tos: list[str]) -> list[str]:
    found = [reply_token(a) for a in _recipients(msg, rcpt_tos)]
    return list(dict.fromkeys(t for t in found if t))


def _recipients(msg: Message, rcpt_tos: list[str]) -> Iterator[str]:
    """Envelope recipients, then the addresses in To, Cc, Delivered-To and X-Original-To."""
    yield from rcpt_tos
    for name in ("To", "Cc", "Delivered-To", "X-Original-To"):
        values = _raw_headers(msg, name)
        try:
            yield from (address for _name, address in getaddresses(values))
        except Exception:
            yield from values


# -- auto-replies -----------------------------------------------------------------------------

_AUTO_SUBJECT = re.compile(r"automatic reply|samodejni odgovor", re.IGNORECASE)


def _is_auto(msg: Message, subject: str, mail_from: str) -> bool:
    """An auto-reply (RFC 3834 and the usual vendor headers) or another null-sender message."""
    submitted = _header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if submitted and submitted != "no":
        return True
    for name in ("X-Autoreply", "X-Autorespond"):
        if _header(msg, name).strip().lower() not in ("", "no", "false", "0"):
            return True
    if _header(msg, "Precedence").strip().lower() in ("bulk", "junk", "auto_reply"):
        return True
    suppress = {t.strip().lower() for t in _header(msg, "X-Auto-Response-Suppress").split(",")}
    if suppress & {"all", "oof"} and _AUTO_SUBJECT.search(subject):
        return True
    if _content_type(msg) == "multipart/report":  # read receipts and other non-bounce reports
        return True
    return _null_sender(msg, mail_from)


def _null_sender(msg: Message, mail_from: str) -> bool:
    if mail_from.strip():
        return mail_from.strip() == "<>"
    return _raw_header(msg, "Return-Path").strip() == "<>"  # delivered to a mailbox first


# -- the body ---------------------------------------------------------------------------------


class _Body:
    """Text pieces and attachments found walking the MIME tree, and the parts looked at."""

    def __init__(self, parts: int = 0) -> None:
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[tuple[str, str, int]] = []
        self.parts = parts
        self.chars = 0

    def add_text(self, subtype: str, text: str) -> None:
        (self.plain if subtype == "plain" else self.html).append(text)
        self.chars += len(text)

    def text(self) -> str:
        """The plain text, or the HTML converted when there is none, capped."""
        if self.plain:
            text = "\n".join(self.plain)
        else:
            text = "\n".join(html_to_text(h[:MAX_HTML]) for h in self.html)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "")
        return text.strip()[:MAX_TEXT].rstrip()


def _collect(part: Message, body: _Body, depth: int) -> None:
    """Walk the tree: one branch of each alternative, the human part of a report, no further
    than the limits; a part that cannot be read is skipped."""
    body.parts += 1
    if depth > MAX_DEPTH or body.parts > MAX_PARTS:
        return
    try:
        ctype = _content_type(part)
        if ctype.startswith("message/") or not part.is_multipart():
            _collect_leaf(part, ctype, body)
            return
        children = _children(part)
    except Exception:
        return
    if ctype == "multipart/alternative":
        _collect_alternative(children, body, depth)
    elif ctype == "multipart/report":
        for child in children[:1]:  # the rest is machine-readable: see _bounce
            _collect(child, body, depth + 1)
    else:
        for child in children:
            _collect(child, body, depth + 1)


def _collect_alternative(children: list[Message], body: _Body, depth: int) -> None:
    """The plain-text branch if there is one, else the first with HTML; files from all."""
    branches = []
    for child in children:
        branch = _Body(parts=body.parts)
        _collect(child, branch, depth + 1)
        body.parts = branch.parts
        branches.append(branch)
    chosen = next((b for b in branches if b.plain), None)
    chosen = chosen or next((b for b in branches if b.html), None)
    for branch in branches:
        if branch is chosen:
            body.plain += branch.plain
            body.html += branch.html
            body.chars += branch.chars
        body.attachments += branch.attachments


def _collect_leaf(part: Message, ctype: str, body: _Body) -> None:
    filename = _filename(part)
    disposition = _disposition(part)
    if ctype in ("text/plain", "text/html") and not filename and disposition != "attachment":
        if body.chars < MAX_TEXT * 10:
            body.add_text(ctype[5:], _part_text(part, ctype))
        return
    body.attachments.append((filename, ctype, _part_size(part)))


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "application/octet-stream"


def _filename(part: Message) -> str:
    try:
        return _fix_8bit(str(part.get_filename() or "")).strip()
    except Exception:
        return ""


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _part_bytes(part: Message) -> bytes:
    """The decoded content (base64, quoted-printable) as well as the broken input allows."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    try:
        payload = part.get_payload()
        if isinstance(payload, str):
            return payload.encode("utf-8", "surrogateescape")
    except Exception:
        pass
    return b""


def _part_size(part: Message) -> int:
    if _content_type(part).startswith("message/") or part.is_multipart():
        try:
            return sum(len(p.as_bytes()) for p in part.get_payload() if isinstance(p, Message))
        except Exception:
            return 0
    return len(_part_bytes(part))


def _part_text(part: Message, ctype: str) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    text = decode_bytes(_part_bytes(part), charset)
    if ctype == "text/plain" and _param(part, "format") == "flowed":
        text = unflow(text, delsp=_param(part, "delsp") == "yes")
    return text


def _param(part: Message, name: str) -> str:
    try:
        return str(part.get_param(name) or "").strip().lower()
    except Exception:
        return ""


_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")
_UNSAFE_CODECS = {"unicode_escape", "raw_unicode_escape"}


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Text in the declared charset; else UTF-8; else UTF-8 with replacement characters when
    the bytes look like damaged UTF-8; else Latin-1, which decodes anything."""
    if charset:
        try:
            if codecs.lookup(charset).name not in _UNSAFE_CODECS:
                return data.decode(charset)
        except Exception:  # unknown or wrong charset (LookupError, UnicodeError, …)
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if _UTF8_SEQUENCE.search(data):
        return data.decode("utf-8", "replace")
    return data.decode("latin-1")


def unflow(text: str, delsp: bool = False) -> str:
    """Join the soft line breaks of RFC 3676 format=flowed (a line ending in a space)."""
    out: list[tuple[int, str]] = []  # (quote depth, text)
    joining = False
    for line in text.replace("\r\n", "\n").split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content[1:] if content.startswith(" ") else content  # space-stuffing
        if joining and out and out[-1][0] == depth:
            out[-1] = (depth, out[-1][1] + content)
        else:
            out.append((depth, content))
        joining = content.endswith(" ") and content != "-- "
        if joining and delsp:
            out[-1] = (depth, out[-1][1][:-1])
    return "\n".join(">" * d + (" " if d and c else "") + c for d, c in out)


# -- HTML -------------------------------------------------------------------------------------

_BLOCK_TAGS = {
    "p", "div", "tr", "li", "ul", "ol", "table", "hr", "pre", "h1", "h2", "h3", "h4", "h5", "h6",
    "section", "article", "header", "footer", "dt", "dd", "address",
}  # fmt: skip
_HIDDEN_TAGS = {"script", "style", "head", "title", "template", "noscript"}
_RAW_TEXT_TAGS = {"script", "style"}  # their content is not markup: skip to the end tag
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)[^<>]*>")
_OTHER_MARKUP = re.compile(r"<[!?/][^<>]*>")  # doctype, processing instruction, stray </ >


def html_to_text(markup: str) -> str:
    """Plain text of an HTML body: tags dropped, entities unescaped, a line per block or <br>,
    and <blockquote> lines prefixed with "> " like a plain-text quote, so they strip the same
    way. A linear scan of its own: html.parser is quadratic on unclosed tags (fixed in 3.13)."""
    out = _HtmlText()
    pos, end = 0, len(markup)
    while pos < end:
        lt = markup.find("<", pos)
        if lt < 0:
            out.data(markup[pos:])
            break
        out.data(markup[pos:lt])
        if markup.startswith("<!--", lt):
            close = markup.find("-->", lt + 4)
            pos = end if close < 0 else close + 3
            continue
        tag = _TAG.match(markup, lt)
        if tag is None:
            other = _OTHER_MARKUP.match(markup, lt)
            if other is None:
                out.data("<")
            pos = other.end() if other else lt + 1
            continue
        name, pos = tag.group(2).lower(), tag.end()
        if tag.group(1):
            out.end(name)
            continue
        out.start(name)
        if name in _RAW_TEXT_TAGS:
            close_tag = re.compile(rf"</{name}\s*>", re.IGNORECASE).search(markup, pos)
            pos = close_tag.end() if close_tag else end
            out.end(name)
    return re.sub(r"\n{3,}", "\n\n", out.text()).strip()


class _HtmlText:
    """The text being built by html_to_text: lines with their blockquote depth."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self.current: list[str] = []
        self.depth = 0  # blockquote depth of the current line
        self.quote = 0
        self.hidden = 0
        self.pre = 0

    def start(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag == "body":
            self.hidden = 0  # an unclosed <head> must not hide the body
        elif tag == "br":
            self.newline(force=True)
        elif tag == "blockquote":
            self.newline()
            self.quote += 1
        elif tag in _BLOCK_TAGS:
            self.newline()
            self.pre += tag == "pre"

    def end(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "blockquote":
            self.newline()
            self.quote = max(0, self.quote - 1)
        elif tag in _BLOCK_TAGS:
            self.newline()
            self.pre = max(0, self.pre - (tag == "pre"))

    def data(self, raw: str) -> None:
        if self.hidden or not raw:
            return
        text = html.unescape(raw).replace("\xa0", " ")
        if not self.pre:
            self.add(re.sub(r"\s+", " ", text))
            return
        first, *rest = text.replace("\r\n", "\n").split("\n")
        self.add(first)
        for line in rest:
            self.newline(force=True)
            self.add(line)

    def add(self, text: str) -> None:
        if not self.current:
            self.depth = self.quote
        self.current.append(text)

    def newline(self, force: bool = False) -> None:
        line = "".join(self.current).strip()
        if line or force:
            self.lines.append((self.depth if line else self.quote, line))
        self.current = []

    def text(self) -> str:
        self.newline()
        return "\n".join(("> " * depth + line).rstrip() for depth, line in self.lines)


# -- the new part of a reply ------------------------------------------------------------------

_QUOTED = re.compile(r"^[ \t]*>")
_ATTRIBUTION_EN = re.compile(  # and the neighbours': "On <date> <name> wrote:"
    r"^(?:on|am|le|il|el|op)\s.*\b(?:wrote|schrieb|a\s+écrit|ha\s+scritto|escribió|schreef)"
    r"\s*:\s*$",
    re.IGNORECASE,
)
_ATTRIBUTION_SL_START = re.compile(r"^(?:dne|v)\b|^\d", re.IGNORECASE)  # Dne <date> je <name>
_ATTRIBUTION_SL_END = re.compile(
    r"\b(?:napisal(?:\(a\)|a|/-?a)?|napisao|zapisal(?:\(a\)|a)?)\s*:\s*$", re.IGNORECASE
)
_JE = re.compile(r"\bje\b", re.IGNORECASE)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(?:original message|izvirno sporočilo|izvorno sporočilo|prvotno sporočilo"
    r"|ursprüngliche nachricht|message d'origine|messaggio originale)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_HEADER_FROM = re.compile(r"^[*\s]*(?:from|od|von|de|da)\s*:\*?\s*\S", re.IGNORECASE)
_HEADER_DATE = re.compile(
    r"^[*\s]*(?:sent|date|poslano|datum|gesendet|envoyé|inviato)\s*:", re.IGNORECASE
)
_MOBILE_SIGNATURE = re.compile(
    r"^(?:sent from (?:my )?\S.*|sent with \S.*|get outlook for \S.*|pridobite outlook za \S.*"
    r"|poslano (?:iz|z|s) \S.*|von meinem \S.* gesendet|envoyé de mon \S.*|inviato da \S.*)$",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"^[_\-=*]{5,}$")


def new_text(full_text: str) -> str:
    """What the resident wrote this time: full_text without quoted history and signature.

    Cut everything from the first mark of unquoted history or signature (a "-- " line,
    "-----Original Message-----", an Outlook "From: / Sent:" block, an attribution line not
    followed by quoted lines); then drop the quoted lines and their attribution lines, keeping
    answers written between or below them; then a trailing "Sent from my iPhone"."""
    lines = full_text.split("\n")
    lines = lines[: _history_start(lines)]
    kept = [line for i, line in enumerate(lines) if not _is_quote(lines, i)]
    while kept and (not kept[-1].strip() or _is_trailer(kept[-1].strip())):
        kept.pop()
    return re.sub(r"\n\s*\n(\s*\n)+", "\n\n", "\n".join(kept)).strip()


def _history_start(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _QUOTED.match(line) or not stripped:
            continue
        if stripped == "--" or _ORIGINAL_MESSAGE.match(stripped):
            return i
        if _HEADER_FROM.match(stripped) and any(
            _HEADER_DATE.match(later) for later in lines[i + 1 : i + 5]
        ):
            return i
        span = _attribution_span(lines, i)
        if span and not _followed_by_quote(lines, i + span):
            return i
    return len(lines)


def _is_quote(lines: list[str], i: int) -> bool:
    """A quoted line, or a line of an attribution that quoted lines follow."""
    if _QUOTED.match(lines[i]):
        return True
    for start in range(max(0, i - 2), i + 1):
        span = _attribution_span(lines, start)
        if span and start + span > i and _followed_by_quote(lines, start + span):
            return True
    return False


def _attribution_span(lines: list[str], i: int) -> int:
    """How many lines (1-3) an attribution starting at line i takes; 0 if none does.
    Clients wrap a long "On <date> <name> <address> wrote:" line."""
    parts: list[str] = []
    for line in lines[i : i + 3]:
        if not line.strip() or _QUOTED.match(line):
            break
        parts.append(line.strip())
        candidate = " ".join(parts)
        if len(candidate) > 400:
            break
        if _is_attribution(candidate):
            return len(parts)
    return 0


def _is_attribution(line: str) -> bool:
    """An attribution line, "On … wrote:" or "Dne … je … napisal(a):", with a digit (of the
    date) in it, so that a resident's "On Monday my neighbour wrote:" is not taken for one.
    Separate expressions keep the matching linear."""
    if not line.endswith(":") or not any(c.isdigit() for c in line):
        return False
    if _ATTRIBUTION_EN.match(line):
        return True
    end = _ATTRIBUTION_SL_END.search(line)
    return bool(end and _ATTRIBUTION_SL_START.match(line) and _JE.search(line, 0, end.start()))


def _followed_by_quote(lines: list[str], i: int) -> bool:
    following = next((line for line in lines[i:] if line.strip()), "")
    return bool(_QUOTED.match(following))


def _is_trailer(line: str) -> bool:
    return _SEPARATOR.match(line) is not None or (
        len(line) <= 80 and _MOBILE_SIGNATURE.match(line) is not None
    )


# -- bounces ----------------------------------------------------------------------------------

_STATUS = re.compile(r"(?<![\w.])([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")  # not in an IP address
_SMTP_CODE = re.compile(r"(?<![\w.])([45])\d\d(?!\.?\d)")
_TEMPORARY = re.compile(
    r"temporar|delayed|will (?:be )?retr|still trying|not yet been delivered|začasn|odložen",
    re.IGNORECASE,
)
_MESSAGE_ID_LINE = re.compile(r"^message-id:\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status|failure)|returned mail|failure notice|mail delivery|nedostav",
    re.IGNORECASE,
)
_QMAIL_RECIPIENT = re.compile(r"^<([^<>\s]+@[^<>\s]+)>:", re.MULTILINE)
_TEXT_RECIPIENT = re.compile(
    r"(?:final|original)-recipient:\s*(?:rfc822;)?\s*<?([^<>\s;]+@[^<>\s;]+)", re.IGNORECASE
)


def _bounce(
    msg: Message, rcpt_tos: list[str], full_text: str, sender: str, mail_from: str
) -> Bounce | None:
    """A delivery-status report (RFC 3464), or a best-effort reading of a plain-text bounce
    from a mailer daemon to one of the bounce+<id>@ addresses."""
    recipient_id = next(
        (i for i in map(_bounce_delivery_id, _recipients(msg, rcpt_tos)) if i is not None), None
    )
    report = _find_report(msg)
    if report is not None:
        return _dsn_bounce(report, recipient_id, msg)
    if recipient_id is None:
        return None
    from_daemon = _local_part(sender).lower() in ("mailer-daemon", "postmaster")
    looks_like = _null_sender(msg, mail_from) and _BOUNCE_SUBJECT.search(_header(msg, "Subject"))
    if from_daemon or looks_like:
        return _text_bounce(full_text, recipient_id)
    return None


def _find_report(msg: Message) -> Message | None:
    """The multipart/report of delivery-status type, not looking inside attached messages."""
    for part in _walk(msg, 0):
        if _content_type(part) == "multipart/report":
            kind = _param(part, "report-type")
            if kind in ("delivery-status", "global-delivery-status") or _status_part(part):
                return part
    return None


def _walk(part: Message, depth: int) -> Iterator[Message]:
    yield part
    if depth >= MAX_DEPTH or _content_type(part).startswith("message/"):
        return
    try:
        children = part.get_payload() if part.is_multipart() else []
    except Exception:
        return
    for child in children[:MAX_PARTS]:
        if isinstance(child, Message):
            yield from _walk(child, depth + 1)


def _status_part(report: Message) -> Message | None:
    for part in _children(report):
        if _content_type(part) in ("message/delivery-status", "message/global-delivery-status"):
            return part
    return None


def _children(part: Message) -> list[Message]:
    try:
        payload = part.get_payload() if part.is_multipart() else []
        return [p for p in payload if isinstance(p, Message)]
    except Exception:
        return []


def _dsn_bounce(report: Message, recipient_id: int | None, msg: Message) -> Bounce:
    status_part = _status_part(report)
    fields = _recipient_fields(_dsn_blocks(status_part) if status_part is not None else [])
    diagnostic = _field_value(fields.get("diagnostic-code", "")) or None
    status = _status(fields.get("status", ""), diagnostic or "", fields.get("action", ""))
    action = fields.get("action", "").strip().lower() or _action(status)
    recipient = _field_value(fields.get("final-recipient", "")) or _field_value(
        fields.get("original-recipient", "")
    )
    delivery_id = recipient_id
    if delivery_id is None:
        delivery_id = _original_delivery_id(report, msg)
    return Bounce(
        delivery_id=delivery_id,
        status=status,
        action=action,
        permanent=status.startswith("5."),
        recipient=recipient.strip("<>") or None,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC] if diagnostic else None,
    )


def _dsn_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a message/delivery-status part: the per-message block first, then
    one per recipient. The parser splits them already, unless the part was base64-encoded."""
    try:
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    except Exception:
        encoding = ""
    if encoding in ("base64", "quoted-printable"):
        try:
            body = part.as_string().split("\n\n", 1)[1]
        except Exception:
            body = ""
        return _text_blocks(decode_bytes(_decode_transfer(body, encoding), None))
    blocks = []
    for block in _children(part):
        try:
            items = block.raw_items()
            blocks.append({k.lower(): " ".join(str(v).split()) for k, v in items})
        except Exception:
            continue
    if not any(blocks) and isinstance(part.get_payload(), str):
        return _text_blocks(part.get_payload())
    return blocks


def _decode_transfer(body: str, encoding: str) -> bytes:
    data = body.encode("ascii", "ignore")
    try:
        return base64.b64decode(data) if encoding == "base64" else quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return b""


def _text_blocks(text: str) -> list[dict[str, str]]:
    """Blocks of "Name: value" fields separated by blank lines; folded lines continue."""
    blocks: list[dict[str, str]] = [{}]
    last = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            blocks.append({})
        elif line[0] in " \t" and last:
            blocks[-1][last] += " " + line.strip()
        elif ":" in line:
            name, _, value = line.partition(":")
            last = name.strip().lower()
            blocks[-1][last] = value.strip()
    return [b for b in blocks if b]


def _recipient_fields(blocks: list[dict[str, str]]) -> dict[str, str]:
    """The per-recipient block that matters most: failed, then delayed, then any."""
    recipients = [b for b in blocks if "action" in b or "status" in b]
    for wanted in ("failed", "delayed"):
        for block in recipients:
            if block.get("action", "").strip().lower() == wanted:
                return block
    return recipients[0] if recipients else {}


def _field_value(value: str) -> str:
    """A DSN field without its type: "rfc822; a@b" -> "a@b", "smtp; 550 …" -> "550 …"."""
    kind, semicolon, rest = value.partition(";")
    value = rest if semicolon and re.fullmatch(r"\s*[A-Za-z0-9-]+\s*", kind) else value
    return _fix_8bit(" ".join(value.split()))


def _status(status: str, diagnostic: str, action: str) -> str:
    for text in (status, diagnostic):
        match = _STATUS.search(text)
        if match:
            return match.group(1)
    code = _SMTP_CODE.search(diagnostic)
    if code:
        return f"{code.group(1)}.0.0"
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(action.strip().lower(), "")


def _action(status: str) -> str:
    return {"5": "failed", "4": "delayed", "2": "delivered"}.get(status[:1], "")


def _original_delivery_id(report: Message, msg: Message) -> int | None:
    """The delivery in the Message-ID of the original message the report carries (as
    text/rfc822-headers or message/rfc822), else in the report's own References."""
    for part in _children(report):
        for message_id in _original_message_ids(part):
            delivery_id = delivery_id_from_message_id(message_id)
            if delivery_id is not None:
                return delivery_id
    for name in ("In-Reply-To", "References"):
        for message_id in message_ids(_header(msg, name)):
            delivery_id = delivery_id_from_message_id(message_id)
            if delivery_id is not None:
                return delivery_id
    return None


def _original_message_ids(part: Message) -> Iterable[str]:
    ctype = _content_type(part)
    if ctype.startswith("message/") and "delivery-status" not in ctype:
        for original in _children(part):
            yield from message_ids(_header(original, "Message-ID"))
    text = decode_bytes(_part_bytes(part), None) if not part.is_multipart() else ""
    for value in _MESSAGE_ID_LINE.findall(text):
        yield from message_ids(value)


def _text_bounce(text: str, recipient_id: int) -> Bounce:
    """A bounce without a delivery-status part (qmail and friends): best effort."""
    status_match = _STATUS.search(text)
    code_match = _SMTP_CODE.search(text)
    if status_match:
        status = status_match.group(1)
    elif _TEMPORARY.search(text) or (code_match and code_match.group(1) == "4"):
        status = "4.0.0"
    else:
        status = "5.0.0"
    recipient = _QMAIL_RECIPIENT.search(text) or _TEXT_RECIPIENT.search(text)
    return Bounce(
        delivery_id=recipient_id,
        status=status,
        action=_action(status) or "failed",
        permanent=status.startswith("5."),
        recipient=recipient.group(1) if recipient else None,
        diagnostic=_diagnostic_line(text, status_match or code_match),
    )


def _diagnostic_line(text: str, match: re.Match[str] | None) -> str | None:
    if match is None:
        return None
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    line = text[start : end if end >= 0 else len(text)].strip()
    return line[:MAX_DIAGNOSTIC] or None
