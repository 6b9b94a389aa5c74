"""Both catalogues are complete: every message translated, nothing fuzzy, placeholders kept,
and Slovenian plurals in all four forms."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent / "translations"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def _catalogue(name: str):
    with (ROOT / name).open("rb") as handle:
        return read_po(handle)


def _ids(message) -> tuple[str, ...]:
    return message.id if isinstance(message.id, tuple) else (message.id,)


def _strings(message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


def test_the_template_has_every_message_in_the_code(tmp_path):
    """A stale messages.pot would let a new, untranslated message through the test below."""
    fresh = tmp_path / "messages.pot"
    subprocess.run(
        [
            sys.executable, "-m", "babel.messages.frontend", "extract",
            "--mapping-file", "babel.cfg", "--keywords", "_l", "--keywords", "lazy_gettext",
            "--no-location", "--output-file", str(fresh), ".",
        ],
        cwd=ROOT.parent, check=True, capture_output=True,
    )  # fmt: skip
    with fresh.open("rb") as handle:
        in_code = {_ids(m)[0] for m in read_po(handle) if m.id}
    in_template = {_ids(m)[0] for m in _catalogue("messages.pot") if m.id}
    assert in_code - in_template == set(), "run `make extract-messages` and translate"


@pytest.mark.parametrize("locale, plural_forms", [("sl", 4), ("en", 2)])
def test_catalogue_is_complete(locale, plural_forms):
    template = {_ids(m)[0] for m in _catalogue("messages.pot") if m.id}
    catalogue = _catalogue(f"{locale}/LC_MESSAGES/messages.po")
    assert catalogue.num_plurals == plural_forms
    messages = {_ids(m)[0]: m for m in catalogue if m.id}
    assert template - set(messages) == set(), "messages missing from the catalogue"
    for msgid in template:
        message = messages[msgid]
        assert not message.fuzzy, f"fuzzy: {msgid}"
        strings = _strings(message)
        assert all(strings), f"untranslated: {msgid}"
        if isinstance(message.id, tuple):
            assert len(strings) == plural_forms, f"wrong number of plural forms: {msgid}"
        wanted = set(PLACEHOLDER.findall(" ".join(_ids(message)))) - {"num"}
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) - {"num"} == wanted, f"placeholders: {msgid}"


def test_slovenian_plural_forms_pick_the_right_case(app):
    from flask_babel import force_locale, ngettext

    with force_locale("sl"):
        forms = [ngettext("%(num)d delivery", "%(num)d deliveries", n) for n in (1, 2, 3, 5, 101)]
    assert forms == ["1 dostava", "2 dostavi", "3 dostave", "5 dostav", "101 dostava"]
