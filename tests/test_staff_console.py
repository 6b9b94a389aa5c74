"""The staff console's notices through the Flask test client: roles, CSRF, bad input on every
form (nothing saved), escaping, the draft page's audience and times, four eyes, progress,
cancel, the report and its CSV export, and the audit log."""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import func, select, update

from hub.models import AuditEntry, Broadcast, Delivery, Role
from tests.console_helpers import compose_form, csrf_token, login, residents, staff
from tests.helpers import work


@pytest.fixture(autouse=True)
def english(client):
    """The pages are read in English here (Slovenian is the default, checked by its own tests)."""
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"


ANA = ("Ana", "sl", {"email": "ana@example.org", "sms": "+38640111222"})
JOHN = ("John", "en", {"email": "john@example.org"})
MARKO = ("Marko", "de", {"sms": "+38640111333"})  # no German text: gets the Slovenian


def _count(rt, model) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def _audit(rt, action: str) -> list[AuditEntry]:
    with rt.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _compose(client, **changes):
    data = compose_form(csrf_token=csrf_token(client, "/broadcasts/new"), **changes)
    return client.post("/broadcasts/new", data=data)


def _saved_id(response) -> int:
    assert response.status_code == 302, response.text
    return int(response.headers["Location"].rsplit("/", 1)[1])


@pytest.fixture
def broadcaster(seeded, client):
    staff(seeded, "bojan@kranj.example", Role.BROADCASTER)
    login(client, "bojan@kranj.example")
    return client


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/broadcasts/new", "get"),
        ("/broadcasts/1", "get"),
        ("/broadcasts/1/progress", "get"),
        ("/broadcasts/1/progress.json", "get"),
        ("/broadcasts/1/deliveries.csv", "get"),
        ("/admin/audit", "get"),
    ],
)
def test_agents_may_not_use_the_broadcast_pages(seeded, client, path, method):
    staff(seeded, "aljaz@kranj.example", Role.AGENT)
    login(client, "aljaz@kranj.example")
    assert getattr(client, method)(path).status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(client):
    response = client.get("/broadcasts/new")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_audit_log_is_for_admins_only(seeded, client):
    staff(seeded, "bojan@kranj.example", Role.BROADCASTER)
    login(client, "bojan@kranj.example")
    assert client.get("/admin/audit").status_code == 403


def test_a_broadcaster_saves_a_draft_in_two_languages(broadcaster, seeded):
    rt = seeded
    broadcast_id = _saved_id(_compose(broadcaster))
    with rt.session() as session:
        broadcast = session.get(Broadcast, broadcast_id)
        assert broadcast.status == "draft" and broadcast.created_by == "bojan@kranj.example"
        titles = {c.locale: c.title for c in broadcast.contents}
    assert titles == {"sl": "Zapora Koroške ceste", "en": "Koroška road closed"}
    page = broadcaster.get(f"/broadcasts/{broadcast_id}", headers={"Accept-Language": "en"})
    assert "Koroška cesta bo jutri zaprta" in page.text and "Approve and send" in page.text
    assert len(_audit(rt, "broadcast.draft")) == 1


def test_a_scheduled_time_is_local_time_in_ljubljana(broadcaster, seeded):
    broadcast_id = _saved_id(_compose(broadcaster, scheduled_at="2099-07-01T08:30"))
    with seeded.session() as session:
        scheduled = session.get(Broadcast, broadcast_id).scheduled_at
    assert scheduled.isoformat() == "2099-07-01T06:30:00"  # CEST is UTC+2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("title", "", "Write a title."),
        ("title", "x" * 201, "at most 200 characters"),
        ("title", "one\ntwo", "single line"),
        ("title_en", "y" * 201, "at most 200 characters"),
        ("topic", "no-such-topic", "Choose a topic."),
        ("areas", ["center", "atlantis"], "Choose areas from the list."),
        ("priority", "urgent", "Choose a priority."),
        ("channel_policy", "every", "Choose how to pick channels."),
        ("scheduled_at", "tomorrow", "Give the date and time"),
        ("scheduled_at", "2001-01-01T08:00", "The time has passed"),
        ("body_sl", "   ", "Write the text in this language."),
        ("body_en", "bad\0text", "cannot be sent"),
    ],
)
def test_bad_input_is_shown_next_to_its_field_and_nothing_is_saved(
    broadcaster, seeded, field, value, message
):
    response = _compose(broadcaster, **{field: value}, action="save")
    assert response.status_code == 422
    errors = re.findall(r'<p class="field-error" id="([^"]+)-error">([^<]+)</p>', response.text)
    assert [name for name, _ in errors] == [field]
    assert message in errors[0][1]
    assert f'id="{field}"' in response.text  # the field is there to fix
    assert _count(seeded, Broadcast) == 0


