"""The agents' inbox pages, through the Flask test client with the real stand-ins: the list
(filters, search, pages), a conversation and everything an agent does to it, roles, CSRF and
escaping. Every refused action changes nothing."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub import clock, conversations, inbox, portal_notices
from hub.models import Conversation, ConversationLabel, Message, Resident
from hub.staff import create_staff_user
from tests.helpers import work
from tests.test_inbox import PHONE, _resident, _sms_webhook
from tests.test_inbox_list import _residents, _write

PASSWORD = "correct horse battery"


def _staff(rt, email="agent@kranj.si", role="agent", name="Maja") -> int:
    with rt.session() as session:
        user = create_staff_user(session, email=email, role=role, password=PASSWORD)
        user.name = name
        session.flush()
        return user.id


def _sign_in(client, email="agent@kranj.si") -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, "sign-in failed"
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/language/en", data={"csrf_token": token}).status_code == 302


def _token(client) -> str:
    page = client.get("/inbox")
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def _post(client, path, **form):
    return client.post(path, data={"csrf_token": _token(client), **form})


@pytest.fixture
def agent(seeded, client) -> int:
    """An agent (Maja), signed in, the pages in English."""
    agent_id = _staff(seeded)
    _sign_in(client)
    return agent_id


def _conversation(rt, conversation_id) -> Conversation:
    with rt.session() as session:
        return session.get(Conversation, conversation_id)


def _messages(rt, conversation_id) -> list[tuple[str, str]]:
    with rt.session() as session:
        return [(m.direction, m.body) for m in conversations.messages_of(session, conversation_id)]


def _listed(response) -> list[str]:
    """The names in the list's rows, in order."""
    return re.findall(r'<a class="open" href="/inbox/\d+">([^<]+)</a>', response.text)


# -- the list ------------------------------------------------------------------------------------


def test_the_list_filters_and_searches(seeded, client, agent):
    rt = seeded
    _residents(rt, 4)
    first = _write(rt, 0, "Kje je obvoz?", minutes_ago=30)
    second = _write(rt, 1, "Smeti niso bile odpeljane", minutes_ago=20)
    _write(rt, 2, "Hvala za obvestilo", minutes_ago=10)
    fourth = _write(rt, 3, "Rešeno", minutes_ago=5)
    with rt.session() as session:
        inbox.assign(session, first, agent)
        inbox.set_labels(session, second, ["odpadki"])
        inbox.resolve(session, fourth)
    assert _listed(client.get("/inbox")) == ["Prebivalec 0", "Prebivalec 1", "Prebivalec 2"]
    assert _listed(client.get("/inbox?assignee=me")) == ["Prebivalec 0"]
    assert _listed(client.get("/inbox?assignee=none")) == ["Prebivalec 1", "Prebivalec 2"]
    assert _listed(client.get("/inbox?label=Odpadki")) == ["Prebivalec 1"]
    assert _listed(client.get("/inbox?q=obvoz")) == ["Prebivalec 0"]
    assert _listed(client.get("/inbox?status=resolved")) == ["Prebivalec 3"]
    assert len(_listed(client.get("/inbox?status=any"))) == 4
    empty = client.get("/inbox?channel=email")
    assert _listed(empty) == [] and "No conversations here." in empty.text
    # the form shows what it filters by (a bookmarkable GET form)
    page = client.get("/inbox?assignee=none&q=obvoz")
    assert '<option value="none" selected>' in page.text and 'value="obvoz"' in page.text


@pytest.mark.parametrize(
    "query, message",
    [
        ("status=nonsense", "unknown status nonsense"),
        ("assignee=everyone", "unknown assignee filter everyone"),
        ("channel=fax", "unknown channel fax"),
        ("after=garbage!", "the page cursor is not valid"),
    ],
)
def test_bad_filters_are_400_with_the_reason(seeded, client, agent, query, message):
    response = client.get(f"/inbox?{query}")
    assert response.status_code == 400
    assert message in response.text and "<form" in response.text


