"""Keywords a resident can send on any channel: the whole message, in Slovenian or English,
whatever its case and diacritics ("Pomoč", "POMOC", "stop!" all count)."""

from __future__ import annotations

import unicodedata

STOP, START, HELP = "stop", "start", "help"
KEYWORDS = {
    STOP: frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "odjava"}),
    START: frozenset({"start", "unstop", "yes", "prijava"}),
    HELP: frozenset({"help", "info", "pomoc"}),
}
_LOOKUP = {word: action for action, words in KEYWORDS.items() for word in words}


def keyword(text: str) -> str | None:
    """STOP, START or HELP when the whole message is one of their words, else None.
    Telegram's commands (/stop, /help@SomeBot) count too."""
    word = _fold(text).strip(" \t\r\n.!?,;:")
    if word.startswith("/"):
        word = word[1:].split("@", 1)[0]
    return _LOOKUP.get(word)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))
