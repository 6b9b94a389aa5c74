"""Normalising addresses: E.164 phone numbers (phonenumbers), e-mail (email-validator)."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

DEFAULT_REGION = "SI"


class InvalidAddress(ValueError):
    pass


def normalise_email(raw: str) -> str:
    try:
        # No SMTPUTF8 local parts: few relays accept them, and one would fail every send.
        result = validate_email(raw.strip(), check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from None
    # The domain part is case-insensitive (and IDNA-encoded here, as SMTP needs it); the local
    # part is kept as the resident wrote it.
    return result.ascii_email or result.normalized


def normalise_phone(raw: str, region: str = DEFAULT_REGION) -> str:
    try:
        number = phonenumbers.parse(raw.strip(), region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidAddress(str(exc)) from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidAddress("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def parse_quiet_hours(raw: str) -> tuple[int, int] | None:
    """'22:00-07:00' -> (1320, 420) minutes after midnight; '' -> None."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        start, end = (_minutes(part) for part in raw.split("-", 1))
    except ValueError:
        raise InvalidAddress(f"quiet hours must look like 22:00-07:00, not {raw!r}") from None
    if start == end:
        raise InvalidAddress("quiet hours must not start and end at the same time")
    return start, end


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.strip().split(":")
    value = int(hours) * 60 + int(minutes)
    if not (0 <= int(hours) < 24 and 0 <= int(minutes) < 60):
        raise ValueError(hhmm)
    return value
