"""The resident portal: passwordless sign-up and sign-in over the real SMTP and Twilio
stand-ins, preferences that change who gets the next notice, contact points, answering a
notice into the agents' inbox, and a resident's own data (export, delete)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub import clock, outbound, providers
from hub.broadcasts import NoticeDraft, send_notice
from hub.conversations import reply
from hub.inbox import InboxFilter, add_note, inbox
from hub.models import (
    Area,
    ConsentRecord,
    ContactPoint,
    Delivery,
    InboundEvent,
    Message,
    OneTimeCode,
    Resident,
    Role,
    Subscription,
    Topic,
)
from hub.residents import ResidentRow, import_rows
from hub.staff import create_staff_user
from tests.helpers import work


@pytest.fixture(autouse=True)
def english(client):
    """The pages are read in English here (Slovenian is the default, checked by its own tests)."""
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"


EMAIL = "Ana.Novak@Example.SI"
NORMALISED = "Ana.Novak@example.si"
PHONE = "041 222 333"
E164 = "+38641222333"


def _token(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _post(client, path: str, data: dict | None = None, form_page: str = "/me/signin"):
    """POST a form as a browser would: with the CSRF token of the page it came from."""
    token = _token(client.get(form_page).text)
    return client.post(path, data={**(data or {}), "csrf_token": token})


def _code_in(body: str) -> str:
    return re.search(r"\b(\d{6})\b", body).group(1)


def _link_in(body: str) -> str:
    return re.search(r"http://hub\.test(/me/link/[A-Za-z0-9_-]+)", body).group(1)


def _ask_code(client, rt, address=EMAIL) -> str:
    response = _post(client, "/me/signin", {"address": address})
    assert response.status_code == 302, response.text
    work(rt)
    return response


def _last_mail(smtp, to=NORMALISED) -> dict:
    return smtp.messages(channel="email", to=to)[0]


def _sign_up(client, rt, smtp, address=EMAIL, to=NORMALISED) -> int:
    _ask_code(client, rt, address)
    code = _code_in(_last_mail(smtp, to)["body"])
    response = _post(client, "/me/signin/code", {"code": code}, "/me/signin/code")
    assert response.status_code == 302 and response.headers["Location"] == "/me/"
    with rt.session() as session:
        return session.scalar(select(ContactPoint.resident_id).where(ContactPoint.address == to))


def _ids(rt, model, *slugs) -> list[int]:
    with rt.session() as session:
        return [session.scalar(select(model.id).where(model.slug == s)) for s in slugs]


def _choose(client, **fields):
    data = {"locale": "sl", "name": "", "quiet_start": "", "quiet_end": "", **fields}
    return _post(client, "/me/preferences", data, "/me/preferences")


def _read_in_english(client) -> None:
    """Choosing Slovenian notices makes the portal Slovenian; the checks here read English."""
    with client.session_transaction() as browser_session:
        browser_session["locale"] = "en"


def _notice(rt, topic="road-works", areas=("center",), priority="normal", en=None) -> int:
    bodies = {"sl": "Zapora Koroške ceste od 8. do 16. ure."}
    titles = {}
    if en:
        bodies["en"], titles["en"] = en, "Koroška road closed"
    draft = NoticeDraft("Zapora Koroške ceste", topic, areas, priority, "preferred", bodies, titles)
    broadcast_id = send_notice(rt, draft, actor="test")
    work(rt)
    return broadcast_id


def _deliveries(rt, broadcast_id: int) -> list[tuple[int, str, str]]:
    with rt.session() as session:
        return session.execute(
            select(Delivery.resident_id, Delivery.channel, Delivery.locale).where(
                Delivery.broadcast_id == broadcast_id
            )
        ).all()


def _imported(rt, name="Bojan", email="bojan@example.si") -> int:
    with rt.session() as session:
        area_id, topic_id = _ids(rt, Area, "center")[0], _ids(rt, Topic, "road-works")[0]
        row = ResidentRow(name, "sl", area_id, [topic_id], {"email": email}, ["email"])
        import_rows(session, [row])
        return session.scalar(select(Resident.id).order_by(Resident.id.desc()))


# -- sign-up and sign-in ----------------------------------------------------------------------


def test_sign_up_by_email_with_the_code_from_the_smtp_standin(seeded, smtp, client):
    rt = seeded
    assert client.get("/me/").status_code == 302  # the portal needs a signed-in resident
    _post(client, "/language/en", {"next": "/me/signin"})
    resident_id = _sign_up(client, rt, smtp)
    mail = _last_mail(smtp)
    assert mail["subject"] == "Your sign-in code for Mestni glas"
    assert "valid for 10 minutes" in mail["body"]
    page = client.get("/me/")
    assert page.status_code == 200 and "My notices" in page.text
    with rt.session() as session:
        resident = session.get(Resident, resident_id)
        contact = session.scalar(
            select(ContactPoint).where(ContactPoint.resident_id == resident_id)
        )
        scopes = set(
            session.scalars(
                select(ConsentRecord.scope).where(
                    ConsentRecord.resident_id == resident_id, ConsentRecord.source == "portal"
                )
            )
        )
        code = session.scalar(select(OneTimeCode))
    assert resident.locale == "en"  # the language the resident signed up in
    assert (contact.channel, contact.address, contact.verified) == ("email", NORMALISED, True)
    assert scopes == {"notices", "channel:email"}
    # Only hashes are kept: the code is nowhere in the database.
    assert _code_in(mail["body"]) not in code.code_hash and code.used_at is not None


def test_an_existing_resident_signs_in_to_their_own_account(seeded, smtp, client):
    rt = seeded
    resident_id = _imported(rt)
    assert _sign_up(client, rt, smtp, "bojan@example.si", "bojan@example.si") == resident_id
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(Resident)) == 1


def test_sign_in_by_sms_code_from_the_twilio_standin(seeded, standin, client):
    rt = seeded
    _ask_code(client, rt, PHONE)
    sms = standin.store.messages(channel="sms", to=E164)[0]
    assert "Mestni glas" in sms["body"]
    response = _post(client, "/me/signin/code", {"code": _code_in(sms["body"])}, "/me/signin/code")
    assert response.status_code == 302
    with rt.session() as session:
        assert session.scalar(select(ContactPoint.channel).where(ContactPoint.address == E164))


def test_wrong_expired_and_reused_codes_are_refused(seeded, smtp, client):
    rt = seeded
    _ask_code(client, rt)
    code = _code_in(_last_mail(smtp)["body"])
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for bad in (wrong, "abc", ""):
        refused = _post(client, "/me/signin/code", {"code": bad}, "/me/signin/code")
        assert refused.status_code == 422
        assert "The code is wrong or no longer valid" in refused.text
    assert client.get("/me/").status_code == 302  # still not signed in
    assert _post(client, "/me/signin/code", {"code": code}, "/me/signin/code").status_code == 302
    with rt.session() as session:
        code_id = session.scalar(select(OneTimeCode.id))
    # Used once: the same code (or its link) does nothing a second time.
    _post(client, "/me/signout", form_page="/me/")
    with client.session_transaction() as browser:
        browser["portal_sign_in_code"] = code_id
    again = _post(client, "/me/signin/code", {"code": code}, "/me/signin/code")
    assert again.status_code == 422
    assert client.post(_link_in(_last_mail(smtp)["body"])).status_code in (400, 404)
    # Expired: ten minutes later a fresh code is refused too.
    _ask_code(client, rt)
    fresh = _code_in(_last_mail(smtp)["body"])
    clock.advance_to(clock.utcnow() + timedelta(minutes=10, seconds=1))
    assert _post(client, "/me/signin/code", {"code": fresh}, "/me/signin/code").status_code == 422
    assert client.get("/me/").status_code == 302


def test_five_wrong_codes_kill_the_code(seeded, smtp, client):
    rt = seeded
    _ask_code(client, rt)
    code = _code_in(_last_mail(smtp)["body"])
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        _post(client, "/me/signin/code", {"code": wrong}, "/me/signin/code")
    assert _post(client, "/me/signin/code", {"code": code}, "/me/signin/code").status_code == 422


def test_the_link_signs_in_once_and_only_when_its_button_is_pressed(seeded, smtp, client, app):
    rt = seeded
    _ask_code(client, rt)
    path = _link_in(_last_mail(smtp)["body"])
    other = app.test_client()  # the link may be opened in another browser
    page = other.get(path)
    assert page.status_code == 200 and "<button" in page.text
    assert other.get("/me/").status_code == 302  # opening it (a mail scanner) signs in nobody
    assert other.post(path, data={"csrf_token": _token(page.text)}).status_code == 302
    assert other.get("/me/").status_code == 200
    third = app.test_client()
    assert third.get(path).status_code == 404
    assert third.get("/me/link/not-a-token").status_code == 404


def test_a_head_request_for_the_link_signs_in_nobody(seeded, smtp, client, app):
    """Mail scanners send HEAD too: it must not use up the link (CSRF does not cover HEAD)."""
    _ask_code(client, seeded)
    path = _link_in(_last_mail(smtp)["body"])
    scanner = app.test_client()
    assert scanner.head(path).status_code == 200
    assert scanner.get("/me/").status_code == 302
    page = client.get(path)
    assert client.post(path, data={"csrf_token": _token(page.text)}).status_code == 302


def test_asking_for_codes_is_rate_limited_per_address_and_per_client(seeded, client):
    for _ in range(5):
        assert _post(client, "/me/signin", {"address": EMAIL}).status_code == 302
    limited = _post(client, "/me/signin", {"address": EMAIL})
    assert limited.status_code == 429 and "Too many codes" in limited.text
    # Every request counts for the client, the refused one too: 14 more reach its limit of 20.
    for n in range(14):
        assert _post(client, "/me/signin", {"address": f"r{n}@example.si"}).status_code == 302
    assert _post(client, "/me/signin", {"address": "one-more@example.si"}).status_code == 429
    with seeded.session() as session:
        assert session.scalar(select(func.count()).select_from(OneTimeCode)) == 19


def test_the_pages_say_nothing_about_whether_an_address_is_known(seeded, client, app):
    rt = seeded  # `client` makes app.test_client() isolate its requests' contexts
    _imported(rt, email="known@example.si")

    def pages_for(address: str) -> list:
        browser = app.test_client()
        asked = _post(browser, "/me/signin", {"address": address})
        code_page = browser.get("/me/signin/code")
        wrong = _post(browser, "/me/signin/code", {"code": "000000"}, "/me/signin/code")
        shown = [
            re.sub(r'value="[^"]+"', "", r.text.replace(address, "ADDRESS"))
            for r in (code_page, wrong)
        ]
        return [asked.status_code, asked.headers["Location"], code_page.status_code, *shown]

    assert pages_for("known@example.si") == pages_for("unknown@example.si")


def test_bad_addresses_are_refused_and_nothing_is_stored(seeded, client):
    for bad in ("", "not an address", "ana@", "12"):
        response = _post(client, "/me/signin", {"address": bad})
        assert response.status_code == 422
        assert 'role="alert"' in response.text
    assert client.post("/me/signin", data={"address": EMAIL}).status_code == 400  # no CSRF
    with seeded.session() as session:
        assert session.scalar(select(func.count()).select_from(OneTimeCode)) == 0


def test_a_resident_is_never_staff_and_staff_are_not_residents(seeded, smtp, client, app):
    rt = seeded
    _sign_up(client, rt, smtp)
    assert client.get("/").status_code == 302  # the staff console sends them to staff sign-in
    assert "/login" in client.get("/").headers["Location"]
    with rt.session() as session:
        create_staff_user(session, email="urska@kranj.example", role=Role.ADMIN, password="x" * 12)
    staff = app.test_client()
    page = staff.get("/login")
    staff.post(
        "/login",
        data={
            "email": "urska@kranj.example",
            "password": "x" * 12,
            "csrf_token": _token(page.text),
        },
    )
    assert staff.get("/").status_code == 200
    assert staff.get("/me/").status_code == 302


# -- preferences ------------------------------------------------------------------------------


def test_preferences_change_who_gets_the_next_notice(seeded, smtp, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    (center,) = _ids(rt, Area, "center")
    roads, waste = _ids(rt, Topic, "road-works", "waste-collection")
    assert _choose(client, area=center, topics=[roads]).status_code == 302
    first = _notice(rt)
    assert [(r, c) for r, c, _ in _deliveries(rt, first)] == [(resident_id, "email")]
    assert _last_mail(smtp)["subject"] == "Zapora Koroške ceste"
    assert _choose(client, area=center, topics=[waste]).status_code == 302
    second = _notice(rt)
    assert _deliveries(rt, second) == []
    _post(client, "/language/en", {"next": "/me/"}, "/me/")
    page = client.get("/me/preferences")
    assert f'id="topic-{waste}" name="topics" value="{waste}" checked' in page.text
    assert "Emergency notices for where you live" in page.text  # always: the page says so
    with rt.session() as session:
        withdrawn = session.scalar(
            select(ConsentRecord.scope).where(ConsentRecord.action == "withdrawn")
        )
    assert withdrawn == "topic:road-works"


def test_other_areas_and_emergencies(seeded, smtp, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    center, britof = _ids(rt, Area, "center", "britof")
    (events,) = _ids(rt, Topic, "events")
    _choose(client, area=center, topics=[events], areas=[britof])
    assert _deliveries(rt, _notice(rt, "events", ("britof",))) != []  # an area they follow
    assert _deliveries(rt, _notice(rt, "road-works", ("center",))) == []  # a topic they do not
    emergency = _notice(rt, "road-works", ("center",), priority="emergency")
    assert [r for r, _, _ in _deliveries(rt, emergency)] == [resident_id]


def test_the_language_chosen_is_the_language_of_the_notices(seeded, smtp, client):
    rt = seeded
    _sign_up(client, rt, smtp)
    (center,) = _ids(rt, Area, "center")
    (roads,) = _ids(rt, Topic, "road-works")
    _choose(client, area=center, topics=[roads], locale="en")
    assert 'lang="en"' in client.get("/me/preferences").text  # the portal follows too
    broadcast_id = _notice(rt, en="Koroška road is closed from 8 to 16.")
    assert [loc for _, _, loc in _deliveries(rt, broadcast_id)] == ["en"]
    mail = _last_mail(smtp)
    assert mail["subject"] == "Koroška road closed"
    assert "Koroška road is closed" in mail["body"]


def test_quiet_hours_hold_a_notice_until_they_end_but_not_an_emergency(seeded, smtp, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    (center,) = _ids(rt, Area, "center")
    (roads,) = _ids(rt, Topic, "road-works")
    _choose(client, area=center, topics=[roads], quiet_start="11:30", quiet_end="13:00")
    with rt.session() as session:
        resident = session.get(Resident, resident_id)
        assert (resident.quiet_start, resident.quiet_end) == (11 * 60 + 30, 13 * 60)
    clock.advance_to(datetime(2030, 1, 15, 11, 0))  # 12:00 in Kranj (CET)
    normal, emergency = _notice(rt), _notice(rt, priority="emergency")
    with rt.session() as session:
        held = session.scalar(select(Delivery).where(Delivery.broadcast_id == normal))
        urgent = session.scalar(select(Delivery).where(Delivery.broadcast_id == emergency))
    assert (held.status, held.not_before) == ("pending", datetime(2030, 1, 15, 12, 0))
    assert (urgent.status, urgent.not_before) == ("sent", None)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"locale": "de"}, "Choose one of the languages offered."),
        ({"topics": ["999999"], "area": "AREA"}, "One of the topics chosen does not exist."),
        ({"areas": ["999999"]}, "One of the areas chosen does not exist."),
        ({"topics": ["TOPIC"]}, "Choose your local community or at least one area to follow."),
        ({"quiet_start": "22:00", "area": "AREA"}, "Give both when quiet hours start"),
        ({"quiet_start": "25:00", "quiet_end": "07:00"}, "Quiet hours need two different times"),
        ({"quiet_start": "07:00", "quiet_end": "07:00"}, "Quiet hours need two different times"),
        ({"area": "center"}, "The form was not filled in as expected."),
        ({"name": "x" * 201}, "The name is too long"),
    ],
)
def test_bad_preferences_are_refused_and_nothing_changes(seeded, smtp, client, fields, message):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    (center,) = _ids(rt, Area, "center")
    (roads,) = _ids(rt, Topic, "road-works")
    _choose(client, area=center, topics=[roads], name="Ana")
    _read_in_english(client)
    placeholders = {"AREA": str(center), "TOPIC": str(roads)}
    fields = {
        k: [placeholders.get(x, x) for x in v] if isinstance(v, list) else placeholders.get(v, v)
        for k, v in fields.items()
    }
    response = _choose(client, **{"locale": "en", **fields})
    assert response.status_code == 422
    assert message in response.text
    with rt.session() as session:
        resident = session.get(Resident, resident_id)
        pairs = session.execute(
            select(Subscription.topic_id, Subscription.area_id).where(
                Subscription.resident_id == resident_id
            )
        ).all()
    assert (resident.name, resident.locale, resident.area_id) == ("Ana", "sl", center)
    assert pairs == [(roads, center)]


# -- contact points ---------------------------------------------------------------------------


def test_add_a_phone_by_code_order_and_remove_addresses(seeded, smtp, standin, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    assert _post(client, "/me/contacts/add", {"address": PHONE}, "/me/contacts").status_code == 302
    work(rt)
    sms = standin.store.messages(channel="sms", to=E164)[0]
    wrong = _post(client, "/me/contacts/verify", {"code": "000000"}, "/me/contacts/verify")
    assert wrong.status_code == 422
    with rt.session() as session:  # counted: five wrong codes and this one is dead too
        assert session.scalar(select(OneTimeCode.attempts).where(OneTimeCode.channel == "sms")) == 1
    ok = _post(client, "/me/contacts/verify", {"code": _code_in(sms["body"])}, "/me/contacts")
    assert ok.status_code == 302

    def order():
        with rt.session() as session:
            return session.execute(
                select(ContactPoint.channel, ContactPoint.rank)
                .where(ContactPoint.resident_id == resident_id, ContactPoint.active.is_(True))
                .order_by(ContactPoint.rank)
            ).all()

    assert order() == [("email", 1), ("sms", 2)]
    with rt.session() as session:
        sms_id, email_id = (
            session.scalar(select(ContactPoint.id).where(ContactPoint.channel == c))
            for c in ("sms", "email")
        )
    _post(client, f"/me/contacts/{sms_id}/move", {"direction": "up"}, "/me/contacts")
    assert order() == [("sms", 1), ("email", 2)]
    bad = _post(client, f"/me/contacts/{sms_id}/move", {"direction": "up"}, "/me/contacts")
    assert bad.status_code == 422 and order() == [("sms", 1), ("email", 2)]
    assert _post(client, f"/me/contacts/{email_id}/remove", {}, "/me/contacts").status_code == 302
    assert order() == [("sms", 1)]
    last = _post(client, f"/me/contacts/{sms_id}/remove", {}, "/me/contacts")
    assert last.status_code == 422 and "You sign in with this address" in last.text
    assert order() == [("sms", 1)]
    # Someone else's address is not theirs to touch.
    other = _imported(rt)
    with rt.session() as session:
        theirs = session.scalar(select(ContactPoint.id).where(ContactPoint.resident_id == other))
    assert _post(client, f"/me/contacts/{theirs}/remove", {}, "/me/contacts").status_code == 422
    with rt.session() as session:
        assert session.get(ContactPoint, theirs).active


def test_an_address_verified_by_someone_else_cannot_be_added(seeded, smtp, client):
    rt = seeded
    _imported(rt, email="bojan@example.si")
    _sign_up(client, rt, smtp)
    _post(client, "/me/contacts/add", {"address": "bojan@example.si"}, "/me/contacts")
    work(rt)
    code = _code_in(_last_mail(smtp, "bojan@example.si")["body"])
    refused = _post(client, "/me/contacts/verify", {"code": code}, "/me/contacts/verify")
    assert refused.status_code == 422 and "belongs to another account" in refused.text


def test_telegram_is_linked_by_a_deep_link(seeded, smtp, standin, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    page = _post(client, "/me/contacts/telegram", {}, "/me/contacts")
    assert page.status_code == 200
    token = re.search(r"https://t\.me/MestniGlasBot\?start=([A-Za-z0-9_-]+)", page.text).group(1)
    update = standin.telegram.message_update(f"/start {token}", 4242)
    secret = providers.telegram_webhook_secret(rt)
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
    assert client.post("/webhooks/telegram", json=update, headers=headers).status_code == 200
    work(rt)
    with rt.session() as session:
        contact = session.scalar(select(ContactPoint).where(ContactPoint.channel == "telegram"))
    assert (contact.resident_id, contact.address, contact.verified) == (resident_id, "4242", True)
    assert "Telegram chat" in client.get("/me/contacts").text


# -- notices and messages ---------------------------------------------------------------------


def test_answer_a_notice_and_see_the_citys_answer(seeded, smtp, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    (center,) = _ids(rt, Area, "center")
    (roads,) = _ids(rt, Topic, "road-works")
    _choose(client, area=center, topics=[roads])
    broadcast_id = _notice(rt)
    _post(client, "/language/en", {"next": "/me/"}, "/me/")
    listing = client.get("/me/notices")
    assert "Zapora Koroške ceste" in listing.text
    assert re.search(r"<td>E-mail</td>\s*<td>Sent</td>", listing.text)
    notice_page = f"/me/notices/{broadcast_id}"
    assert client.get(notice_page).status_code == 200
    empty = _post(client, f"{notice_page}/answer", {"text": "   "}, notice_page)
    assert empty.status_code == 422
    sent = _post(client, f"{notice_page}/answer", {"text": "Kdaj bo spet odprto?"}, notice_page)
    assert sent.status_code == 302
    with rt.session() as session:
        (conversation,) = inbox(session, InboxFilter()).conversations
        assert (conversation.resident_id, conversation.broadcast_id) == (resident_id, broadcast_id)
        assert conversation.channel == "web"
        answer = reply(session, conversation.id, "Ob 16. uri.", author_id=None)
        add_note(session, conversation.id, "interno: preveri pri izvajalcu", author_id=None)
        answer_id = answer.id
    outbound.enqueue(rt, answer_id)
    work(rt)
    with rt.session() as session:
        assert session.get(Message, answer_id).status == "delivered"
    thread = client.get("/me/messages").text
    assert "Kdaj bo spet odprto?" in thread and "Ob 16. uri." in thread
    assert "interno" not in thread  # agents' notes are theirs
    # A notice that was not sent to them cannot be opened or answered.
    other = _notice(rt, "events", ("britof",))
    assert client.get(f"/me/notices/{other}").status_code == 404


def test_ask_a_question_without_a_notice(seeded, smtp, client):
    rt = seeded
    _sign_up(client, rt, smtp)
    assert _post(client, "/me/messages", {"text": "STOP"}, "/me/messages").status_code == 302
    with rt.session() as session:
        (conversation,) = inbox(session, InboxFilter()).conversations
        assert conversation.unread == 1  # a message for the agents, not a keyword
    too_long = _post(client, "/me/messages", {"text": "x" * 4001}, "/me/messages")
    assert too_long.status_code == 422


# -- own data ---------------------------------------------------------------------------------


def test_export_holds_their_data_and_nobody_elses(seeded, smtp, client):
    rt = seeded
    _imported(rt, name="Bojan", email="bojan@example.si")
    _sign_up(client, rt, smtp)
    (center,) = _ids(rt, Area, "center")
    (roads,) = _ids(rt, Topic, "road-works")
    _choose(client, area=center, topics=[roads], name="Ana", quiet_start="22:00", quiet_end="07:00")
    _notice(rt)
    _post(client, "/me/messages", {"text": "Hvala za obvestilo"}, "/me/messages")
    response = client.get("/me/data.json")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    data = json.loads(response.data)
    assert data["resident"]["name"] == "Ana" and data["resident"]["quiet_hours"] == "22:00-07:00"
    assert [c["address"] for c in data["contact_points"]] == [NORMALISED]
    assert data["subscriptions"] == [{"topic": "road-works", "area": "center"}]
    assert [n["title"] for n in data["notices_received"]] == ["Zapora Koroške ceste"]
    assert [m["text"] for m in data["messages"]] == ["Hvala za obvestilo"]
    assert {"notices", "channel:email", "topic:road-works"} <= {
        c["scope"] for c in data["consent_records"]
    }
    assert "bojan" not in response.text.lower()


def test_deleting_the_account_anonymises_and_keeps_statistics_and_consent(seeded, smtp, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    (center,) = _ids(rt, Area, "center")
    (roads,) = _ids(rt, Topic, "road-works")
    _choose(client, area=center, topics=[roads], name="Ana")
    _read_in_english(client)
    broadcast_id = _notice(rt)
    _post(client, "/me/messages", {"text": "Moj naslov je Cesta 5"}, "/me/messages")
    unconfirmed = _post(client, "/me/delete", {}, "/me/data")
    assert unconfirmed.status_code == 422 and "Tick the box" in unconfirmed.text
    assert client.get("/me/").status_code == 200  # nothing happened
    with rt.session() as session:
        consents = session.scalar(select(func.count()).select_from(ConsentRecord))
    deleted = _post(client, "/me/delete", {"confirm": "yes"}, "/me/data")
    assert deleted.status_code == 200
    assert client.get("/me/").status_code == 302  # signed out for good
    with rt.session() as session:
        resident = session.get(Resident, resident_id)
        addresses = session.scalars(
            select(ContactPoint.address).where(ContactPoint.resident_id == resident_id)
        ).all()
        bodies = session.scalars(select(Message.body)).all()
        deliveries = session.scalar(
            select(func.count()).where(Delivery.broadcast_id == broadcast_id)
        )
        kept = session.scalar(select(func.count()).select_from(ConsentRecord))
        subscriptions = session.scalar(select(func.count()).select_from(Subscription))
        payloads = session.scalars(select(InboundEvent.payload)).all()
    assert resident.name == "" and resident.area_id is None
    assert all(a.startswith("removed:") for a in addresses) and NORMALISED not in addresses
    assert bodies == [""]
    assert deliveries == 1  # the notice's statistics stay whole
    assert kept == consents + 1  # consent records kept, and the withdrawal recorded
    assert subscriptions == 0
    assert all(p == b"" for p in payloads)
    assert _deliveries(rt, _notice(rt, priority="emergency")) == []
    # The address is free again: signing up with it makes a new, empty account.
    assert _sign_up(client, rt, smtp) != resident_id


# -- web push ---------------------------------------------------------------------------------


def _subscribe(client, subscription, csrf=True):
    token = _token(client.get("/me/contacts").text)
    headers = {"X-CSRFToken": token} if csrf else {}
    return client.post("/me/contacts/push", json=subscription, headers=headers)


def test_a_browser_subscribes_to_push_and_gets_the_next_notice(seeded, smtp, standin, client):
    rt = seeded
    resident_id = _sign_up(client, rt, smtp)
    page = client.get("/me/contacts").text
    assert f'data-key="{providers.vapid_keys(rt)[1]}"' in page and "portal-push.js" in page
    (center,) = _ids(rt, Area, "center")
    (roads,) = _ids(rt, Topic, "road-works")
    _choose(client, area=center, topics=[roads])
    subscription = providers.demo_push_subscriber(rt)()
    assert _subscribe(client, subscription, csrf=False).status_code == 400
    created = _subscribe(client, subscription)
    assert created.status_code == 201
    push_id = created.get_json()["id"]
    _post(client, f"/me/contacts/{push_id}/move", {"direction": "up"}, "/me/contacts")
    _notice(rt)
    (pushed,) = standin.store.messages(channel="push")
    assert "Zapora Koroške ceste" in pushed["body"]
    with rt.session() as session:
        contact = session.get(ContactPoint, push_id)
    assert (contact.resident_id, contact.channel, contact.rank) == (resident_id, "push", 1)
    # Removed: the next notice goes by e-mail again.
    _post(client, f"/me/contacts/{push_id}/remove", {}, "/me/contacts")
    second = _notice(rt)
    assert [c for _, c, _ in _deliveries(rt, second)] == ["email"]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"endpoint": "https://push.example/1"},
        {"endpoint": "javascript:alert(1)", "keys": {"p256dh": "A" * 87, "auth": "A" * 22}},
        {"endpoint": "https://push.example/1", "keys": {"p256dh": "short", "auth": "A" * 22}},
        {"endpoint": "https://push.example/1", "keys": {"p256dh": "A" * 87, "auth": "!!"}},
    ],
)
def test_a_bad_push_subscription_is_refused(seeded, smtp, client, bad):
    rt = seeded
    _sign_up(client, rt, smtp)
    refused = _subscribe(client, bad)
    assert refused.status_code == 422 and "subscription" in refused.get_json()["error"]
    with rt.session() as session:
        assert session.scalar(select(ContactPoint).where(ContactPoint.channel == "push")) is None
