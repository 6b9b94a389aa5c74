"""A mixed population of residents, and an oracle that says, rule by rule and independently of
the hub's SQL, who must receive a notice to (topic=waste-collection, areas=center+planina)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from hub.clock import utcnow
from hub.models import Area, ContactPoint, Resident, Subscription, Topic
from hub.residents import ResidentRow, import_rows

TOPIC = "waste-collection"
TARGET_AREAS = ("center", "planina")
HOME_AREAS = ("center", "planina", "bitnje")
QUIET = (22 * 60, 7 * 60)
BODY = {"sl": "Jutri odvoz bioloških odpadkov.", "en": "Organic waste is collected tomorrow."}


@dataclass(frozen=True)
class Expected:
    address: str  # the address that must receive it
    locale: str
    quiet: bool  # deferred until quiet hours end
    bounced: str | None = None  # the dead address tried first, if any


def resident_rules(i: int) -> dict:
    return {
        "area": HOME_AREAS[i % 3],
        "locale": "en" if i % 4 == 0 else "sl",
        "follows_topic": i % 5 != 0,
        "quiet": i % 6 == 0,
        "phone_first": i % 7 == 0,  # sms first, e-mail second
        "opted_out": i % 11 == 0,
        "unverified": i % 13 == 0,
        "dead_first": i % 17 == 0,  # first e-mail bounces, a second one works
        "follows_center_from_away": i % 19 == 0,  # lives in bitnje, follows the topic in center
    }


def phone(i: int) -> str:
    return f"+3864{i:07d}"


def index_of(address: str) -> int:
    """The resident index an address belongs to (r12@..., r12-alt@..., +38640000012)."""
    if address.startswith("+"):
        return int(address.removeprefix("+3864"))
    return int(address.split("@")[0].removeprefix("r").split("-")[0])


def reachable_address(i: int) -> str:
    """Where resident i is reached under `preferred`: the phone first, else the e-mail that
    works."""
    r = resident_rules(i)
    if r["phone_first"]:
        return phone(i)
    return f"r{i}-alt@example.org" if r["dead_first"] else f"r{i}@example.org"


def build(session, n: int) -> dict[int, Expected]:
    """Create n residents by the rules; return the oracle: resident index -> Expected."""
    areas = dict(session.execute(select(Area.slug, Area.id)).all())
    topics = dict(session.execute(select(Topic.slug, Topic.id)).all())
    rows = []
    for i in range(n):
        rules = resident_rules(i)
        topic_ids = [topics[TOPIC]] if rules["follows_topic"] else [topics["events"]]
        row = ResidentRow(f"Prebivalec {i}", rules["locale"], areas[rules["area"]], topic_ids)
        primary = f"r{i}@bounce.example" if rules["dead_first"] else f"r{i}@example.org"
        row.addresses["email"] = primary
        if rules["phone_first"]:
            row.addresses["sms"] = phone(i)
            row.channel_order = ["sms", "email"]
        else:
            row.channel_order = ["email"]
        row.quiet = QUIET if rules["quiet"] else None
        rows.append(row)
    import_rows(session, rows)
    ids = list(session.scalars(select(Resident.id).order_by(Resident.id)))[-n:]
    now = utcnow()
    for i, resident_id in enumerate(ids):
        rules = resident_rules(i)
        if rules["dead_first"]:
            session.add(
                ContactPoint(
                    resident_id=resident_id,
                    channel="email",
                    rank=5,
                    address=f"r{i}-alt@example.org",
                    verified=True,
                )
            )
        if rules["opted_out"]:
            session.execute(
                update(ContactPoint)
                .where(ContactPoint.resident_id == resident_id)
                .values(opted_out_at=now)
            )
        if rules["unverified"]:
            session.execute(
                update(ContactPoint)
                .where(ContactPoint.resident_id == resident_id)
                .values(verified=False)
            )
        if rules["follows_center_from_away"] and rules["area"] == "bitnje":
            session.add(
                Subscription(
                    resident_id=resident_id, topic_id=topics[TOPIC], area_id=areas["center"]
                )
            )
    session.flush()
    return oracle(n)


def oracle(n: int) -> dict[int, Expected]:
    expected = {}
    for i in range(n):
        r = resident_rules(i)
        in_area = r["area"] in TARGET_AREAS and r["follows_topic"]
        from_away = r["follows_center_from_away"] and r["area"] == "bitnje"
        if not (in_area or from_away) or r["opted_out"] or r["unverified"]:
            continue
        bounced = f"r{i}@bounce.example" if r["dead_first"] and not r["phone_first"] else None
        expected[i] = Expected(reachable_address(i), r["locale"], r["quiet"], bounced=bounced)
    return expected