def test_the_list_shows_unread_waiting_priority_and_the_first_line(seeded, client, agent):
    rt = seeded
    _residents(rt, 4)
    one = _write(rt, 0, "\n  Prva vrstica\nDruga vrstica", minutes_ago=1)
    _write(rt, 3, "Zdaj", minutes_ago=0)
    _write(rt, 1, "Pozdravljeni", minutes_ago=12)
    _write(rt, 2, "Od včeraj", minutes_ago=26 * 60)
    clock.advance_to(clock.utcnow() + timedelta(seconds=10))
    with rt.session() as session:
        inbox.set_priority(session, one, "urgent")
    text = client.get("/inbox").text
    assert "waiting 1 minute<" in text and "waiting 12 minutes" in text
    assert "waiting 26 hours" in text and "waiting less than a minute" in text
    assert "Prva vrstica" in text and "Druga vrstica" not in text
    assert "1 unread" in text and "Urgent" in text and "SMS" in text
    client.get(f"/inbox/{one}")  # opening it marks it read
    assert client.get("/inbox").text.count("1 unread") == 3


def test_the_list_pages_with_an_older_link(seeded, client, agent):
    rt = seeded
    count = inbox.PAGE_SIZE + 2
    _residents(rt, count)
    for i in range(count):
        _write(rt, i, f"Vprašanje {i}", minutes_ago=count - i)
    first = client.get("/inbox?q=Vpra")
    assert len(_listed(first)) == inbox.PAGE_SIZE
    older = re.search(r'<a rel="next" href="([^"]+)"', first.text).group(1)
    older = html.unescape(older)
    assert "q=Vpra" in older  # the filters stay
    second = client.get(older)
    assert _listed(second) == [f"Prebivalec {count - 2}", f"Prebivalec {count - 1}"]
    assert 'rel="next"' not in second.text


# -- a conversation ------------------------------------------------------------------------------


def test_an_agent_answers_an_sms_and_the_twilio_standin_gets_it(seeded, standin, client, agent):
    rt = seeded
    _resident(rt, sms=PHONE, email="ana@example.org")
    _sms_webhook(client, rt, "Kdaj bo odvoz?")
    work(rt)
    with rt.session() as session:
        conversation_id = session.scalar(select(Conversation.id))
    page = client.get(f"/inbox/{conversation_id}")
    assert page.status_code == 200 and "Kdaj bo odvoz?" in page.text
    assert '<option value="sms">SMS (used last)</option>' in page.text
    assert "E-mail" in page.text  # the resident's other channel, to answer on
    response = _post(client, f"/inbox/{conversation_id}/reply", text="Jutri ob 7h.", channel="sms")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/inbox/{conversation_id}"
    work(rt)
    [answer] = standin.store.messages(channel="sms")
    assert (answer["to"], answer["body"]) == (PHONE, "Jutri ob 7h.")
    page = client.get(f"/inbox/{conversation_id}")
    assert "Answer by Maja" in page.text and "Sent" in page.text
    assert _conversation(rt, conversation_id).status == "pending"


def test_a_question_from_the_portal_is_answered_in_the_portal(seeded, client, agent):
    rt = seeded
    _resident(rt, email="ana@example.org")
    with rt.session() as session:
        resident_id = session.scalar(select(Resident.id))
        asked = portal_notices.write(
            session, resident_id, "Kje je zbirni center?", default_locale="sl"
        )
    page = client.get(f"/inbox/{asked.conversation_id}")
    assert '<option value="web">' in page.text
    _post(client, f"/inbox/{asked.conversation_id}/reply", text="Na Savski cesti.", channel="web")
    work(rt)
    with rt.session() as session:
        thread = portal_notices.thread_of(session, resident_id)
    assert [(m.direction, m.body, m.status) for m in thread] == [
        ("in", "Kje je zbirni center?", "received"),
        ("out", "Na Savski cesti.", "delivered"),
    ]


def test_an_answer_can_go_on_another_channel_of_the_resident(seeded, standin, smtp, client, agent):
    rt = seeded
    _resident(rt, sms=PHONE, email="ana@example.org")
    _sms_webhook(client, rt, "Pošljite po e-pošti, prosim.")
    work(rt)
    _post(client, "/inbox/1/reply", text="Seveda, tukaj je.", channel="email")
    work(rt)
    assert standin.store.count("sms") == 0
    [mail] = smtp.messages(channel="email")
    assert mail["to"] == "ana@example.org" and "Seveda, tukaj je." in mail["body"]


