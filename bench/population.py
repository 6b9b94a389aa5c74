"""The benchmark's city: Kranj's areas and topics, N residents with one e-mail address each,
and the notices sent to them.

Every resident follows CITY_TOPIC in their own area; the first `send_sample` residents also
follow SAMPLE_TOPIC and the first `naive_sample` also NAIVE_TOPIC, so each phase's notice reaches
exactly the residents it should, through the hub's own audience query.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select

from hub.broadcasts import NoticeDraft, create_broadcast, mark_scheduled
from hub.models import Area, ChannelPolicy, ContactPoint, Delivery, Priority, Topic
from hub.residents import ResidentRow, import_rows
from hub.runtime import Runtime
from hub.seed import seed_kranj

CITY_TOPIC = "waste-collection"
SAMPLE_TOPIC = "road-works"
NAIVE_TOPIC = "events"
SEED_BATCH = 50_000  # residents per transaction: bounded memory for a million residents

# A realistic notice: a title and three short paragraphs in each locale.
BODIES = {
    "sl": (
        "Zaradi obnove vodovoda bo Koroška cesta od ponedeljka do petka med 7. in 17. uro "
        "zaprta za ves promet.\n\n"
        "Obvoz je urejen po Bleiweisovi in Kidričevi cesti. Avtobusne linije 2, 4 in 8 vozijo "
        "po spremenjeni trasi; postajališče Globus je začasno prestavljeno.\n\n"
        "Za razumevanje se vam zahvaljujemo. Več informacij na spletni strani mestne občine."
    ),
    "en": (
        "Because of water main works, Koroška cesta is closed to all traffic from Monday to "
        "Friday between 7:00 and 17:00.\n\n"
        "Diversions run along Bleiweisova and Kidričeva cesta. Bus lines 2, 4 and 8 take a "
        "changed route; the Globus stop has moved for the time being.\n\n"
        "Thank you for your understanding. More on the municipality's website."
    ),
}


def seed(rt: Runtime, residents: int, send_sample: int, naive_sample: int) -> None:
    """Areas, topics and residents, in batches so a million residents stay within memory."""
    with rt.session() as session:
        seed_kranj(session)
        area_ids = list(session.scalars(select(Area.id).order_by(Area.id)))
        topics = dict(session.execute(select(Topic.slug, Topic.id)).all())
    for start in range(0, residents, SEED_BATCH):
        stop = min(start + SEED_BATCH, residents)
        rows = [
            resident_row(i, area_ids, topics, send_sample, naive_sample) for i in range(start, stop)
        ]
        with rt.session() as session:
            import_rows(session, rows)


def resident_row(
    i: int, area_ids: list[int], topics: dict[str, int], send_sample: int, naive_sample: int
) -> ResidentRow:
    """Resident i: an area by turns, one in three English-speaking, no quiet hours."""
    follows = [topics[CITY_TOPIC]]
    if i < send_sample:
        follows.append(topics[SAMPLE_TOPIC])
    if i < naive_sample:
        follows.append(topics[NAIVE_TOPIC])
    row = ResidentRow(
        name=f"Prebivalec {i}",
        locale="en" if i % 3 == 0 else "sl",
        area_id=area_ids[i % len(area_ids)],
        topic_ids=follows,
    )
    row.addresses["email"] = address(i)
    row.channel_order = ["email"]
    return row


def address(i: int) -> str:
    return f"r{i}@example.org"


def create_notice(rt: Runtime, topic: str, title: str) -> int:
    """A city-wide normal notice on `topic`, approved and ready for its planning step."""
    draft = NoticeDraft(
        title=title,
        topic=topic,
        areas=(),
        priority=Priority.NORMAL,
        channel_policy=ChannelPolicy.PREFERRED,
        bodies=BODIES,
    )
    with rt.session() as session:
        broadcast = create_broadcast(
            session, draft, created_by="bench", default_locale=rt.settings.default_locale
        )
        mark_scheduled(session, broadcast, approved_by="bench")
        return broadcast.id


def delivery_addresses(rt: Runtime, broadcast_id: int) -> Iterator[str]:
    """The address each delivery of a notice goes to (to check what the stand-in received)."""
    with rt.session() as session:
        yield from session.scalars(
            select(ContactPoint.address)
            .join(Delivery, Delivery.contact_point_id == ContactPoint.id)
            .where(Delivery.broadcast_id == broadcast_id)
        )
