"""How long an SMS really is, and how to make Slovenian text fit the cheap alphabet.

An SMS carries 140 bytes. In the GSM-7 default alphabet (3GPP TS 23.038) a character is a 7-bit
septet, so 160 fit; ^ { } \\ [ ~ ] | € and form feed come from the extension table and take two
septets each (an escape plus the character). Any character outside that alphabet, even one, forces
the whole message into UCS-2 (UTF-16), two bytes per code unit: 70 fit, and an emoji outside the
BMP takes two code units. The alphabet has no č, š or ž, so a single caron in an otherwise plain
notice cuts the room from 160 to 70 characters.

Longer texts are split into concatenated parts, each losing 6 bytes to the header that glues them
back together: 153 septets or 67 code units per part. A part never ends in the middle of an
escape pair or a surrogate pair; that character moves to the next part, so the count is found by
filling the parts one character at a time, not by dividing.

Carriers bill every part. A 150-character notice with one "č" is three UCS-2 parts;
transliterated, it is one GSM-7 part. Sent to a whole town, that is a third of the bill, which is
why transliterate() exists and why sms_length() must agree exactly with what the provider charges.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

GSM7 = "GSM-7"
UCS2 = "UCS-2"

# The 3GPP TS 23.038 default alphabet in table order; 0x1B (the escape to the extension table)
# is not a character and is left out, so this holds 127 characters.
_GSM7_BASIC_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION_TABLE = "\f^{}\\[~]|€"

GSM7_BASIC: frozenset[str] = frozenset(_GSM7_BASIC_TABLE)
GSM7_EXTENSION: frozenset[str] = frozenset(_GSM7_EXTENSION_TABLE)
_GSM7_ALL: frozenset[str] = GSM7_BASIC | GSM7_EXTENSION

_GSM7_SINGLE, _GSM7_PART = 160, 153
_UCS2_SINGLE, _UCS2_PART = 70, 67

# Replacements decided by hand: letters NFKD cannot take apart (đ, ł) and punctuation that word
# processors and phones put in instead of the plain ASCII one.
_EXPLICIT: dict[str, str] = {
    "č": "c",
    "ć": "c",
    "š": "s",
    "ž": "z",
    "đ": "dj",
    "Č": "C",
    "Ć": "C",
    "Š": "S",
    "Ž": "Z",
    "Đ": "Dj",
    "ł": "l",
    "Ł": "L",
    "„": '"',
    "“": '"',
    "”": '"',
    "»": '"',
    "«": '"',
    "‚": "'",
    "‘": "'",
    "’": "'",
    "›": "'",
    "‹": "'",
    "‐": "-",
    "‑": "-",
    "‒": "-",
    "–": "-",
    "—": "-",
    "−": "-",
    "…": "...",
    "\u00a0": " ",  # no-break space
    "\u2009": " ",  # thin space
    "\u202f": " ",  # narrow no-break space
}

# Latin-1 Supplement, Latin Extended-A and -B, Latin Extended Additional: folded once at import.
_LATIN_BLOCKS = ((0x00C0, 0x0250), (0x1E00, 0x1F00))


@dataclass(frozen=True)
class SmsLength:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets for GSM-7 (extension chars count 2), UTF-16 code units for UCS-2
    segments: int  # 0 for empty text


def is_gsm7(text: str) -> bool:
    """True if every character is in the GSM-7 default alphabet or its extension table."""
    return _GSM7_ALL.issuperset(text)


def sms_length(text: str) -> SmsLength:
    """The encoding, size and number of billed parts of text, as the carrier will count them."""
    if is_gsm7(text):
        return _gsm7_length(text)
    return _ucs2_length(text)


def transliterate(text: str) -> str:
    """Text rewritten into GSM-7 where it can be; characters with no GSM-7 form are left as is."""
    text = unicodedata.normalize("NFC", text).translate(_TABLE)
    if is_gsm7(text):
        return text
    return "".join(ch if ch in _GSM7_ALL else _fold(ch) or ch for ch in text)


def _gsm7_length(text: str) -> SmsLength:
    doubles = sum(map(text.count, _GSM7_EXTENSION_TABLE))
    units = len(text) + doubles
    if doubles == 0 or units <= _GSM7_SINGLE:
        return SmsLength(GSM7, units, _plain_segments(units, _GSM7_SINGLE, _GSM7_PART))
    costs = (2 if ch in GSM7_EXTENSION else 1 for ch in text)
    return SmsLength(GSM7, units, _packed_segments(costs, _GSM7_PART))


def _ucs2_length(text: str) -> SmsLength:
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    if units == len(text) or units <= _UCS2_SINGLE:
        return SmsLength(UCS2, units, _plain_segments(units, _UCS2_SINGLE, _UCS2_PART))
    costs = (2 if ord(ch) > 0xFFFF else 1 for ch in text)
    return SmsLength(UCS2, units, _packed_segments(costs, _UCS2_PART))


def _plain_segments(units: int, single: int, part: int) -> int:
    """Parts when no 2-unit character can straddle a boundary, so plain division is exact."""
    if units <= single:
        return 1 if units else 0
    return -(-units // part)


def _packed_segments(costs: Iterable[int], part: int) -> int:
    """Fill parts of `part` units one character at a time; a 2-unit character is never split."""
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return segments


@lru_cache(maxsize=2048)
def _fold(ch: str) -> str | None:
    """A letter without its diacritics (NFKD, combining marks dropped), if that is all GSM-7."""
    if ch in _GSM7_ALL or not unicodedata.category(ch).startswith("L"):
        return None
    decomposed = unicodedata.normalize("NFKD", ch)
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    if folded and folded != ch and is_gsm7(folded):
        return folded
    return None


def _build_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for start, stop in _LATIN_BLOCKS:
        for code in range(start, stop):
            folded = _fold(chr(code))
            if folded is not None:
                table[code] = folded
    table.update((ord(ch), repl) for ch, repl in _EXPLICIT.items())
    return table


_TABLE = _build_table()
_fold.cache_clear()