def test_empty_too_long_and_misdirected_answers_are_refused(seeded, standin, client, agent):
    rt = seeded
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, "Halo?")
    work(rt)
    empty = _post(client, "/inbox/1/reply", text="   ", channel="sms")
    assert empty.status_code == 400 and "the reply is empty" in empty.text
    long_text = "Dolgo besedilo. " * 101  # 1,616 characters: more than one SMS may carry
    too_long = _post(client, "/inbox/1/reply", text=long_text, channel="sms")
    assert too_long.status_code == 400
    assert "an answer on sms has at most 1600 characters" in too_long.text
    assert long_text.strip() in too_long.text  # what the agent typed is still there
    no_address = _post(client, "/inbox/1/reply", text="Dober dan", channel="telegram")
    assert no_address.status_code == 400 and "has no address on telegram" in no_address.text
    assert _post(client, "/inbox/1/reply", text="x", channel="push").status_code == 400
    assert _messages(rt, 1) == [("in", "Halo?")]
    work(rt)
    assert standin.store.count() == 0


def test_a_note_is_never_sent(seeded, standin, client, agent):
    rt = seeded
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, "Halo?")
    work(rt)
    response = _post(client, "/inbox/1/note", text="Pokliči jo jutri.")
    assert response.status_code == 302
    work(rt)
    assert standin.store.count() == 0
    assert _messages(rt, 1) == [("in", "Halo?"), ("note", "Pokliči jo jutri.")]
    page = client.get("/inbox/1").text
    assert "Private note, not sent" in page and "Pokliči jo jutri." in page
    assert "Pokliči" not in client.get("/inbox").text  # the list shows what the resident saw
    assert _post(client, "/inbox/1/note", text=" ").status_code == 400


def test_a_failed_answer_shows_the_error_and_retry_sends_it(seeded, standin, client, agent):
    rt = seeded
    _resident(rt, sms=PHONE)
    _sms_webhook(client, rt, "Halo?")
    work(rt)
    standin.twilio.control_fail(
        PHONE, 21408, message="Permission to send an SMS has not been enabled"
    )
    _post(client, "/inbox/1/reply", text="Dober dan.", channel="sms")
    work(rt)
    page = client.get("/inbox/1").text
    assert "Not sent. The provider said:" in page and "21408" in page
    with rt.session() as session:
        message_id = session.scalar(select(Message.id).where(Message.direction == "out"))
    assert f'action="/inbox/1/messages/{message_id}/retry"' in page
    del standin.twilio.failures[PHONE]
    assert _post(client, f"/inbox/1/messages/{message_id}/retry").status_code == 302
    work(rt)
    assert [m["body"] for m in standin.store.messages(channel="sms")] == ["Dober dan."]
    assert "Not sent" not in client.get("/inbox/1").text
    # a sent message cannot be retried, nor one of another conversation
    again = _post(client, f"/inbox/1/messages/{message_id}/retry")
    assert again.status_code == 400 and "only a failed message" in again.text
    assert _post(client, f"/inbox/2/messages/{message_id}/retry").status_code == 404


def test_status_assignment_labels_and_priority_through_the_forms(seeded, client, agent):
    rt = seeded
    colleague = _staff(rt, email="jure@kranj.si", name="Jure")
    _residents(rt, 1)
    cid = _write(rt, 0, "Vprašanje", minutes_ago=5)
    base = f"/inbox/{cid}"
    assert _post(client, f"{base}/assign", to="me").status_code == 302
    assert _conversation(rt, cid).assignee_id == agent
    _post(client, f"{base}/assign", to=str(colleague))
    assert _conversation(rt, cid).assignee_id == colleague
    assert "Assigned to: Jure" in client.get(base).text
    _post(client, f"{base}/assign", to="")
    assert _conversation(rt, cid).assignee_id is None
    assert _post(client, f"{base}/assign", to="999").status_code == 400
    assert _post(client, f"{base}/assign", to="someone").status_code == 400
    _post(client, f"{base}/labels", label="Odpadki")
    _post(client, f"{base}/labels", label="nujno")
    _post(client, f"{base}/labels/remove", label="nujno")
    with rt.session() as session:
        assert inbox.labels_of(session, cid) == ["odpadki"]
    assert _post(client, f"{base}/labels", label="x" * 65).status_code == 400
    assert _post(client, f"{base}/priority", priority="high").status_code == 302
    assert _post(client, f"{base}/priority", priority="whenever").status_code == 400
    assert _conversation(rt, cid).priority == "high"
    assert _post(client, f"{base}/resolve").status_code == 302
    assert _conversation(rt, cid).status == "resolved"
    assert "Reopen" in client.get(base).text
    _post(client, f"{base}/reopen")
    assert _conversation(rt, cid).status == "open"
    # from the list: the row's button sends the agent back to the list they were on
    back = _post(client, f"{base}/resolve", next="/inbox?status=open")
    assert back.headers["Location"] == "/inbox?status=open"
    elsewhere = _post(client, f"{base}/reopen", next="//evil.example/")
    assert elsewhere.headers["Location"] == base


