"""After (and while) a notice goes out: deliveries over time, failures with their reasons,
the replies it received, and a CSV export of its deliveries (audited: it is personal data)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.models import Delivery, DeliveryStatus, Message, MessageDirection
from hub.runtime import Runtime
from hub.staff import audit

FAILED = (DeliveryStatus.FAILED, DeliveryStatus.UNDELIVERED, DeliveryStatus.GONE)
CSV_COLUMNS = (
    "delivery",
    "resident",
    "channel",
    "locale",
    "status",
    "attempts",
    "sent_at",
    "error",
)


@dataclass(frozen=True)
class TimeBucket:
    start: datetime  # naive UTC
    count: int


def delivery_timeline(session: Session, broadcast_id: int, buckets: int = 30) -> list[TimeBucket]:
    """Deliveries handed to a provider, in `buckets` equal slices from the first to the last."""
    second = _second(session, Delivery.sent_at)
    per_second = session.execute(
        select(second, func.count())
        .where(Delivery.broadcast_id == broadcast_id, Delivery.sent_at.is_not(None))
        .group_by(second)
    ).all()
    if not per_second:
        return []
    seconds = sorted((datetime.fromisoformat(str(s)[:19]), n) for s, n in per_second)
    first, last = seconds[0][0], seconds[-1][0]
    width = max(timedelta(seconds=1), (last - first + timedelta(seconds=1)) / buckets)
    counts = [0] * buckets
    for moment, count in seconds:
        counts[min(buckets - 1, int((moment - first) / width))] += count
    return [TimeBucket(first + i * width, n) for i, n in enumerate(counts)]


def _second(session: Session, column):
    """The column truncated to the second, as text, on SQLite and PostgreSQL alike."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.date_trunc("second", column), "YYYY-MM-DD HH24:MI:SS")
    return func.strftime("%Y-%m-%d %H:%M:%S", column)


@dataclass(frozen=True)
class FailureReason:
    channel: str
    status: str
    reason: str
    count: int


def failure_reasons(session: Session, broadcast_id: int, limit: int = 20) -> list[FailureReason]:
    """Failed, undelivered and dead-address deliveries by reason, most common first."""
    rows = session.execute(
        select(Delivery.channel, Delivery.status, Delivery.error, func.count())
        .where(Delivery.broadcast_id == broadcast_id, Delivery.status.in_(FAILED))
        .group_by(Delivery.channel, Delivery.status, Delivery.error)
        .order_by(func.count().desc())
        .limit(limit)
    ).all()
    return [FailureReason(ch, status, error or "", n) for ch, status, error, n in rows]


def replies(session: Session, broadcast_id: int, limit: int = 50) -> tuple[int, list[Message]]:
    """How many residents' messages answer this notice, and the newest of them."""
    answers = (Message.broadcast_id == broadcast_id, Message.direction == MessageDirection.IN)
    total = session.scalar(select(func.count()).where(*answers))
    newest = session.scalars(
        select(Message).where(*answers).order_by(Message.id.desc()).limit(limit)
    ).all()
    return total, list(newest)


def export_deliveries(rt: Runtime, broadcast_id: int, *, actor: str) -> Iterator[str]:
    """Audit the export now, then yield the CSV a few thousand rows at a time. Addresses are
    left out on purpose: the resident id finds them for whoever may see them."""
    with rt.session() as session:
        audit(session, actor, "broadcast.export", f"broadcast:{broadcast_id}")
    return _csv_lines(rt, broadcast_id)


def _csv_lines(rt: Runtime, broadcast_id: int) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    with rt.session() as session:
        rows = session.execute(
            select(
                Delivery.id,
                Delivery.resident_id,
                Delivery.channel,
                Delivery.locale,
                Delivery.status,
                Delivery.attempts,
                Delivery.sent_at,
                Delivery.error,
            )
            .where(Delivery.broadcast_id == broadcast_id)
            .order_by(Delivery.id)
            .execution_options(yield_per=2000)
        )
        for row in rows:
            sent = row.sent_at.isoformat(timespec="seconds") + "Z" if row.sent_at else ""
            writer.writerow([*row[:6], sent, _cell(row.error or "")])
            if buffer.tell() > 64_000:
                yield _drain(buffer)
    yield _drain(buffer)


def _cell(text: str) -> str:
    """A provider's error text must not run as a formula when the CSV opens in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
