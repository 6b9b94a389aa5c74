"""Drafts in the staff console, through the Flask test client: the list of drafts, editing
every field of a draft with the compose form (its checks, its preview), deleting one, the
audit log, and the rules that keep four eyes honest: only a draft changes, an approver
approves exactly the version they read, and whoever edited an emergency cannot approve it."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from hub.broadcasts import Actor, edit_draft
from hub.models import AuditEntry, Broadcast, BroadcastContent, Role
from hub.web.compose import Choices, draft_values, parse_compose
from tests.conftest import IsolatedClient
from tests.console_helpers import compose_form, csrf_token, login, residents, staff
from tests.helpers import work

ENGLISH = {"Accept-Language": "en"}
BOJAN = "bojan@kranj.example"  # broadcaster
VESNA = "vesna@kranj.example"  # approver
ZALA = "zala@kranj.example"  # approver


@pytest.fixture(autouse=True)
def english(client):
    """The pages are read in English here (Slovenian is the default, checked by its own tests)."""
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"


@pytest.fixture
def broadcaster(seeded, client):
    staff(seeded, BOJAN, Role.BROADCASTER)
    login(client, BOJAN)
    return client


def _another(client, email: str, role: str):
    """A second person in a browser of their own."""
    staff(client.application.extensions["hub"], email, role)
    client.application.test_client_class = IsolatedClient
    other = client.application.test_client()
    other.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    login(other, email)
    return other


def _save(client, **changes) -> int:
    data = compose_form(csrf_token=csrf_token(client, "/broadcasts/new"), **changes)
    response = client.post("/broadcasts/new", data=data)
    assert response.status_code == 302, response.text
    return int(response.headers["Location"].rsplit("/", 1)[1])


def _edit(client, broadcast_id: int, **changes):
    token = csrf_token(client, "/broadcasts/new")
    return client.post(
        f"/broadcasts/{broadcast_id}/edit", data=compose_form(csrf_token=token, **changes)
    )


def _approve(client, broadcast_id: int, fingerprint: str | None = None):
    page = client.get(f"/broadcasts/{broadcast_id}").text
    data = {"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)}
    seen = re.search(r'name="fingerprint" value="([0-9a-f]+)"', page)
    data["fingerprint"] = fingerprint or (seen.group(1) if seen else "")
    return client.post(f"/broadcasts/{broadcast_id}/approve", data=data)


def _fingerprint(client, broadcast_id: int) -> str:
    page = client.get(f"/broadcasts/{broadcast_id}").text
    return re.search(r'name="fingerprint" value="([0-9a-f]+)"', page).group(1)


def _stored(rt, broadcast_id: int) -> dict | None:
    with rt.session() as session:
        b = session.get(Broadcast, broadcast_id)
        if b is None:
            return None
        return {
            "title": b.title,
            "topic": b.topic.slug,
            "areas": sorted(a.slug for a in b.areas),
            "priority": b.priority,
            "channel_policy": b.channel_policy,
            "scheduled_at": b.scheduled_at and b.scheduled_at.isoformat(),
            "sms_transliterate": b.sms_transliterate,
            "status": b.status,
            "texts": {c.locale: (c.title, c.body) for c in b.contents},
        }


def _audit(rt, action: str) -> list[AuditEntry]:
    with rt.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _flash(client, response) -> str:
    page = client.get(response.headers["Location"])
    return " ".join(re.findall(r'<p class="flash \w+" role="alert">([^<]+)</p>', page.text))


# -- who may ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/broadcasts/drafts", "get"),
        ("/broadcasts/1/edit", "get"),
        ("/broadcasts/1/edit", "post"),
        ("/broadcasts/1/delete", "get"),
        ("/broadcasts/1/delete", "post"),
    ],
)
def test_agents_may_not_see_or_change_drafts(seeded, client, path, method):
    staff(seeded, BOJAN, Role.BROADCASTER)
    staff(seeded, "aljaz@kranj.example", Role.AGENT)
    login(client, BOJAN)
    broadcast_id = _save(client)
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    login(client, "aljaz@kranj.example")
    token = csrf_token(client, "/")
    response = getattr(client, method)(path, data=compose_form(csrf_token=token))
    assert response.status_code == 403
    assert _stored(seeded, broadcast_id)["status"] == "draft"


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get("/broadcasts/drafts")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_unknown_drafts_are_404(broadcaster):
    token = csrf_token(broadcaster, "/broadcasts/new")
    assert broadcaster.get("/broadcasts/999/edit").status_code == 404
    assert broadcaster.get("/broadcasts/999/delete").status_code == 404
    edit = broadcaster.post("/broadcasts/999/edit", data=compose_form(csrf_token=token))
    assert edit.status_code == 404
    delete = broadcaster.post("/broadcasts/999/delete", data={"csrf_token": token})
    assert delete.status_code == 404


def test_a_head_request_deletes_nothing(broadcaster, seeded):
    broadcast_id = _save(broadcaster)
    assert broadcaster.head(f"/broadcasts/{broadcast_id}/delete").status_code == 200
    assert _stored(seeded, broadcast_id) is not None


# -- the list and the edit form --------------------------------------------------------------


def test_the_drafts_page_lists_drafts_only_newest_first(broadcaster, seeded):
    empty = broadcaster.get("/broadcasts/drafts")
    assert empty.status_code == 200 and "No drafts." in empty.text
    first = _save(broadcaster, title="Prvi osnutek")
    sent = _save(broadcaster, title="Poslano obvestilo", scheduled_at="2099-01-01T08:00")
    _approve(broadcaster, sent)
    _save(broadcaster, title="Drugi osnutek", priority="emergency")
    page = broadcaster.get("/broadcasts/drafts")
    titles = re.findall(r'<a href="/broadcasts/\d+">([^<]+)</a>', page.text)
    assert titles == ["Drugi osnutek", "Prvi osnutek"]
    assert "EMERGENCY" in page.text and BOJAN in page.text
    assert 'href="/broadcasts/drafts"' in broadcaster.get("/").text  # in the console's menu
    draft_page = broadcaster.get(f"/broadcasts/{first}")
    assert f'href="/broadcasts/{first}/edit"' in draft_page.text
    assert f'href="/broadcasts/{first}/delete"' in draft_page.text


def test_the_edit_form_starts_from_the_draft_as_it_was_saved(broadcaster, seeded):
    broadcast_id = _save(
        broadcaster,
        areas=["center", "planina"],
        priority="bulk",
        channel_policy="all",
        scheduled_at="2099-07-01T08:30",
        sms_transliterate="1",
    )
    page = broadcaster.get(f"/broadcasts/{broadcast_id}/edit")
    assert page.status_code == 200
    assert "<h1>Edit the draft</h1>" in page.text
    assert f'action="/broadcasts/{broadcast_id}/edit"' in page.text
    assert 'value="Zapora Koroške ceste"' in page.text
    assert '<option value="road-works" selected>' in page.text
    checked = re.findall(r'id="area-([\w-]+)" name="areas" value="[\w-]+" checked', page.text)
    assert checked == ["center", "planina"]
    assert 'id="priority-bulk" name="priority" value="bulk" checked' in page.text
    assert 'id="policy-all" name="channel_policy" value="all" checked' in page.text
    assert 'value="2099-07-01T08:30"' in page.text  # local time, as it was typed
    assert 'value="Koroška road closed"' in page.text
    assert ">Koroška cesta bo jutri zaprta od 8. do 16. ure.</textarea>" in page.text
    assert 'name="sms_transliterate" value="1" checked' in page.text


def test_every_field_of_a_draft_can_be_changed_and_the_edit_is_audited(broadcaster, seeded):
    rt = seeded
    broadcast_id = _save(broadcaster)
    response = _edit(
        broadcaster,
        broadcast_id,
        title="Odvoz kosovnih odpadkov",
        topic="waste-collection",
        areas=["planina", "bitnje"],
        priority="bulk",
        channel_policy="all",
        scheduled_at="2099-12-01T07:00",
        body_sl="Kosovne odpadke odpeljemo v ponedeljek.",
        title_en="",
        body_en="",
        sms_transliterate="1",
    )
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/broadcasts/{broadcast_id}")
    assert "The draft is saved." in _flash(broadcaster, response)
    assert _stored(rt, broadcast_id) == {
        "title": "Odvoz kosovnih odpadkov",
        "topic": "waste-collection",
        "areas": ["bitnje", "planina"],
        "priority": "bulk",
        "channel_policy": "all",
        "scheduled_at": "2099-12-01T06:00:00",  # CET is UTC+1
        "sms_transliterate": True,
        "status": "draft",
        "texts": {"sl": ("Odvoz kosovnih odpadkov", "Kosovne odpadke odpeljemo v ponedeljek.")},
    }
    (entry,) = _audit(rt, "broadcast.edit")
    assert entry.actor == BOJAN and entry.target == f"broadcast:{broadcast_id}"
    assert entry.detail["changed"] == [
        "areas",
        "channel_policy",
        "priority",
        "scheduled_at",
        "sms_transliterate",
        "texts",
        "title",
        "topic",
    ]
    page = broadcaster.get(f"/broadcasts/{broadcast_id}")
    assert "Kosovne odpadke odpeljemo v ponedeljek." in page.text


def test_an_added_language_and_a_changed_text_are_saved_in_place(broadcaster, seeded):
    rt = seeded
    broadcast_id = _save(broadcaster, title_en="", body_en="")
    _edit(broadcaster, broadcast_id, body_sl="Nova besedila.", body_en="New text.")
    texts = _stored(rt, broadcast_id)["texts"]
    assert texts == {
        "sl": ("Zapora Koroške ceste", "Nova besedila."),
        "en": ("Koroška road closed", "New text."),
    }
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(BroadcastContent)) == 2


def test_saving_the_form_unchanged_changes_and_audits_nothing(broadcaster, seeded):
    rt = seeded
    broadcast_id = _save(broadcaster, scheduled_at="2099-07-01T08:30", sms_transliterate="1")
    before = _stored(rt, broadcast_id)
    with rt.session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        values = draft_values(broadcast, "sl", "Europe/Ljubljana")
    choices = Choices(
        topics=frozenset({"road-works"}),
        areas=frozenset({"center"}),
        locales=("sl", "en"),
        default_locale="sl",
        timezone="Europe/Ljubljana",
    )
    form, draft = parse_compose(values, choices, broadcast.created_at)
    assert form.errors == {}
    assert edit_draft(rt, broadcast_id, draft, actor=Actor(BOJAN, Role.BROADCASTER)) is False
    assert _stored(rt, broadcast_id) == before
    assert _audit(rt, "broadcast.edit") == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("title", "", "Write a title."),
        ("topic", "no-such-topic", "Choose a topic."),
        ("areas", ["center", "atlantis"], "Choose areas from the list."),
        ("priority", "urgent", "Choose a priority."),
        ("scheduled_at", "2001-01-01T08:00", "The time has passed"),
        ("body_sl", "   ", "Write the text in this language."),
    ],
)
def test_bad_input_in_an_edit_is_shown_by_its_field_and_changes_nothing(
    broadcaster, seeded, field, value, message
):
    broadcast_id = _save(broadcaster)
    before = _stored(seeded, broadcast_id)
    response = _edit(broadcaster, broadcast_id, **{field: value})
    assert response.status_code == 422
    errors = re.findall(r'<p class="field-error" id="([^"]+)-error">([^<]+)</p>', response.text)
    assert [name for name, _ in errors] == [field] and message in errors[0][1]
    assert f'action="/broadcasts/{broadcast_id}/edit"' in response.text  # still editing it
    assert _stored(seeded, broadcast_id) == before
    assert _audit(seeded, "broadcast.edit") == []


def test_the_preview_of_an_edit_saves_nothing(broadcaster, seeded):
    broadcast_id = _save(broadcaster)
    before = _stored(seeded, broadcast_id)
    response = _edit(broadcaster, broadcast_id, body_sl="Samo predogled.", action="preview")
    assert response.status_code == 200 and "Samo predogled." in response.text
    assert response.text.count('<article class="preview"') == 8
    assert _stored(seeded, broadcast_id) == before


def test_an_edit_needs_a_csrf_token(broadcaster, seeded):
    broadcast_id = _save(broadcaster)
    before = _stored(seeded, broadcast_id)
    data = compose_form(title="Brez žetona")
    assert broadcaster.post(f"/broadcasts/{broadcast_id}/edit", data=data).status_code == 400
    assert _stored(seeded, broadcast_id) == before


# -- only drafts -----------------------------------------------------------------------------


def test_an_approved_notice_cannot_be_edited_or_deleted(broadcaster, seeded):
    rt = seeded
    broadcast_id = _save(broadcaster, scheduled_at="2099-01-01T08:00")
    _approve(broadcaster, broadcast_id)
    before = _stored(rt, broadcast_id)
    assert before["status"] == "scheduled"
    form = broadcaster.get(f"/broadcasts/{broadcast_id}/edit")
    assert form.status_code == 303
    assert form.headers["Location"].endswith(f"/broadcasts/{broadcast_id}/progress")
    assert "Only a draft can be changed. This notice is: Scheduled." in _flash(broadcaster, form)
    posted = _edit(broadcaster, broadcast_id, title="Prepozno")
    assert posted.status_code == 303
    token = csrf_token(broadcaster, "/broadcasts/new")
    deleted = broadcaster.post(f"/broadcasts/{broadcast_id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 303
    assert "Only a draft can be changed" in _flash(broadcaster, deleted)
    assert _stored(rt, broadcast_id) == before
    assert _audit(rt, "broadcast.edit") == [] and _audit(rt, "broadcast.delete") == []
    assert (
        f'href="/broadcasts/{broadcast_id}/edit"'
        not in broadcaster.get(f"/broadcasts/{broadcast_id}/progress").text
    )


def test_a_draft_is_deleted_after_asking_and_audited(broadcaster, seeded):
    rt = seeded
    broadcast_id = _save(broadcaster, title="Odveč")
    confirm = broadcaster.get(f"/broadcasts/{broadcast_id}/delete")
    assert confirm.status_code == 200 and "Delete the draft “Odveč”?" in confirm.text
    assert broadcaster.post(f"/broadcasts/{broadcast_id}/delete").status_code == 400  # no CSRF
    assert _stored(rt, broadcast_id) is not None
    token = csrf_token(broadcaster, f"/broadcasts/{broadcast_id}/delete")
    done = broadcaster.post(f"/broadcasts/{broadcast_id}/delete", data={"csrf_token": token})
    assert done.status_code == 303 and done.headers["Location"].endswith("/broadcasts/drafts")
    assert "The draft “Odveč” is deleted." in _flash(broadcaster, done)
    assert _stored(rt, broadcast_id) is None
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(BroadcastContent)) == 0
    (entry,) = _audit(rt, "broadcast.delete")
    assert entry.actor == BOJAN and entry.detail == {"title": "Odveč"}
    assert broadcaster.get(f"/broadcasts/{broadcast_id}").status_code == 404


def test_an_edited_draft_is_sent_as_edited(broadcaster, seeded, smtp):
    rt = seeded
    residents(rt, ("Ana", "sl", {"email": "ana@example.org"}))
    broadcast_id = _save(broadcaster)
    _edit(broadcaster, broadcast_id, title="Zapora je preklicana", body_sl="Cesta bo odprta.")
    started = _approve(broadcaster, broadcast_id)
    assert started.headers["Location"].endswith(f"/broadcasts/{broadcast_id}/progress")
    work(rt)
    (message,) = smtp.messages()
    assert message["subject"] == "Zapora je preklicana" and "Cesta bo odprta." in message["body"]


# -- four eyes -------------------------------------------------------------------------------


def test_an_approver_approves_only_the_version_they_read(broadcaster, seeded):
    rt = seeded
    broadcast_id = _save(broadcaster, priority="emergency")
    approver = _another(broadcaster, VESNA, Role.APPROVER)
    read = _fingerprint(approver, broadcast_id)
    # While the approver's page is open, the author changes the text.
    _edit(broadcaster, broadcast_id, priority="emergency", body_sl="Drugačno besedilo.")
    refused = _approve(approver, broadcast_id, fingerprint=read)
    assert refused.status_code == 303
    assert refused.headers["Location"].endswith(f"/broadcasts/{broadcast_id}")
    assert "changed after you opened it" in _flash(approver, refused)
    assert _stored(rt, broadcast_id)["status"] == "draft"
    assert _audit(rt, "broadcast.approve") == []
    # Read again, the new version is approved.
    assert _fingerprint(approver, broadcast_id) != read
    started = _approve(approver, broadcast_id)
    assert started.headers["Location"].endswith("/progress")
    assert _stored(rt, broadcast_id)["status"] == "scheduled"


def test_whoever_edited_an_emergency_cannot_approve_it(broadcaster, seeded):
    rt = seeded
    broadcast_id = _save(broadcaster, priority="emergency")
    editor = _another(broadcaster, VESNA, Role.APPROVER)
    _edit(editor, broadcast_id, priority="emergency", body_sl="Vesnino besedilo.")
    page = editor.get(f"/broadcasts/{broadcast_id}")
    assert "a second person, not its author" in page.text
    assert f'action="/broadcasts/{broadcast_id}/approve"' not in page.text
    _approve(editor, broadcast_id, fingerprint="0" * 64)
    assert _stored(rt, broadcast_id)["status"] == "draft"
    other = _another(broadcaster, ZALA, Role.APPROVER)
    _approve(other, broadcast_id)
    assert _stored(rt, broadcast_id)["status"] == "scheduled"
    assert [e.actor for e in _audit(rt, "broadcast.approve")] == [ZALA]


def test_an_edit_that_makes_a_draft_an_emergency_needs_an_approver(broadcaster, seeded):
    broadcast_id = _save(broadcaster)
    assert "Approve and send" in broadcaster.get(f"/broadcasts/{broadcast_id}").text
    _edit(broadcaster, broadcast_id, priority="emergency")
    page = broadcaster.get(f"/broadcasts/{broadcast_id}")
    assert "must be approved by someone with the approver role" in page.text
    _approve(broadcaster, broadcast_id, fingerprint="0" * 64)
    assert _stored(seeded, broadcast_id)["status"] == "draft"
