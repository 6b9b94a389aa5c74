"""SMS length as the carrier bills it, and transliteration that turns Slovenian notices back into
cheap GSM-7. The expected numbers were counted by hand, not copied from the code."""

from __future__ import annotations

import time

import pytest

from channels.gsm import SmsLength, is_gsm7, sms_length, transliterate

GSM7, UCS2 = "GSM-7", "UCS-2"

# (original, transliterated, (encoding, units, segments) before, the same after)
NOTICES = [
    pytest.param(
        "Jutri, 3. 12., bo zaradi del na vodovodu v KS Zlato polje med 8. in 14. uro prekinjena "
        "dobava pitne vode.",
        "Jutri, 3. 12., bo zaradi del na vodovodu v KS Zlato polje med 8. in 14. uro prekinjena "
        "dobava pitne vode.",
        (GSM7, 105, 1),
        (GSM7, 105, 1),
        id="water-outage-already-gsm",
    ),
    pytest.param(
        "Zaradi obnove Čopove ulice bo od ponedeljka, 14. 10., do petka, 18. 10., cesta med "
        "Prešernovim trgom in Slovensko cesto zaprta za ves promet. Obvoz je urejen po "
        "Gosposvetski cesti.",
        "Zaradi obnove Copove ulice bo od ponedeljka, 14. 10., do petka, 18. 10., cesta med "
        "Presernovim trgom in Slovensko cesto zaprta za ves promet. Obvoz je urejen po "
        "Gosposvetski cesti.",
        (UCS2, 180, 3),
        (GSM7, 180, 2),
        id="road-closure",
    ),
    pytest.param(
        "Odvoz bioloških odpadkov bo v četrtek.",
        "Odvoz bioloskih odpadkov bo v cetrtek.",
        (UCS2, 38, 1),
        (GSM7, 38, 1),
        id="waste-short",
    ),
    pytest.param(
        "Zaradi praznika bo odvoz bioloških odpadkov namesto v sredo v četrtek, 2. 1. Posode "
        "postavite na prevzemno mesto do 6. ure zjutraj.",
        "Zaradi praznika bo odvoz bioloskih odpadkov namesto v sredo v cetrtek, 2. 1. Posode "
        "postavite na prevzemno mesto do 6. ure zjutraj.",
        (UCS2, 131, 2),
        (GSM7, 131, 1),
        id="waste-holiday",
    ),
    pytest.param(
        "Poplavna nevarnost ob Savi: umaknite vozila iz garaž.",
        "Poplavna nevarnost ob Savi: umaknite vozila iz garaz.",
        (UCS2, 53, 1),
        (GSM7, 53, 1),
        id="flood-warning",
    ),
    pytest.param(
        "🚨 Poplavna nevarnost ob Savi: umaknite vozila iz garaž.",
        "🚨 Poplavna nevarnost ob Savi: umaknite vozila iz garaz.",
        (UCS2, 56, 1),
        (UCS2, 56, 1),
        id="flood-warning-with-emoji-stays-ucs2",
    ),
    pytest.param(
        "Od 1. 1. 2025 znaša dnevna parkirnina na Kongresnem trgu 12 € (z DDV).",
        "Od 1. 1. 2025 znasa dnevna parkirnina na Kongresnem trgu 12 € (z DDV).",
        (UCS2, 70, 1),
        (GSM7, 71, 1),
        id="parking-fee-euro-counts-two",
    ),
    pytest.param(
        "Vabljeni na javno predstavitev projekta „Zelena Ljubljana“ – v sredo, 15. 5., ob 17. uri "
        "v veliki sejni dvorani Mestne hiše. Sledi pogovor z županom o prometu, parkiranju in "
        "še čem…",
        'Vabljeni na javno predstavitev projekta "Zelena Ljubljana" - v sredo, 15. 5., ob 17. uri '
        "v veliki sejni dvorani Mestne hise. Sledi pogovor z zupanom o prometu, parkiranju in "
        "se cem...",
        (UCS2, 181, 3),
        (GSM7, 183, 2),
        id="public-meeting-quotes-dash-ellipsis",
    ),
    pytest.param(
        "Spoštovani g. Đorđević, vaša vloga za dovolilnico je odobrena.",
        "Spostovani g. Djordjevic, vasa vloga za dovolilnico je odobrena.",
        (UCS2, 62, 1),
        (GSM7, 64, 1),
        id="permit-approved-dj",
    ),
    pytest.param(
        "Tomorrow, 3 Dec, tap water won’t run in Zlato polje from 8:00 to 14:00 due to repairs "
        "on the main.",
        "Tomorrow, 3 Dec, tap water won't run in Zlato polje from 8:00 to 14:00 due to repairs "
        "on the main.",
        (UCS2, 98, 2),
        (GSM7, 98, 1),
        id="english-curly-apostrophe",
    ),
]


