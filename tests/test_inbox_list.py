"""The agents' inbox: filters, waiting order, keyset pages, and what an agent does to a
conversation (assign, label, note, snooze, resolve, canned answers)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from hub import clock, conversations, inbox
from hub.broadcasts import NoticeDraft, send_notice
from hub.inbox import InboxFilter
from hub.models import Area, Message, Resident, StaffUser, Topic
from hub.residents import ResidentRow, import_rows
from hub.staff import create_staff_user
from hub.sweeper import sweep
from tests.helpers import work


def _residents(rt, n: int) -> list[int]:
    with rt.session() as session:
        area_id = session.scalar(select(Area.id).where(Area.slug == "center"))
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == "road-works"))
        rows = [
            ResidentRow(f"Prebivalec {i}", "sl" if i % 2 else "en", area_id, [topic_id],
                        {"sms": f"+3864011{i:04d}"}, ["sms"])
            for i in range(n)
        ]  # fmt: skip
        import_rows(session, rows)
        return list(session.scalars(select(Resident.id).order_by(Resident.id)))


def _write(rt, i: int, text: str, minutes_ago: int) -> int:
    """Resident i writes `text`, `minutes_ago` minutes ago; returns the conversation id."""
    with rt.session() as session:
        received = conversations.receive(
            session, "sms", f"+3864011{i:04d}", text, default_locale="sl",
            now=clock.utcnow() - timedelta(minutes=minutes_ago),
        )  # fmt: skip
        return received.conversation_id


def _ids(page) -> list[int]:
    return [c.id for c in page.conversations]


@pytest.fixture
def agent_id(rt):
    with rt.session() as session:
        create_staff_user(session, email="agent@kranj.si", role="agent", password="x" * 12)
        return session.scalar(select(StaffUser.id))


def test_the_longest_waiting_come_first_in_pages(seeded):
    rt = seeded
    _residents(rt, 7)
    waited = {_write(rt, i, f"Vprašanje {i}", minutes_ago=10 * (i + 1)): i for i in range(7)}
    with rt.session() as session:
        first = inbox.inbox(session, InboxFilter(), limit=3)
        second = inbox.inbox(session, InboxFilter(), after=first.next_cursor, limit=3)
        third = inbox.inbox(session, InboxFilter(), after=second.next_cursor, limit=3)
    order = _ids(first) + _ids(second) + _ids(third)
    assert [waited[c] for c in order] == [6, 5, 4, 3, 2, 1, 0]
    assert third.next_cursor is None
    with rt.session() as session, pytest.raises(conversations.ConversationError):
        inbox.inbox(session, InboxFilter(), after="garbage!")


def test_filters(seeded, agent_id):
    rt = seeded
    _residents(rt, 4)
    broadcast_id = send_notice(
        rt,
        NoticeDraft("Zapora", "road-works", ("center",), "normal", "preferred", {"sl": "Zapora."}),
        actor="test",
    )
    a = _write(rt, 0, "Kje je obvoz?", 5)
    b = _write(rt, 1, "Smeti niso bile odpeljane", 4)
    c = _write(rt, 2, "Hvala za obvestilo", 3)
    with rt.session() as session:
        inbox.assign(session, a, agent_id)
        inbox.set_labels(session, b, ["Odpadki", "nujno"])
        session.get(conversations.Conversation, c).broadcast_id = broadcast_id
        conversations.mark_read(session, c)
    with rt.session() as session:

        def found(**f):
            return set(_ids(inbox.inbox(session, InboxFilter(**f))))

        assert found() == {a, b, c}
        assert found(assignee_id=agent_id) == {a}
        assert found(unassigned=True) == {b, c}
        assert found(label="odpadki") == {b}
        assert found(topic="road-works") == {c}
        assert found(unread=True) == {a, b}
        assert found(text="OBVOZ") == {a}
        assert found(text="100%") == set()  # LIKE wildcards are literal
        assert found(channel="email") == set()
        with pytest.raises(conversations.ConversationError):
            found(status="nonsense")


def test_notes_are_never_sent(seeded, standin, agent_id):
    rt = seeded
    _residents(rt, 1)
    conversation_id = _write(rt, 0, "Halo", 1)
    with rt.session() as session:
        inbox.add_note(session, conversation_id, "Pokliči ga jutri.", agent_id)
    work(rt)
    assert standin.store.count() == 0
    with rt.session() as session:
        [_, note] = conversations.messages_of(session, conversation_id)
        assert (note.direction, note.status) == ("note", "note")


def test_snooze_until_a_time_or_until_the_resident_writes(seeded):
    rt = seeded
    _residents(rt, 2)
    timed = _write(rt, 0, "Prvo", 5)
    untimed = _write(rt, 1, "Drugo", 5)
    with rt.session() as session:
        inbox.snooze(session, timed, clock.utcnow() + timedelta(hours=2))
        inbox.snooze(session, untimed, None)
        with pytest.raises(conversations.ConversationError):
            inbox.snooze(session, timed, clock.utcnow() - timedelta(hours=1))
    with rt.session() as session:
        assert _ids(inbox.inbox(session, InboxFilter())) == []
    clock.advance_to(clock.utcnow() + timedelta(hours=2, minutes=1))
    assert sweep(rt).woken == 1
    _write(rt, 1, "Še vedno čakam", 0)
    with rt.session() as session:
        assert set(_ids(inbox.inbox(session, InboxFilter()))) == {timed, untimed}


def test_resolve_and_reopen_in_the_same_thread(seeded):
    rt = seeded
    _residents(rt, 1)
    conversation_id = _write(rt, 0, "Vprašanje", 5)
    with rt.session() as session:
        inbox.resolve(session, conversation_id)
        assert _ids(inbox.inbox(session, InboxFilter(status="resolved"))) == [conversation_id]
    assert _write(rt, 0, "Še eno vprašanje", 0) == conversation_id
    with rt.session() as session:
        conversation = session.get(conversations.Conversation, conversation_id)
        assert conversation.status == "open" and conversation.resolved_at is None


def test_canned_answers_in_the_residents_language(seeded):
    rt = seeded
    _residents(rt, 2)  # resident 0 speaks English, 1 Slovenian
    english = _write(rt, 0, "When?", 1)
    slovenian = _write(rt, 1, "Kdaj?", 1)
    with rt.session() as session:
        inbox.save_canned(session, "Hvala", "sl", "Pozdravljeni, {name}! Lep pozdrav, {agent}")
        inbox.save_canned(session, "hvala", "en", "Hello {name}, regards, {agent}")
        assert (
            inbox.canned_text(session, "hvala", slovenian, "Maja", "sl")
            == "Pozdravljeni, Prebivalec 1! Lep pozdrav, Maja"
        )
        assert inbox.canned_text(session, "hvala", english, "Maja", "sl") == (
            "Hello Prebivalec 0, regards, Maja"
        )
        with pytest.raises(conversations.ConversationError):
            inbox.canned_text(session, "missing", english, "Maja", "sl")


def test_priority_and_assignment_refuse_nonsense(seeded):
    rt = seeded
    _residents(rt, 1)
    conversation_id = _write(rt, 0, "Halo", 1)
    with rt.session() as session:
        inbox.set_priority(session, conversation_id, "urgent")
        with pytest.raises(conversations.ConversationError):
            inbox.set_priority(session, conversation_id, "whenever")
        with pytest.raises(conversations.ConversationError):
            inbox.assign(session, conversation_id, 999)
        with pytest.raises(conversations.ConversationError):
            inbox.set_labels(session, conversation_id, ["x" * 65])
    with rt.session() as session:
        assert session.get(conversations.Conversation, conversation_id).priority == "urgent"
        assert session.scalar(select(Message.body)) == "Halo"


def test_an_unknown_sender_is_linked_or_made_a_resident(seeded):
    from hub.models import ContactPoint, Conversation

    rt = seeded
    [known] = _residents(rt, 1)
    with rt.session() as session:
        first = conversations.receive(session, "sms", "+38641000001", "Halo", default_locale="sl")
        second = conversations.receive(session, "sms", "+38641000002", "Živjo", default_locale="sl")
    with rt.session() as session:
        inbox.link_to_resident(session, first.conversation_id, known)
        new_id = inbox.create_resident_from(
            session, second.conversation_id, "Jana Kos", "en", "planina"
        )
        with pytest.raises(conversations.ConversationError):
            inbox.create_resident_from(session, second.conversation_id, "Again", "sl", None)
        with pytest.raises(conversations.ConversationError):
            inbox.link_to_resident(session, second.conversation_id, known)  # Jana's number now
    with rt.session() as session:
        owners = dict(session.execute(select(ContactPoint.address, ContactPoint.resident_id)).all())
        assert owners["+38641000001"] == known and owners["+38641000002"] == new_id
        assert session.get(Conversation, first.conversation_id).resident_id == known
    # the linked resident's own number now threads into that conversation too
    assert _write(rt, 0, "Še jaz", 0) == first.conversation_id
    with rt.session() as session:
        again = conversations.receive(session, "sms", "+38641000002", "Hvala", default_locale="sl")
    assert again.conversation_id == second.conversation_id
