"""Public notices as open data: the /notices list and the Atom feed, as a visitor without an
account and a feed reader see them."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

from lxml import etree

from hub import clock
from hub.broadcasts import NoticeDraft, cancel_broadcast, create_broadcast, send_notice
from hub.open_data import PAGE_SIZE
from tests.helpers import work

ATOM = "{http://www.w3.org/2005/Atom}"


def notice(
    rt,
    title="Odvoz odpadkov v centru",
    *,
    topic="waste-collection",
    areas=("center",),
    priority="normal",
    en="Waste collection in the centre",
) -> NoticeDraft:
    return NoticeDraft(
        title=title,
        topic=topic,
        areas=areas,
        priority=priority,
        channel_policy="preferred",
        bodies={"sl": f"{title}: besedilo.\n\nDrugi odstavek.", "en": f"{en}: text."},
        titles={"en": en},
    )


def went_out(rt, draft: NoticeDraft, minutes_later: int = 0) -> int:
    """Send a notice and let the workers finish it, `minutes_later` than the one before."""
    if minutes_later:
        clock.advance_to(clock.utcnow() + timedelta(minutes=minutes_later))
    broadcast_id = send_notice(rt, draft, actor="test")
    work(rt)
    return broadcast_id


def titles_on(page) -> list[str]:
    return re.findall(r'<h2><a href="/notices/\d+">([^<]+)</a></h2>', page.text)


def test_public_notices_newest_first_in_the_visitors_language(seeded, client):
    went_out(seeded, notice(seeded, "Prvo obvestilo", en="First notice"))
    went_out(seeded, notice(seeded, "Drugo obvestilo", en="Second notice"), minutes_later=5)
    slovenian = client.get("/notices", headers={"Accept-Language": "sl"})
    assert slovenian.status_code == 200
    assert titles_on(slovenian) == ["Drugo obvestilo", "Prvo obvestilo"]
    assert (
        "<h1>Javna obvestila</h1>" in slovenian.text or "<h1>Public notices</h1>" in slovenian.text
    )
    english = client.get("/notices", headers={"Accept-Language": "en"})
    assert titles_on(english) == ["Second notice", "First notice"]
    assert "Waste collection" in english.text  # the topic, in English
    # The filter form is labelled and works without JavaScript (a plain GET form).
    assert '<label for="filter-topic">' in english.text
    assert '<form method="get"' in english.text


def test_emergencies_are_marked(seeded, client):
    went_out(
        seeded, notice(seeded, "Poplava", topic="emergencies", priority="emergency", en="Flood")
    )
    page = client.get("/notices", headers={"Accept-Language": "en"})
    assert '<article class="notice emergency">' in page.text
    assert '<p class="badge-emergency">Emergency</p>' in page.text


def test_filters_by_topic_and_area(seeded, client):
    went_out(seeded, notice(seeded, "Odvoz Center", areas=("center",)))
    went_out(seeded, notice(seeded, "Odvoz Planina", areas=("planina",)))
    went_out(seeded, notice(seeded, "Zapora ceste", topic="road-works", areas=("planina",)))
    went_out(seeded, notice(seeded, "Vsemu mestu", topic="events", areas=()))
    by_topic = client.get("/notices?topic=waste-collection")
    assert sorted(titles_on(by_topic)) == ["Odvoz Center", "Odvoz Planina"]
    by_area = client.get("/notices?area=planina")
    # A notice for the whole city concerns every area.
    assert sorted(titles_on(by_area)) == ["Odvoz Planina", "Vsemu mestu", "Zapora ceste"]
    both = client.get("/notices?topic=road-works&area=planina")
    assert titles_on(both) == ["Zapora ceste"]
    assert titles_on(client.get("/notices?topic=road-works&area=center")) == []


def test_unknown_filters_are_a_clear_400(seeded, client):
    response = client.get("/notices?topic=nope", headers={"Accept-Language": "en"})
    assert response.status_code == 400
    assert "unknown topic nope" in response.text
    response = client.get("/notices?area=atlantis", headers={"Accept-Language": "en"})
    assert response.status_code == 400 and "unknown area atlantis" in response.text


def test_pages_keep_the_filter(seeded, client):
    for i in range(PAGE_SIZE + 1):
        went_out(seeded, notice(seeded, f"Obvestilo {i:02d}", en=f"Notice {i:02d}"), 1)
    went_out(seeded, notice(seeded, "Druga tema", topic="events"), minutes_later=1)
    first = client.get("/notices?topic=waste-collection", headers={"Accept-Language": "en"})
    assert len(titles_on(first)) == PAGE_SIZE
    assert titles_on(first)[0] == f"Notice {PAGE_SIZE:02d}"
    assert "Page 1 of 2" in first.text
    next_link = re.search(r'<a rel="next" href="([^"]+)"', first.text).group(1)
    assert "topic=waste-collection" in next_link and "page=2" in next_link
    second = client.get(next_link.replace("&amp;", "&"), headers={"Accept-Language": "en"})
    assert titles_on(second) == ["Notice 00"]
    assert client.get("/notices?topic=waste-collection&page=3").status_code == 404


def test_what_has_not_gone_out_is_never_public(seeded, client):
    rt = seeded
    with rt.session() as session:
        draft_id = create_broadcast(
            session, notice(rt, "Osnutek"), created_by="test", default_locale="sl"
        ).id
    later = dataclasses.replace(
        notice(rt, "Kasneje"), scheduled_at=clock.utcnow() + timedelta(days=1)
    )
    scheduled_id = send_notice(rt, later, actor="test")
    cancelled_id = send_notice(rt, notice(rt, "Preklicano"), actor="test")
    with rt.session() as session:
        cancel_broadcast(session, cancelled_id)
    work(rt)
    out_id = went_out(rt, notice(rt, "Poslano"))
    listing = client.get("/notices")
    assert titles_on(listing) == ["Poslano"]
    feed = client.get("/feeds/notices.atom").text
    for hidden_id, title in (
        (draft_id, "Osnutek"),
        (scheduled_id, "Kasneje"),
        (cancelled_id, "Preklicano"),
    ):
        assert title not in listing.text and title not in feed
        assert client.get(f"/notices/{hidden_id}").status_code == 404
        assert client.get(f"/feeds/cap/{hidden_id}.xml").status_code == 404
    assert client.get(f"/feeds/cap/{out_id}.xml").status_code == 200


def parse_feed(response) -> etree._Element:
    assert response.status_code == 200
    assert response.content_type == "application/atom+xml; charset=utf-8"
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.fromstring(response.data, parser)


def test_atom_feed_per_language_with_stable_ids_and_escaped_text(seeded, client):
    rt = seeded
    tricky = notice(
        rt, "Zapora <b>ceste</b> & most", topic="road-works", en="Road <closed> & bridge"
    )
    first_id = went_out(rt, tricky)
    second_id = went_out(
        rt, notice(rt, "Poplava", topic="emergencies", priority="emergency", en="Flood"), 3
    )

    feed = parse_feed(client.get("/feeds/notices.atom"))
    assert feed.tag == f"{ATOM}feed"
    assert feed.nsmap[None] == "http://www.w3.org/2005/Atom"
    assert feed.get("{http://www.w3.org/XML/1998/namespace}lang") == "sl"
    for required in ("id", "title", "updated", "author"):
        assert feed.find(f"{ATOM}{required}") is not None, required
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == [
        "NUJNO: Poplava",
        "Zapora <b>ceste</b> & most",  # escaped in the XML, the same text after parsing
    ]
    newest = entries[0]
    assert newest.find(f"{ATOM}link[@type='text/html']").get("href") == (
        f"http://hub.test/notices/{second_id}"
    )
    assert newest.find(f"{ATOM}link[@type='application/cap+xml']").get("href") == (
        f"http://hub.test/feeds/cap/{second_id}.xml"
    )
    assert {c.get("term") for c in newest.findall(f"{ATOM}category")} == {
        "emergency",
        "emergencies",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", newest.findtext(f"{ATOM}updated"))
    assert entries[1].findtext(f"{ATOM}content").startswith("Zapora <b>ceste</b> & most: besedilo.")
    assert b"&lt;b&gt;" in client.get("/feeds/notices.atom").data

    english = parse_feed(client.get("/feeds/notices.atom?lang=en"))
    english_entries = english.findall(f"{ATOM}entry")
    assert english_entries[1].findtext(f"{ATOM}title") == "Road <closed> & bridge"
    assert english_entries[0].findtext(f"{ATOM}title") == "EMERGENCY: Flood"
    # Ids: a URN, the same on every fetch, different per language and notice.
    ids = [e.findtext(f"{ATOM}id") for e in entries + english_entries]
    assert all(i.startswith("urn:uuid:") for i in ids) and len(set(ids)) == 4
    again = parse_feed(client.get("/feeds/notices.atom"))
    assert [e.findtext(f"{ATOM}id") for e in again.findall(f"{ATOM}entry")] == ids[:2]
    assert first_id != second_id


def test_atom_feed_filters_and_bad_parameters(seeded, client):
    went_out(seeded, notice(seeded, "Odvoz", areas=("center",)))
    went_out(seeded, notice(seeded, "Zapora", topic="road-works", areas=("planina",)))
    feed = parse_feed(client.get("/feeds/notices.atom?topic=road-works"))
    assert [e.findtext(f"{ATOM}title") for e in feed.findall(f"{ATOM}entry")] == ["Zapora"]
    self_link = feed.find(f"{ATOM}link[@rel='self']").get("href")
    assert self_link == "http://hub.test/feeds/notices.atom?lang=sl&topic=road-works"
    feed = parse_feed(client.get("/feeds/notices.atom?area=center"))
    assert [e.findtext(f"{ATOM}title") for e in feed.findall(f"{ATOM}entry")] == ["Odvoz"]
    for bad, reason in (("lang=de", "unknown language de"), ("topic=nope", "unknown topic nope")):
        response = client.get(f"/feeds/notices.atom?{bad}", headers={"Accept-Language": "en"})
        assert response.status_code == 400
        assert reason in response.text


def test_an_empty_feed_is_still_valid_atom(seeded, client):
    feed = parse_feed(client.get("/feeds/notices.atom?lang=en"))
    assert feed.findall(f"{ATOM}entry") == []
    assert feed.findtext(f"{ATOM}updated")


def test_a_notice_without_the_visitors_language_shows_the_slovenian_text(seeded, client):
    only_slovenian = NoticeDraft(
        "Samo slovensko", "events", (), "normal", "preferred", {"sl": "Besedilo."}
    )
    went_out(seeded, only_slovenian)
    page = client.get("/notices", headers={"Accept-Language": "en"})
    assert titles_on(page) == ["Samo slovensko"]
    assert '<article class="notice" lang="sl">' in page.text
    feed = parse_feed(client.get("/feeds/notices.atom?lang=en"))
    content = feed.find(f"{ATOM}entry/{ATOM}content")
    assert content.text == "Besedilo."
    assert content.get("{http://www.w3.org/XML/1998/namespace}lang") == "sl"