def test_compose_needs_a_csrf_token(broadcaster, seeded):
    data = compose_form()
    assert broadcaster.post("/broadcasts/new", data=data).status_code == 400
    assert _count(seeded, Broadcast) == 0


def test_refresh_preview_saves_nothing_and_shows_every_channel(broadcaster, seeded):
    response = _compose(broadcaster, action="preview", sms_transliterate="1")
    assert response.status_code == 200
    assert _count(seeded, Broadcast) == 0
    assert "Koroska cesta bo jutri zaprta" in response.text  # the SMS, in GSM-7
    assert response.text.count('<article class="preview"') == 8  # 2 languages x 4 channels
    assert "Korоska" not in response.text and "Koroska cesta" in response.text  # GSM-7 SMS


def test_titles_and_texts_are_escaped(broadcaster, seeded):
    evil = "<script>alert(1)</script>"
    broadcast_id = _saved_id(_compose(broadcaster, title=evil, body_sl=evil))
    page = broadcaster.get(f"/broadcasts/{broadcast_id}")
    assert evil not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_the_draft_shows_the_audience_by_channel_and_the_time_to_reach_them(broadcaster, seeded):
    residents(seeded, ANA, JOHN, MARKO)
    residents(seeded, ("Nina", "sl", {"email": "nina@example.org"}), area="planina")
    broadcast_id = _saved_id(_compose(broadcaster, channel_policy="all"))
    page = broadcaster.get(f"/broadcasts/{broadcast_id}", headers={"Accept-Language": "en"})
    rows = dict(re.findall(r'<tr data-channel="(\w+)">(.*?)</tr>', page.text, re.S))
    assert set(rows) == {"email", "sms"}  # Nina lives in Planina: not in this audience
    assert re.findall(r"<td>([^<]+)</td>", rows["email"])[:2] == ["2", "0"]
    assert re.findall(r"<td>([^<]+)</td>", rows["sms"])[:1] == ["2"]


def test_an_emergency_to_the_whole_city_shows_how_long_sms_alone_takes(
    broadcaster, seeded, settings
):
    residents(seeded, *[(f"R{i}", "sl", {"sms": f"+3864050{i:04d}"}) for i in range(60)])
    settings.sms_rate_per_s = 1.0
    broadcast_id = _saved_id(_compose(broadcaster, priority="emergency", areas=[]))
    page = broadcaster.get(f"/broadcasts/{broadcast_id}", headers={"Accept-Language": "en"})
    assert "EMERGENCY" in page.text and "emergency-banner" in page.text
    # 60 residents, two UCS-2 segments each (č), one segment a second: two minutes.
    assert "120 segments" in page.text
    assert "SMS alone takes 2 minutes to reach 60 residents" in page.text


def test_an_emergency_needs_a_second_person_with_the_approver_role(
    broadcaster, seeded, settings, smtp
):
    rt = seeded
    residents(rt, ("Ana", "sl", {"email": "ana@example.org"}))
    broadcast_id = _saved_id(_compose(broadcaster, priority="emergency"))
    page = broadcaster.get(f"/broadcasts/{broadcast_id}", headers={"Accept-Language": "en"})
    assert "must be approved by someone with the approver role" in page.text
    token = csrf_token(broadcaster, f"/broadcasts/{broadcast_id}")
    refused = broadcaster.post(f"/broadcasts/{broadcast_id}/approve", data={"csrf_token": token})
    assert refused.status_code == 303
    with rt.session() as session:
        assert session.get(Broadcast, broadcast_id).status == "draft"

    staff(rt, "ana.approver@kranj.example", Role.APPROVER)
    from tests.conftest import IsolatedClient

    rt_app = broadcaster.application
    rt_app.test_client_class = IsolatedClient
    approver = rt_app.test_client()
    login(approver, "ana.approver@kranj.example")
    token = csrf_token(approver, f"/broadcasts/{broadcast_id}")
    started = approver.post(f"/broadcasts/{broadcast_id}/approve", data={"csrf_token": token})
    assert started.headers["Location"].endswith(f"/broadcasts/{broadcast_id}/progress")
    work(rt)
    status = approver.get(f"/broadcasts/{broadcast_id}/progress.json").get_json()
    assert status["finished"] and status["percent"] == 100
    assert status["by_channel"] == {"email": {"sent": 1}}
    assert [e.actor for e in _audit(rt, "broadcast.approve")] == ["ana.approver@kranj.example"]


def test_the_author_of_an_emergency_cannot_approve_it_even_as_an_approver(seeded, client):
    staff(seeded, "ana.approver@kranj.example", Role.APPROVER)
    login(client, "ana.approver@kranj.example")
    broadcast_id = _saved_id(_compose(client, priority="emergency"))
    page = client.get(f"/broadcasts/{broadcast_id}", headers={"Accept-Language": "en"})
    assert "a second person, not its author" in page.text
    assert f'action="/broadcasts/{broadcast_id}/approve"' not in page.text


