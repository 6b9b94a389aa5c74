"""Plain outcomes every channel returns, and the loop that drives a request/response channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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
    # The provider failed, not this address (refused connection, 421, lost connection, a
    # throttle): the attempt is not counted against the resident, who must not run out of
    # tries in an outage.
    provider_down: bool = False
    # The provider moved the address (Telegram: a group became a supergroup); sent there.
    new_address: str | None = None


# commit(provider ids by key) -> the keys whose rows this job still owns (and were marked sent)
Commit = Callable[[dict[int, str]], set[int]]
Report = Callable[[Outcome], None]

COMMIT_EVERY_S = 0.05  # accepted messages wait at most this long to be recorded as sent
COMMIT_EVERY_N = 200


async def send_each(
    messages: AsyncIterator[Any],
    send_one: Callable[[Any], Awaitable[Outcome]],
    concurrency: int,
    commit: Commit,
    report: Report,
) -> None:
    """Send every message through `send_one` on `concurrency` lanes; each lane takes the next
    message as soon as its last one is answered.

    Unlike SMTP, an HTTP provider keeps a message the moment it answers, and there is no step
    to hold back until the database agrees. Accepted messages are recorded in groups (one
    commit per COMMIT_EVERY_N or COMMIT_EVERY_S); a worker killed between the provider's answer
    and that commit sends those few again when its rows are swept: at least once, never lost.
    Everything but a plain success goes to `report`."""
    lock = asyncio.Lock()
    accepted: dict[int, str] = {}
    last_commit = time.monotonic()

    def flush() -> None:
        nonlocal last_commit
        if accepted:
            commit(dict(accepted))
            accepted.clear()
        last_commit = time.monotonic()

    async def next_message():
        async with lock:
            return await anext(messages, None)

    async def lane() -> None:
        while (message := await next_message()) is not None:
            result = await send_one(message)
            if result.status == SENT:
                accepted[result.key] = result.provider_id or ""
            if result.status != SENT or result.error or result.new_address:
                report(result)
            if len(accepted) >= COMMIT_EVERY_N or time.monotonic() - last_commit > COMMIT_EVERY_S:
                flush()

    try:
        await asyncio.gather(*(lane() for _ in range(max(1, concurrency))))
    finally:
        flush()
