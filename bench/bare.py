"""The ceiling: aiosmtplib alone, C connections each reused for many messages, no database, no
queue. Run in a spawned process of its own, like the hub worker it is compared with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiosmtplib

from channels.email import OutgoingEmail, build_message


def send_all(
    mails: list[OutgoingEmail], from_header: str, port: int, concurrency: int
) -> dict[str, float]:
    """Send every message; returns wall seconds and how many the server refused."""
    started = time.perf_counter()
    refused = asyncio.run(_send_all(mails, from_header, port, concurrency))
    return {"seconds": time.perf_counter() - started, "refused": refused}


async def _send_all(
    mails: list[OutgoingEmail], from_header: str, port: int, concurrency: int
) -> int:
    pending = iter(mails)  # shared by the lanes: each takes the next message when it is free
    lanes = [_lane(pending, from_header, port) for _ in range(concurrency)]
    return sum(await asyncio.gather(*lanes))


async def _lane(pending: Iterator[OutgoingEmail], from_header: str, port: int) -> int:
    """One connection sending messages one after the other, as long as there are any."""
    refused = 0
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    try:
        for mail in pending:
            # Built here, not in advance: turning a notice into bytes is part of sending it,
            # and the hub does it per message too.
            message = build_message(mail, from_header)
            errors, _ = await smtp.sendmail(mail.envelope_from, [mail.to], message)
            refused += len(errors)
    finally:
        await smtp.quit()
    return refused
