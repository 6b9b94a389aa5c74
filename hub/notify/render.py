"""Notify's template language: `((name))` placeholders and `((name??text))` optional text,
filled from a request's personalisation; an e-mail body's few markdown basics (paragraphs,
line breaks, `# headings`, `[links](https://...)`) as plain text and HTML."""

from __future__ import annotations

import html
import re

PLACEHOLDER = re.compile(r"\(\(([^()]+)\)\)")
LINK = re.compile(r"\[([^\[\]]+)\]\((https?://[^\s()]+)\)")
BARE_URL = re.compile(r"(?<![\"'>=])\bhttps?://[^\s<]+[^\s<.,;:!?)\]]")
# What Notify takes as "show the optional text" (notifications-utils' str2bool).
TRUTHY = ("yes", "y", "true", "t", "1", "include", "show")


def _key(name: str) -> str:
    """Personalisation keys match placeholders ignoring case, spaces, `_` and `-`, as Notify."""
    return re.sub(r"[\s_-]", "", name).lower()


def _name(inside: str) -> str:
    return inside.split("??", 1)[0].strip()


def placeholders(*texts: str | None) -> list[str]:
    """The placeholder names of the texts, in order of appearance, each once."""
    seen: dict[str, str] = {}
    for text in texts:
        for match in PLACEHOLDER.finditer(text or ""):
            name = _name(match.group(1))
            seen.setdefault(_key(name), name)
    return list(seen.values())


def missing(personalisation: dict, *texts: str | None) -> list[str]:
    """Placeholders the personalisation gives no value for (None counts as none)."""
    given = {_key(k): v for k, v in personalisation.items()}
    return [name for name in placeholders(*texts) if given.get(_key(name)) is None]


def fill(text: str, personalisation: dict) -> str:
    given = {_key(k): v for k, v in personalisation.items()}

    def replace(match: re.Match) -> str:
        inside = match.group(1)
        value = given.get(_key(_name(inside)))
        if value is None:
            return match.group(0)
        if "??" in inside:
            return inside.split("??", 1)[1] if str(value).strip().lower() in TRUTHY else ""
        if isinstance(value, list):
            return ", ".join(str(item) for item in value)
        return str(value)

    return PLACEHOLDER.sub(replace, text)


def one_line(text: str) -> str:
    """An e-mail subject: no line breaks, no runs of spaces."""
    return " ".join(text.split())


def email_text(body: str) -> str:
    """The plain-text part: links as `text (url)`, headings without their `#`."""
    lines = [re.sub(r"^#+\s*", "", line) for line in body.splitlines()]
    return LINK.sub(r"\1 (\2)", "\n".join(lines)).strip() + "\n"


def email_html(body: str) -> str:
    """The HTML part: every paragraph escaped, then its links and headings."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", body.strip()) if b.strip()]
    return "\n".join(_html_block(block) for block in blocks)


def _html_block(block: str) -> str:
    heading = re.match(r"^#+\s*(.+)$", block)
    if heading and "\n" not in block:
        return f"<h2>{_inline(heading.group(1))}</h2>"
    return "<p>" + "<br>\n".join(_inline(line) for line in block.splitlines()) + "</p>"


def _inline(text: str) -> str:
    parts, last = [], 0
    for match in LINK.finditer(text):
        parts.append(_autolink(html.escape(text[last : match.start()])))
        label, url = html.escape(match.group(1)), html.escape(match.group(2))
        parts.append(f'<a href="{url}">{label}</a>')
        last = match.end()
    parts.append(_autolink(html.escape(text[last:])))
    return "".join(parts)


def _autolink(escaped: str) -> str:
    return BARE_URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped)
