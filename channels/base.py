"""Plain outcomes every channel returns; the hub maps them onto delivery rows."""

from __future__ import annotations

from dataclasses import dataclass

SENT = "sent"  # the provider accepted it
RETRY = "retry"  # transient: try again later
GONE = "gone"  # the address is dead: deactivate it, fall back to the next channel
FAILED = "failed"  # permanent for this message


@dataclass(frozen=True)
class Outcome:
    key: int  # the caller's id for the message (a delivery id)
    status: str
    provider_id: str | None = None
    error: str | None = None
    retry_after_s: float | None = None
    # The provider failed, not this address (refused connection, 421, lost connection): the
    # attempt is not counted against the resident, who must not run out of tries in an outage.
    provider_down: bool = False
