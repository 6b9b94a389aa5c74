"""One resident at a time (the REST API): read, create, update, delete. Records are checked by
the same rules as the CSV import (hub.residents), so a resident is valid whichever way it came.

A record's `topics` are the topics the resident follows in their own area; subscriptions in
other areas (chosen in the portal) are kept as they are by an update."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from flask_babel import gettext as _
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session, selectinload

from hub.clock import utcnow
from hub.models import Area, ContactPoint, Resident, Subscription, Topic
from hub.residents import ResidentRow, check_records, insert_residents
from hub.staff import audit

# The record's fields that the CSV import knows; the API's `email` and `phone` are its columns.
ADDRESS_CHANNELS = {"email": "email", "phone": "sms"}


class ResidentNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ResidentRecord:
    id: int
    name: str
    locale: str
    area: str | None
    topics: list[str]
    email: str | None
    phone: str | None
    channels: list[str]  # the resident's active channels, preferred first
    quiet_hours: str | None
    created_at: datetime


def records(session: Session, residents: list[Resident]) -> list[ResidentRecord]:
    """Records of already loaded residents, with two queries for all of them."""
    ids = [r.id for r in residents]
    areas = dict(session.execute(select(Area.id, Area.slug)).all())
    topics: dict[int, list[str]] = {i: [] for i in ids}
    for resident_id, slug in session.execute(
        select(Subscription.resident_id, Topic.slug)
        .join(Topic, Topic.id == Subscription.topic_id)
        .join(Resident, Resident.id == Subscription.resident_id)
        .where(Subscription.resident_id.in_(ids), Subscription.area_id == Resident.area_id)
        .order_by(Topic.slug)
    ):
        topics[resident_id].append(slug)
    return [_record(r, areas.get(r.area_id), topics[r.id]) for r in residents]


def _record(resident: Resident, area: str | None, topics: list[str]) -> ResidentRecord:
    active = [cp for cp in resident.contact_points if cp.active]
    first = {}
    for cp in active:
        first.setdefault(cp.channel, cp.address)
    return ResidentRecord(
        id=resident.id,
        name=resident.name,
        locale=resident.locale,
        area=area,
        topics=topics,
        email=first.get("email"),
        phone=first.get("sms"),
        channels=list(dict.fromkeys(cp.channel for cp in active)),
        quiet_hours=_quiet(resident.quiet_start, resident.quiet_end),
        created_at=resident.created_at,
    )


def _quiet(start: int | None, end: int | None) -> str | None:
    if start is None or end is None:
        return None
    return f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"


def load(session: Session, resident_ids: Iterable[int]) -> list[Resident]:
    return list(
        session.scalars(
            select(Resident)
            .where(Resident.id.in_(list(resident_ids)))
            .options(selectinload(Resident.contact_points))
            .order_by(Resident.id)
        )
    )


def get_record(session: Session, resident_id: int) -> ResidentRecord:
    found = load(session, [resident_id])
    if not found:
        raise ResidentNotFound(_("no resident %(id)d", id=resident_id))
    return records(session, found)[0]


def create_residents(
    session: Session,
    raw: list[dict[str, str]],
    *,
    locales: Iterable[str],
    default_locale: str,
    actor: str,
) -> list[int]:
    """All or nothing: raises hub.residents.ImportRejected listing every bad record."""
    rows = check_records(session, raw, locales, default_locale)
    ids = insert_residents(session, rows)
    audit(session, actor, "resident.create", f"residents:{len(ids)}", ids=ids[:100])
    return ids


def update_resident(
    session: Session,
    resident_id: int,
    changes: dict[str, str],
    *,
    locales: Iterable[str],
    default_locale: str,
    actor: str,
) -> None:
    """Change the given fields (an empty `email` or `phone` removes it); the record as a whole
    is checked as if imported, the resident's own addresses not counting as duplicates."""
    current = get_record(session, resident_id)
    merged = {**_as_raw(current), **changes}
    if "channels" not in changes:  # a removed address leaves the order by itself
        kept = {c for field, c in ADDRESS_CHANNELS.items() if merged.get(field)}
        merged["channels"] = ";".join(c for c in merged["channels"].split(";") if c in kept)
    [row] = check_records(session, [merged], locales, default_locale, owner_id=resident_id)
    resident = session.get(Resident, resident_id)
    old_area = resident.area_id
    resident.name, resident.locale, resident.area_id = row.name, row.locale, row.area_id
    resident.quiet_start, resident.quiet_end = row.quiet or (None, None)
    _update_addresses(session, resident, row)
    _update_subscriptions(session, resident_id, old_area, row)
    audit(session, actor, "resident.update", f"resident:{resident_id}", fields=sorted(changes))


def _as_raw(record: ResidentRecord) -> dict[str, str]:
    return {
        "name": record.name,
        "locale": record.locale,
        "area": record.area or "",
        "topics": ";".join(record.topics),
        "email": record.email or "",
        "phone": record.phone or "",
        "channels": ";".join(c for c in record.channels if c in ADDRESS_CHANNELS.values()),
        "quiet_hours": record.quiet_hours or "",
    }


def _update_addresses(session: Session, resident: Resident, row: ResidentRow) -> None:
    """Change e-mail and phone in place (their delivery history stays theirs); a removed one
    is deactivated; ranks follow the record's channel order, other channels after."""
    now = utcnow()
    by_channel = {cp.channel: cp for cp in reversed(resident.contact_points)}
    for channel in ADDRESS_CHANNELS.values():
        cp, address = by_channel.get(channel), row.addresses.get(channel)
        if address is None:
            if cp is not None:
                cp.active, cp.deactivated_reason = False, "removed by the city"
        elif cp is None:
            cp = ContactPoint(channel=channel, address=address, verified=True, created_at=now)
            resident.contact_points.append(cp)
            by_channel[channel] = cp
        elif cp.address != address or not cp.active:
            cp.address, cp.active, cp.verified = address, True, True
            cp.failure_count, cp.opted_out_at, cp.deactivated_reason = 0, None, None
    ordered = [by_channel[c] for c in row.channel_order]
    ordered += [cp for cp in resident.contact_points if cp not in ordered]
    for rank, cp in enumerate(ordered, start=1):
        cp.rank = rank
    session.flush()


def _update_subscriptions(
    session: Session, resident_id: int, old_area: int | None, row: ResidentRow
) -> None:
    session.execute(
        delete(Subscription).where(
            Subscription.resident_id == resident_id,
            Subscription.area_id.in_({old_area, row.area_id} - {None}),
        )
    )
    if row.topic_ids:
        session.execute(
            insert(Subscription),
            [
                {"resident_id": resident_id, "topic_id": t, "area_id": row.area_id}
                for t in row.topic_ids
            ],
        )


def delete_resident(session: Session, resident_id: int, *, actor: str) -> None:
    """Erase a resident with their addresses, subscriptions and deliveries; their
    conversations stay, without the link to them."""
    # The database's ON DELETE rules do the rest, in one statement.
    deleted = session.execute(delete(Resident).where(Resident.id == resident_id)).rowcount
    if not deleted:
        raise ResidentNotFound(_("no resident %(id)d", id=resident_id))
    audit(session, actor, "resident.delete", f"resident:{resident_id}")
