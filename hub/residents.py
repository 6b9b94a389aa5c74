"""Residents in bulk: `hub residents import FILE.csv`. All rows are checked first; a file with
any bad row imports nothing and every bad row is reported with its line number."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO

from flask_babel import gettext as _
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from hub.clock import utcnow
from hub.contacts import InvalidAddress, normalise_email, normalise_phone, parse_quiet_hours
from hub.models import Area, ConsentRecord, ContactPoint, Resident, Subscription, Topic

REQUIRED_COLUMNS = ("name", "email", "phone", "locale", "area", "topics")
COLUMN_CHANNEL = {"email": "email", "phone": "sms"}
INSERT_CHUNK = 5000


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return _("line %(line)d: %(reason)s", line=self.line, reason=self.reason)


class ImportRejected(Exception):
    def __init__(self, errors: list[RowError]):
        super().__init__(f"{len(errors)} bad rows")
        self.errors = errors


@dataclass
class ResidentRow:
    name: str
    locale: str
    area_id: int
    topic_ids: list[int]
    addresses: dict[str, str] = field(default_factory=dict)  # channel -> normalised address
    channel_order: list[str] = field(default_factory=list)
    quiet: tuple[int, int] | None = None


class _Validator:
    """Checks one row at a time against the areas, topics and addresses the hub already has."""

    def __init__(
        self,
        session: Session,
        locales: Iterable[str],
        default_locale: str,
        *,
        preload: bool = True,
        owner_id: int | None = None,
    ):
        """`preload`: read every address in the hub at once (a file of many rows); otherwise
        ask the database per address (one record). `owner_id`: that resident's own addresses
        are not duplicates (an update)."""
        self.session, self.preload, self.owner_id = session, preload, owner_id
        self.areas = dict(session.execute(select(Area.slug, Area.id)).all())
        self.topics = dict(session.execute(select(Topic.slug, Topic.id)).all())
        self.locales = set(locales)
        self.default_locale = default_locale
        self.seen: dict[tuple[str, str], int] = {}
        if preload:
            self.seen = {
                (channel, address): 0
                for channel, address in session.execute(
                    select(ContactPoint.channel, ContactPoint.address).where(*self._others())
                )
            }

    def _others(self) -> list:
        return [] if self.owner_id is None else [ContactPoint.resident_id != self.owner_id]

    def _in_hub(self, channel: str, address: str) -> bool:
        query = select(ContactPoint.id).where(
            ContactPoint.channel == channel, ContactPoint.address == address, *self._others()
        )
        return self.session.scalar(query) is not None

    def row(self, line: int, raw: dict[str, str]) -> ResidentRow:
        get = {k: (v or "").strip() for k, v in raw.items() if k}.get
        name = get("name", "")
        if not name:
            raise InvalidAddress(_("name is empty"))
        locale = get("locale", "") or self.default_locale
        if locale not in self.locales:
            raise InvalidAddress(_("unknown locale %(locale)s", locale=locale))
        area_slug = get("area", "")
        if area_slug not in self.areas:
            raise InvalidAddress(_("unknown area %(area)s", area=area_slug))
        topic_ids = list(dict.fromkeys(self._topic(s) for s in _split(get("topics", ""))))
        row = ResidentRow(name, locale, self.areas[area_slug], topic_ids)
        if get("email", ""):
            row.addresses["email"] = self._address(line, "email", normalise_email, get("email"))
        if get("phone", ""):
            row.addresses["sms"] = self._address(line, "sms", normalise_phone, get("phone"))
        if not row.addresses:
            raise InvalidAddress(_("neither an e-mail address nor a phone number"))
        row.channel_order = self._order(get("channels", ""), row.addresses)
        row.quiet = parse_quiet_hours(get("quiet_hours", ""))
        return row

    def _topic(self, slug: str) -> int:
        if slug not in self.topics:
            raise InvalidAddress(_("unknown topic %(topic)s", topic=slug))
        return self.topics[slug]

    def _address(self, line: int, channel: str, normalise: Callable[[str], str], raw: str) -> str:
        try:
            address = normalise(raw)
        except InvalidAddress as exc:
            if channel == "email":
                reason = _("malformed e-mail address %(value)s (%(why)s)", value=raw, why=exc)
            else:
                reason = _("malformed phone number %(value)s (%(why)s)", value=raw, why=exc)
            raise InvalidAddress(reason) from None
        first = self.seen.get((channel, address))
        if first is None and not self.preload and self._in_hub(channel, address):
            first = 0
        if first is not None:
            where = _("line %(line)d", line=first) if first else _("a resident already in the hub")
            raise InvalidAddress(
                _("duplicate %(value)s, already used by %(where)s", value=address, where=where)
            )
        self.seen[(channel, address)] = line
        return address

    @staticmethod
    def _order(raw: str, addresses: dict[str, str]) -> list[str]:
        wanted = [c for c in _split(raw)] or list(addresses)
        unknown = [c for c in wanted if c not in addresses]
        if unknown:
            raise InvalidAddress(
                _("channel %(channel)s has no address in this row", channel=unknown[0])
            )
        return wanted + [c for c in addresses if c not in wanted]


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(";") if part.strip()]


def read_csv(
    session: Session, stream: IO[str], locales: Iterable[str], default_locale: str
) -> list[ResidentRow]:
    """Parse and check every row; raise ImportRejected listing each bad one."""
    reader = csv.DictReader(stream)
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ImportRejected(
            [RowError(1, _("missing columns: %(columns)s", columns=", ".join(missing)))]
        )
    validator = _Validator(session, locales, default_locale)
    rows, errors = [], []
    for raw in reader:
        try:
            rows.append(validator.row(reader.line_num, raw))
        except InvalidAddress as exc:
            errors.append(RowError(reader.line_num, str(exc)))
    if errors:
        raise ImportRejected(errors)
    return rows


def check_records(
    session: Session,
    records: list[dict[str, str]],
    locales: Iterable[str],
    default_locale: str,
    *,
    owner_id: int | None = None,
) -> list[ResidentRow]:
    """The CSV rules for records that come as dicts (the API): every record is checked, and
    ImportRejected lists each bad one by its 1-based position ("line")."""
    validator = _Validator(
        session, locales, default_locale, preload=len(records) > 1, owner_id=owner_id
    )
    rows, errors = [], []
    for line, raw in enumerate(records, start=1):
        try:
            rows.append(validator.row(line, raw))
        except InvalidAddress as exc:
            errors.append(RowError(line, str(exc)))
    if errors:
        raise ImportRejected(errors)
    return rows


def insert_residents(session: Session, rows: list[ResidentRow]) -> list[int]:
    """Insert checked rows; returns the new residents' ids in the rows' order."""
    ids: list[int] = []
    for start in range(0, len(rows), INSERT_CHUNK):
        ids += _insert_chunk(session, rows[start : start + INSERT_CHUNK])
    return ids


def import_rows(
    session: Session, rows: list[ResidentRow], progress: Callable[[int], None] | None = None
) -> int:
    """Insert residents with contact points, subscriptions and consent, in chunks."""
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        _insert_chunk(session, chunk)
        if progress:
            progress(len(chunk))
    return len(rows)


def _insert_chunk(session: Session, chunk: list[ResidentRow]) -> list[int]:
    now = utcnow()
    # Core inserts on the tables, not the ORM's bulk path: that one splits the rows into
    # small batches whenever the set of NULL columns changes (quiet hours or not), and
    # re-assembling their RETURNING rows grows with the square of the chunk.
    residents = Resident.__table__
    ids = session.scalars(
        insert(residents).returning(residents.c.id, sort_by_parameter_order=True),
        [
            {
                "name": r.name,
                "locale": r.locale,
                "area_id": r.area_id,
                "quiet_start": r.quiet[0] if r.quiet else None,
                "quiet_end": r.quiet[1] if r.quiet else None,
                "created_at": now,
            }
            for r in chunk
        ],
    ).all()
    contacts, subscriptions, consents = [], [], []
    for resident_id, row in zip(ids, chunk, strict=True):
        for rank, channel in enumerate(row.channel_order, start=1):
            contacts.append(
                {
                    "resident_id": resident_id,
                    "channel": channel,
                    "address": row.addresses[channel],
                    "rank": rank,
                    "verified": True,  # the city vouches for the records it imports
                    "active": True,
                    "failure_count": 0,
                    "created_at": now,
                }
            )
        for topic_id in row.topic_ids:
            subscriptions.append(
                {"resident_id": resident_id, "topic_id": topic_id, "area_id": row.area_id}
            )
        consents.append(
            {
                "resident_id": resident_id,
                "action": "granted",
                "scope": "notices",
                "source": "import",
                "created_at": now,
            }
        )
    if contacts:  # a resident can start with none (the portal adds them)
        session.execute(insert(ContactPoint.__table__), contacts)
    if subscriptions:
        session.execute(insert(Subscription.__table__), subscriptions)
    session.execute(insert(ConsentRecord.__table__), consents)
    return list(ids)
