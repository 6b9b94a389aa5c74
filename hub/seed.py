"""`hub seed kranj`: Kranj's local communities and a starter set of topics; demo data."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.models import Area, ContactPoint, Resident, Role, StaffUser, Topic
from hub.residents import ResidentRow, import_rows
from hub.staff import create_staff_user, set_password

# The 26 local communities (krajevne skupnosti) of the City Municipality of Kranj.
KRANJ_LOCAL_COMMUNITIES = (
    ("besnica", "Besnica"),
    ("bitnje", "Bitnje"),
    ("bratov-smuk", "Bratov Smuk"),
    ("britof", "Britof"),
    ("center", "Center"),
    ("circe", "Čirče"),
    ("golnik", "Golnik"),
    ("gorenja-sava", "Gorenja Sava"),
    ("gorice", "Goriče"),
    ("huje", "Huje"),
    ("ilovka", "Ilovka"),
    ("jost", "Jošt"),
    ("kokrica", "Kokrica"),
    ("mavcice", "Mavčiče"),
    ("orehek-drulovka", "Orehek - Drulovka"),
    ("planina", "Planina"),
    ("podblica", "Podblica"),
    ("predoslje", "Predoslje"),
    ("primskovo", "Primskovo"),
    ("strazisce", "Stražišče"),
    ("struzevo", "Struževo"),
    ("tenetise", "Tenetiše"),
    ("trstenik", "Trstenik"),
    ("vodovodni-stolp", "Vodovodni stolp"),
    ("zlato-polje", "Zlato polje"),
    ("zabnica", "Žabnica"),
)

STARTER_TOPICS = (
    ("road-works", "Cestna dela in zapore", "Road works and closures"),
    ("waste-collection", "Odvoz odpadkov", "Waste collection"),
    ("water-supply", "Oskrba z vodo", "Water supply"),
    ("events", "Prireditve", "Events"),
    ("emergencies", "Nujna obvestila", "Emergencies"),
    ("public-transport", "Javni promet", "Public transport"),
    ("city-council", "Mestni svet", "City council"),
)


def seed_kranj(session: Session) -> tuple[int, int]:
    """Add the areas and topics that are missing; returns how many of each were added."""
    have_areas = set(session.scalars(select(Area.slug)))
    have_topics = set(session.scalars(select(Topic.slug)))
    new_areas = [
        Area(slug=slug, names={"sl": name, "en": name})
        for slug, name in KRANJ_LOCAL_COMMUNITIES
        if slug not in have_areas
    ]
    new_topics = [
        Topic(slug=slug, names={"sl": sl, "en": en})
        for slug, sl, en in STARTER_TOPICS
        if slug not in have_topics
    ]
    session.add_all(new_areas + new_topics)
    session.flush()
    return len(new_areas), len(new_topics)


DEMO_STAFF = (
    ("admin@kranj.example", Role.ADMIN),
    ("obvescanje@kranj.example", Role.BROADCASTER),
    ("odobritve@kranj.example", Role.APPROVER),
    ("podpora@kranj.example", Role.AGENT),
)
FIRST_NAMES = ("Ana", "Luka", "Maja", "Jan", "Nina", "Žiga", "Eva", "Matej", "Špela", "Tadej")
LAST_NAMES = ("Novak", "Horvat", "Kovačič", "Krajnc", "Zupančič", "Potočnik", "Kos", "Vidmar")


def seed_demo(
    session: Session,
    residents: int = 300,
    rng_seed: int = 7,
    push_subscription: Callable[[], dict] | None = None,
) -> dict[str, str]:
    """Demo residents once, and demo staff with fresh random passwords each run (returned).

    Residents use every channel: e-mail, SMS first for a third, Telegram first for a fifth,
    and (given `push_subscription`, which returns a browser-style subscription) web push first
    for a seventh."""
    logins = {}
    for email, role in DEMO_STAFF:
        password = secrets.token_urlsafe(9)
        user = session.scalar(select(StaffUser).where(StaffUser.email == email))
        if user is None:
            create_staff_user(session, email=email, role=role, password=password)
        else:
            set_password(user, password)
        logins[email] = password
    if session.scalar(select(func.count(Resident.id))):
        return logins
    rng = random.Random(rng_seed)
    areas = list(session.execute(select(Area.slug, Area.id)).all())
    topics = list(session.scalars(select(Topic.id)))
    rows = [_demo_resident(i, rng, areas, topics) for i in range(residents)]
    import_rows(session, rows)
    if push_subscription is not None:
        _add_push_subscriptions(session, push_subscription)
    return logins


def _add_push_subscriptions(session: Session, subscribe: Callable[[], dict]) -> None:
    resident_ids = session.scalars(select(Resident.id).order_by(Resident.id)).all()
    for i, resident_id in enumerate(resident_ids):
        if i % 7 == 3:
            subscription = subscribe()
            session.add(
                ContactPoint(
                    resident_id=resident_id,
                    channel="push",
                    address=subscription["endpoint"],
                    details=subscription["keys"],
                    rank=0,  # before the imported channels, ranked from 1
                    verified=True,
                )
            )


def _demo_resident(i: int, rng: random.Random, areas, topics) -> ResidentRow:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    slug, area_id = areas[i % len(areas)]
    row = ResidentRow(
        name=name,
        locale="en" if i % 5 == 0 else "sl",
        area_id=area_id,
        topic_ids=rng.sample(topics, k=min(len(topics), rng.randint(2, 5))),
    )
    row.addresses["email"] = f"prebivalec{i:04d}@{slug}.kranj.example"
    row.channel_order = ["email"]
    if i % 3 == 0:
        row.addresses["sms"] = f"+38640{i:06d}"
        row.channel_order.insert(0, "sms")
    if i % 5 == 1:
        row.addresses["telegram"] = str(700_000_000 + i)
        row.channel_order.insert(0, "telegram")
    if i % 4 == 0:
        row.quiet = (22 * 60, 7 * 60)
    return row