def test_snooze_until_a_local_time_or_until_they_write(seeded, client, agent):
    rt = seeded
    _residents(rt, 1)
    cid = _write(rt, 0, "Vprašanje", minutes_ago=5)
    clock.advance_to(datetime(2030, 1, 10, 12, 0))
    response = _post(client, f"/inbox/{cid}/snooze", until="2030-01-15T10:00")
    assert response.status_code == 302
    snoozed = _conversation(rt, cid)
    # 10:00 in Kranj in winter (CET) is 09:00 UTC; in summer (CEST) 08:00
    assert (snoozed.status, snoozed.snoozed_until) == ("snoozed", datetime(2030, 1, 15, 9, 0))
    _post(client, f"/inbox/{cid}/snooze", until="2030-07-01T10:00")
    assert _conversation(rt, cid).snoozed_until == datetime(2030, 7, 1, 8, 0)
    page = client.get(f"/inbox/{cid}").text
    assert "Snoozed" in page and "until 7/1/30, 10:00" in page.replace("\u202f", " ")
    _post(client, f"/inbox/{cid}/snooze", mode="reply")
    assert _conversation(rt, cid).snoozed_until is None
    assert "until the resident writes" in client.get(f"/inbox/{cid}").text


@pytest.mark.parametrize(
    "until, reason",
    [
        ("tomorrow", "enter the date and time to snooze until"),
        ("", "enter the date and time to snooze until"),
        ("2030-01-15T10:00+01:00", "enter the date and time to snooze until"),
        ("2029-12-31T10:00", "snooze until a time in the future"),
    ],
)
def test_a_bad_snooze_time_is_400_with_the_form_again(seeded, client, agent, until, reason):
    rt = seeded
    _residents(rt, 1)
    cid = _write(rt, 0, "Vprašanje", minutes_ago=5)
    clock.advance_to(datetime(2030, 1, 10, 12, 0))
    response = _post(client, f"/inbox/{cid}/snooze", until=until)
    assert response.status_code == 400
    assert f'<p class="error" id="snooze-error">{reason}</p>' in response.text
    assert f'name="until" type="datetime-local" required value="{html.escape(until)}"' in (
        response.text
    )
    assert _conversation(rt, cid).status == "open"


def test_a_canned_answer_fills_the_answer_box(seeded, client, agent):
    rt = seeded
    _residents(rt, 2)  # resident 0 writes English, 1 Slovenian
    cid = _write(rt, 1, "Kdaj?", minutes_ago=1)
    saved = _post(client, "/inbox/canned", shortcut="Hvala", locale="sl",
                  body="Pozdravljeni, {name}! Lep pozdrav, {agent}")  # fmt: skip
    assert saved.status_code == 302
    _post(client, "/inbox/canned", shortcut="hvala", locale="en", body="Hello {name}")
    listing = client.get("/inbox/canned").text
    assert "Pozdravljeni, {name}!" in listing and "Hello {name}" in listing
    page = client.get(f"/inbox/{cid}")
    assert '<option value="hvala">hvala (en, sl)</option>' in page.text
    filled = client.get(f"/inbox/{cid}?canned=hvala")
    assert ">Pozdravljeni, Prebivalec 1! Lep pozdrav, Maja</textarea>" in filled.text
    as_json = client.get(f"/inbox/{cid}/canned?shortcut=hvala")
    assert as_json.json == {"text": "Pozdravljeni, Prebivalec 1! Lep pozdrav, Maja"}
    assert client.get(f"/inbox/{cid}?canned=missing").status_code == 400
    assert client.get(f"/inbox/{cid}/canned?shortcut=missing").status_code == 400
    bad = _post(client, "/inbox/canned", shortcut="", locale="sl", body="x")
    assert bad.status_code == 400 and "needs a shortcut and a text" in bad.text
    assert _post(client, "/inbox/canned", shortcut="x", locale="xx", body="x").status_code == 400