@pytest.mark.parametrize(("text", "plain", "before", "after"), NOTICES)
def test_municipal_notices(
    text: str, plain: str, before: tuple[str, int, int], after: tuple[str, int, int]
) -> None:
    assert sms_length(text) == SmsLength(*before)
    assert transliterate(text) == plain
    assert sms_length(plain) == SmsLength(*after)


@pytest.mark.parametrize(("text", "plain", "before", "after"), NOTICES)
def test_transliteration_is_idempotent(
    text: str, plain: str, before: tuple[str, int, int], after: tuple[str, int, int]
) -> None:
    assert transliterate(plain) == plain


def test_empty_text_is_no_message() -> None:
    assert sms_length("") == SmsLength(GSM7, 0, 0)
    assert is_gsm7("")
    assert transliterate("") == ""


@pytest.mark.parametrize(
    ("count", "segments"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_segment_boundaries(count: int, segments: int) -> None:
    assert sms_length("a" * count) == SmsLength(GSM7, count, segments)


@pytest.mark.parametrize(
    ("count", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_segment_boundaries(count: int, segments: int) -> None:
    assert sms_length("č" * count) == SmsLength(UCS2, count, segments)


def test_every_extension_character_counts_two_septets() -> None:
    extension = "^{}\\[~]|€\f"
    assert len(extension) == 10
    assert sms_length(extension) == SmsLength(GSM7, 20, 1)
    for ch in extension:
        assert sms_length(ch) == SmsLength(GSM7, 2, 1), repr(ch)


def test_euro_signs_fill_a_single_sms_at_80() -> None:
    assert sms_length("€" * 80) == SmsLength(GSM7, 160, 1)
    assert sms_length("€" * 81) == SmsLength(GSM7, 162, 2)


def test_escape_pair_is_not_split_across_parts() -> None:
    # 152 septets, then "€" would take septets 153-154: it moves whole to part 2, wasting one
    # septet of part 1. Part 2 then holds "€" + 151 "a" = 153, and the last "a" needs part 3,
    # although 306 septets would divide into exactly 2 parts.
    assert sms_length("a" * 152 + "€" + "a" * 152) == SmsLength(GSM7, 306, 3)


def test_escape_pair_ending_exactly_on_the_boundary_fits() -> None:
    # 151 + 2 = 153 fills part 1 exactly; 153 "a" fill part 2.
    assert sms_length("a" * 151 + "€" + "a" * 153) == SmsLength(GSM7, 306, 2)


def test_many_euros_waste_a_septet_per_part() -> None:
    # 153 is odd, so a part holds 76 euros (152 septets); 81 euros need 2 parts, 153 need 3.
    assert sms_length("€" * 152) == SmsLength(GSM7, 304, 2)
    assert sms_length("€" * 153) == SmsLength(GSM7, 306, 3)


def test_emoji_outside_bmp_counts_two_code_units() -> None:
    assert sms_length("😀") == SmsLength(UCS2, 2, 1)
    assert sms_length("😀" * 35) == SmsLength(UCS2, 70, 1)
    # A part of 67 units holds 33 emoji (66 units); 36 emoji need 2 parts.
    assert sms_length("😀" * 36) == SmsLength(UCS2, 72, 2)


def test_bmp_symbol_counts_one_code_unit() -> None:
    assert sms_length("☂") == SmsLength(UCS2, 1, 1)


def test_surrogate_pair_is_not_split_across_parts() -> None:
    # 66 units, then the emoji would take units 67-68: it moves to part 2, which holds the emoji
    # and 65 "a"; the last "a" needs part 3, although 134 units would divide into 2 parts.
    assert sms_length("a" * 66 + "😀" + "a" * 66) == SmsLength(UCS2, 134, 3)


def test_surrogate_pair_ending_exactly_on_the_boundary_fits() -> None:
    assert sms_length("a" * 65 + "😀" + "a" * 67) == SmsLength(UCS2, 134, 2)


def test_one_caron_turns_a_single_sms_into_three() -> None:
    text = "a" * 149 + "č"
    assert sms_length("a" * 150) == SmsLength(GSM7, 150, 1)
    assert sms_length(text) == SmsLength(UCS2, 150, 3)
    assert sms_length(transliterate(text)) == SmsLength(GSM7, 150, 1)


def test_slovenian_letters_and_typography() -> None:
    text = "Čšž Đđ ćĆ „narekovaji“ – pomišljaj…"
    assert transliterate(text) == 'Csz Djdj cC "narekovaji" - pomisljaj...'


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("»citat« ‚enojni‘ ’", "\"citat\" 'enojni' '"),
        ("a—b", "a-b"),
        ("3.\u00a012.", "3. 12."),
        ("12\u202f€", "12 €"),
    ],
)
def test_other_quotes_dashes_and_spaces(text: str, plain: str) -> None:
    assert transliterate(text) == plain


def test_keeps_letters_that_gsm7_has() -> None:
    text = "é è ù ì ò à ä ö ü ñ å æ ø ß É Ä Ö Ü Ñ Å Æ Ø Ç"
    assert transliterate(text) == text
    assert sms_length(text) == SmsLength(GSM7, len(text), 1)


def test_strips_other_diacritics() -> None:
    assert transliterate("Ángel Ñúñez, Ïlse Øster, çà, Łódź, Ærø, Dvořák") == (
        "Angel Ñuñez, Ilse Øster, cà, Lodz, Ærø, Dvorak"
    )


def test_decomposed_input_is_transliterated_too() -> None:
    # Text pasted from some systems carries "č" as "c" + combining caron.
    assert transliterate("c\u030cesen") == "cesen"
    assert transliterate("e\u0301") == "é"


def test_leaves_what_has_no_gsm7_form() -> None:
    text = "Вода 🚰 ni pitna. 水"
    plain = transliterate(text)
    assert plain == text
    assert not is_gsm7(plain)
    assert sms_length(plain).encoding == UCS2


def test_emoji_notice_stays_ucs2_after_transliteration() -> None:
    plain = transliterate("Čistilna akcija v soboto 🌳")
    assert plain == "Cistilna akcija v soboto 🌳"
    # 25 characters of one unit each and the tree as a surrogate pair.
    assert sms_length(plain) == SmsLength(UCS2, 27, 1)


def test_is_gsm7() -> None:
    alphabet = (
        "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
        "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    )
    assert len(alphabet) == 127
    assert is_gsm7(alphabet)
    assert sms_length(alphabet) == SmsLength(GSM7, 127, 1)
    assert is_gsm7("^{}\\[~]|€\f")
    # "\u2126" is the ohm sign, not the Greek capital omega of the table.
    for ch in ("č", "ç", "`", "\t", "\x1b", "’", "\u00a0", "😀", "α", "\u2126"):
        assert not is_gsm7(ch), repr(ch)


def test_greek_capitals_from_the_table_are_gsm7() -> None:
    assert sms_length("ΔΦΓΛΩΠΨΣΘΞ") == SmsLength(GSM7, 10, 1)
    assert transliterate("10 \u2126") == "10 Ω"


def test_long_text_is_fast() -> None:
    # A guard against quadratic counting, with a generous limit for a busy test machine.
    texts = ["Prekinitev dobave vode € " * 400, "Odvoz odpadkov v četrtek 😀 " * 400]
    start = time.perf_counter()
    for _ in range(20):
        for text in texts:
            sms_length(text)
            transliterate(text)
    assert time.perf_counter() - start < 2.0