def test_approve_needs_csrf(broadcaster, seeded):
    broadcast_id = _saved_id(_compose(broadcaster))
    assert broadcaster.post(f"/broadcasts/{broadcast_id}/approve").status_code == 400
    with seeded.session() as session:
        assert session.get(Broadcast, broadcast_id).status == "draft"


def _sent(client, rt, **changes) -> int:
    broadcast_id = _saved_id(_compose(client, **changes))
    token = csrf_token(client, f"/broadcasts/{broadcast_id}")
    client.post(f"/broadcasts/{broadcast_id}/approve", data={"csrf_token": token})
    return broadcast_id


def test_progress_report_and_csv_export(broadcaster, seeded, smtp):
    rt = seeded
    residents(rt, ANA, JOHN)
    broadcast_id = _sent(broadcaster, rt)
    work(rt)
    with rt.session() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.channel == "email", Delivery.locale == "en")
            .values(status="failed", error="=HYPERLINK(550 mailbox unavailable)")
        )
    page = broadcaster.get(
        f"/broadcasts/{broadcast_id}/progress", headers={"Accept-Language": "en"}
    )
    assert '<progress id="progress-bar" max="100" value="100">' in page.text
    assert "<svg" in page.text and "Deliveries over time" in page.text
    assert "550 mailbox unavailable" in page.text
    export = broadcaster.get(f"/broadcasts/{broadcast_id}/deliveries.csv")
    assert export.status_code == 200 and export.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 2
    assert {r["status"] for r in rows} == {"sent", "failed"}
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["error"].startswith("'=")  # not a formula in a spreadsheet
    assert [e.target for e in _audit(rt, "broadcast.export")] == [f"broadcast:{broadcast_id}"]


def test_cancel_asks_first_then_stops_what_has_not_gone(broadcaster, seeded):
    rt = seeded
    residents(rt, ANA, JOHN)
    broadcast_id = _sent(broadcaster, rt, scheduled_at="2099-01-01T08:00")
    confirm = broadcaster.get(f"/broadcasts/{broadcast_id}/cancel")
    assert confirm.status_code == 200 and 'method="post"' in confirm.text
    assert broadcaster.post(f"/broadcasts/{broadcast_id}/cancel").status_code == 400  # no CSRF
    with rt.session() as session:
        assert session.get(Broadcast, broadcast_id).status == "scheduled"
    token = csrf_token(broadcaster, f"/broadcasts/{broadcast_id}/cancel")
    done = broadcaster.post(f"/broadcasts/{broadcast_id}/cancel", data={"csrf_token": token})
    assert done.status_code == 303
    with rt.session() as session:
        assert session.get(Broadcast, broadcast_id).status == "cancelled"
    assert len(_audit(rt, "broadcast.cancel")) == 1
    english = {"Accept-Language": "en"}
    again = broadcaster.post(
        f"/broadcasts/{broadcast_id}/cancel", data={"csrf_token": token}, headers=english
    )
    page = broadcaster.get(again.headers["Location"], headers=english)
    assert "already finished" in page.text


def test_unknown_notices_are_404(broadcaster):
    for path in ("/broadcasts/999", "/broadcasts/999/progress", "/broadcasts/999/progress.json"):
        assert broadcaster.get(path).status_code == 404


def test_the_audit_log_pages_newest_first(seeded, client):
    from hub.staff import audit

    staff(seeded, "admin@kranj.example", Role.ADMIN)
    with seeded.session() as session:
        for i in range(60):
            audit(session, "cli", "test.entry", f"n:{i}")
    login(client, "admin@kranj.example")
    first = client.get("/admin/audit")
    assert first.status_code == 200
    targets = re.findall(r"<td>(n:\d+)</td>", first.text)
    assert targets[:2] == ["n:59", "n:58"] and len(targets) == 50
    older = re.search(r'href="(/admin/audit\?before=\d+)"', first.text).group(1)
    rest = re.findall(r"<td>(n:\d+)</td>", client.get(older).text)
    assert rest == [f"n:{i}" for i in range(9, -1, -1)]
    assert client.get("/admin/audit?before=abc").status_code == 400


def test_the_preview_alone_for_the_script_that_refreshes_it_as_you_type(broadcaster, seeded):
    data = compose_form(csrf_token=csrf_token(broadcaster, "/broadcasts/new"), action="preview")
    fragment = broadcaster.post("/broadcasts/new", data=data, headers={"X-Hub-Fragment": "preview"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and 'id="preview"' in fragment.text
    assert _count(seeded, Broadcast) == 0
