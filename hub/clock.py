"""The hub's clock: naive UTC everywhere, and a test can move it (quiet hours, retries)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_offset = timedelta(0)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None) + _offset


def advance_to(moment: datetime) -> None:
    """Make utcnow() read `moment` now and run on from there (tests only)."""
    global _offset
    _offset = moment - (datetime.now(UTC).replace(tzinfo=None))


def reset() -> None:
    global _offset
    _offset = timedelta(0)