def test_an_unknown_sender_is_linked_or_made_a_resident(seeded, client, agent):
    rt = seeded
    [known] = _residents(rt, 1)
    with rt.session() as session:
        first = conversations.receive(session, "sms", "+38641000001", "Halo", default_locale="sl")
        second = conversations.receive(session, "sms", "+38641000002", "Živjo", default_locale="sl")
    page = client.get(f"/inbox/{first.conversation_id}").text
    assert "unknown sender" in page and "Create a resident" in page
    found = client.get(f"/inbox/{first.conversation_id}?find=Prebivalec").text
    assert f'name="resident_id" value="{known}"' in found
    assert "Nobody found." in client.get(f"/inbox/{first.conversation_id}?find=Nikogar").text
    _post(client, f"/inbox/{first.conversation_id}/link", resident_id=str(known))
    assert _conversation(rt, first.conversation_id).resident_id == known
    refused = _post(client, f"/inbox/{second.conversation_id}/resident", name=" ", locale="sl")
    assert refused.status_code == 400 and "a resident needs a name" in refused.text
    assert _post(client, f"/inbox/{second.conversation_id}/resident", name="Jana",
                 locale="sl", area="nowhere").status_code == 400  # fmt: skip
    created = _post(client, f"/inbox/{second.conversation_id}/resident", name="Jana Kos",
                    locale="en", area="planina")  # fmt: skip
    assert created.status_code == 302
    with rt.session() as session:
        jana = session.scalar(select(Resident).where(Resident.name == "Jana Kos"))
        assert jana.locale == "en"
    page = client.get(f"/inbox/{second.conversation_id}").text
    assert "Jana Kos" in page and "Language: English" in page and "+38641000002" in page


def test_the_resident_and_the_notice_they_answer_are_shown(seeded, standin, client, agent):
    from tests.test_inbox import _notice

    rt = seeded
    _resident(rt, sms=PHONE)
    broadcast_id = _notice(rt, title="Zapora Koroške ceste")
    work(rt)
    _sms_webhook(client, rt, "Kdaj bo odprta?")
    work(rt)
    page = client.get("/inbox/1").text
    assert f'href="/notices/{broadcast_id}">Zapora Koroške ceste</a>' in page
    assert "Language: Slovenian" in page
    assert "Road works and closures in Center" in page
    assert "SMS: +38640111222" in page


# -- safety ------------------------------------------------------------------------------------


