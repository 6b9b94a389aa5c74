"""Drafts and approval: who may start a notice, and the four-eyes rule for emergencies."""

from __future__ import annotations

import pytest
from flask_babel import force_locale
from sqlalchemy import select

from hub.broadcasts import Actor, BroadcastError, NoticeDraft, save_draft, start_draft
from hub.models import AuditEntry, Broadcast, BroadcastStatus
from tests.helpers import work
from tests.test_delivery import _residents


@pytest.fixture(autouse=True)
def english(app):
    """The reasons are read in English here (staff see them in their own language)."""
    with force_locale("en"):
        yield


AUTHOR = Actor("ana@kranj.si", "broadcaster")
APPROVER = Actor("bojan@kranj.si", "approver")


def _draft(priority: str) -> NoticeDraft:
    return NoticeDraft(
        "Poplava", "waste-collection", ("center",), priority, "preferred", {"sl": "Voda."}
    )


def _status(rt, broadcast_id: int) -> str:
    with rt.session() as session:
        return session.get(Broadcast, broadcast_id).status


def test_emergency_needs_a_second_person_with_the_approver_role(seeded, smtp):
    rt = seeded
    _residents(rt, ["a@example.org", "b@example.org"])
    broadcast_id = save_draft(rt, _draft("emergency"), actor=AUTHOR)
    assert _status(rt, broadcast_id) == BroadcastStatus.DRAFT

    with pytest.raises(BroadcastError, match="approver role"):
        start_draft(rt, broadcast_id, actor=Actor("cene@kranj.si", "broadcaster"))
    with pytest.raises(BroadcastError, match="second person"):
        start_draft(rt, broadcast_id, actor=Actor(AUTHOR.name, "approver"))
    assert _status(rt, broadcast_id) == BroadcastStatus.DRAFT
    work(rt)
    assert smtp.count() == 0  # nothing went out while it waited for approval

    start_draft(rt, broadcast_id, actor=APPROVER)
    work(rt)
    assert smtp.count() == 2
    with rt.session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        assert broadcast.approved_by == APPROVER.name
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions[-2:] == ["broadcast.draft", "broadcast.approve"]


def test_four_eyes_can_be_switched_off_by_the_city(seeded, smtp):
    rt = seeded
    rt.settings.emergency_four_eyes = False
    broadcast_id = save_draft(rt, _draft("emergency"), actor=AUTHOR)
    start_draft(rt, broadcast_id, actor=AUTHOR)
    assert _status(rt, broadcast_id) == BroadcastStatus.SCHEDULED


def test_a_normal_notice_its_author_may_start_but_only_once(seeded, smtp):
    rt = seeded
    broadcast_id = save_draft(rt, _draft("normal"), actor=AUTHOR)
    start_draft(rt, broadcast_id, actor=AUTHOR)
    with pytest.raises(BroadcastError, match="only a draft"):
        start_draft(rt, broadcast_id, actor=APPROVER)
    with rt.session() as session:
        approvals = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "broadcast.approve")
        ).all()
    assert len(approvals) == 1


@pytest.mark.parametrize(
    "actor, reason",
    [(Actor("agent@kranj.si", "agent"), "cannot write"), (AUTHOR, "unknown topic")],
)
def test_bad_drafts_are_refused_and_nothing_is_stored(seeded, actor, reason):
    rt = seeded
    draft = _draft("normal")
    if actor is AUTHOR:
        draft = NoticeDraft("X", "no-such-topic", (), "normal", "preferred", {"sl": "x"})
    with pytest.raises(BroadcastError, match=reason):
        save_draft(rt, draft, actor=actor)
    with rt.session() as session:
        assert session.scalar(select(Broadcast.id)) is None
        assert session.scalar(select(AuditEntry.id)) is None


def test_an_agent_cannot_start_a_draft_and_unknown_notices_are_reported(seeded):
    rt = seeded
    broadcast_id = save_draft(rt, _draft("normal"), actor=AUTHOR)
    with pytest.raises(BroadcastError, match="cannot start"):
        start_draft(rt, broadcast_id, actor=Actor("agent@kranj.si", "agent"))
    with pytest.raises(BroadcastError, match="no notice"):
        start_draft(rt, broadcast_id + 1, actor=APPROVER)
    assert _status(rt, broadcast_id) == BroadcastStatus.DRAFT