def test_roles_anonymous_to_sign_in_broadcaster_refused(seeded, client):
    rt = seeded
    _residents(rt, 1)
    cid = _write(rt, 0, "Halo", minutes_ago=1)
    for path in ("/inbox", f"/inbox/{cid}", "/inbox/canned", f"/inbox/{cid}/messages"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path
    _staff(rt, email="urska@kranj.si", role="broadcaster")
    _sign_in(client, "urska@kranj.si")
    assert client.get("/inbox").status_code == 403
    assert client.get(f"/inbox/{cid}").status_code == 403
    assert 'href="/inbox"' not in client.get("/login").text  # no link to a page they may not open
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    refused = client.post(f"/inbox/{cid}/resolve", data={"csrf_token": token})
    assert refused.status_code == 403
    assert _conversation(rt, cid).status == "open"


def test_an_admin_may_use_the_inbox(seeded, client):
    _staff(seeded, email="admin@kranj.si", role="admin")
    _sign_in(client, "admin@kranj.si")
    page = client.get("/inbox")
    assert page.status_code == 200 and '<a href="/inbox">Inbox</a>' in page.text


def test_a_post_without_csrf_is_refused_and_changes_nothing(seeded, client, agent):
    rt = seeded
    _residents(rt, 1)
    cid = _write(rt, 0, "Halo", minutes_ago=1)
    assert client.post(f"/inbox/{cid}/resolve").status_code == 400
    assert client.post(f"/inbox/{cid}/reply", data={"text": "x"}).status_code == 400
    assert client.post(f"/inbox/{cid}/resolve", data={"csrf_token": "forged"}).status_code == 400
    assert _conversation(rt, cid).status == "open"
    assert _messages(rt, cid) == [("in", "Halo")]


def test_an_unknown_conversation_is_404(seeded, client, agent):
    assert client.get("/inbox/999").status_code == 404
    assert client.get("/inbox/999/messages").status_code == 404
    assert client.get("/inbox/999/canned?shortcut=x").status_code == 404
    for action in ("reply", "note", "resolve", "reopen", "assign", "snooze", "priority", "link"):
        assert _post(client, f"/inbox/999/{action}", text="x").status_code == 404, action
    with seeded.session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0


def test_a_residents_markup_is_shown_as_text(seeded, client, agent):
    rt = seeded
    _residents(rt, 1)
    cid = _write(rt, 0, '<script>alert("x")</script><b>hi</b>', minutes_ago=1)
    with rt.session() as session:
        inbox.set_labels(session, cid, ["<i>label</i>"])
    for path in ("/inbox", f"/inbox/{cid}", f"/inbox/{cid}/messages", "/inbox/rows"):
        text = client.get(path).text
        assert "<script>alert" not in text and "<b>hi</b>" not in text, path
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text, path
    assert "&lt;i&gt;label&lt;/i&gt;" in client.get(f"/inbox/{cid}").text


# -- live updates ------------------------------------------------------------------------------


def test_fragments_and_the_event_stream_for_live_updates(seeded, standin, client, app, agent):
    rt = seeded
    app.config["HUB_EVENTS_STREAM_S"] = 5
    _residents(rt, 1)
    cid = _write(rt, 0, "Prvo", minutes_ago=1)
    page = client.get(f"/inbox/{cid}").text
    assert 'data-events="/inbox/events"' in page
    assert f'data-refresh="/inbox/{cid}/messages"' in page and "Refresh" in page
    response = client.get("/inbox/events", buffered=False)
    assert response.mimetype == "text/event-stream"
    events = (chunk.decode() for chunk in response.response)
    assert next(events).startswith("retry:")
    _post(client, f"/inbox/{cid}/note", text="Vidim.")
    event = next(events)
    assert event.startswith("event: message") and f'"conversation_id": {cid}' in event
    response.close()
    fragment = client.get(f"/inbox/{cid}/messages").text
    assert "Vidim." in fragment and "<html" not in fragment
    rows = client.get("/inbox/rows?status=open").text
    assert "Prebivalec 0" in rows and "<html" not in rows


# -- the domain functions the pages use ---------------------------------------------------------


def test_summaries_labels_reopen_and_search(seeded):
    rt = seeded
    ids = _residents(rt, 2)
    cid = _write(rt, 0, "Prva vrstica\nDruga", minutes_ago=2)
    with rt.session() as session:
        inbox.add_note(session, cid, "zasebno", author_id=None)
        inbox.add_label(session, cid, " Nujno ")
        inbox.add_label(session, cid, "odpadki")
        inbox.remove_label(session, cid, "NUJNO")
        with pytest.raises(conversations.ConversationError):
            inbox.add_label(session, cid, "  ")
        [summary] = inbox.summaries(session, [session.get(Conversation, cid)]).values()
        assert summary == inbox.Summary("Prebivalec 0", "Prva vrstica", ["odpadki"])
        assert [r.id for r in inbox.find_residents(session, "+38640110001")] == [ids[1]]
        assert [r.id for r in inbox.find_residents(session, "valec 0")] == [ids[0]]
        assert inbox.find_residents(session, "%") == []
        inbox.resolve(session, cid)
        inbox.reopen(session, cid)
        assert session.get(Conversation, cid).status == "open"
        assert session.scalar(select(func.count()).select_from(ConversationLabel)) == 1
        with pytest.raises(conversations.ConversationError):
            inbox.add_note(session, cid, "x" * (inbox.MAX_NOTE_CHARS + 1), author_id=None)
    assert inbox.first_line("a" * 200).endswith("…") and len(inbox.first_line("a" * 200)) == 120
