"""The admin pages: staff accounts and roles, topics and areas, channel settings with a test
message through the real senders to the stand-ins, and the webhook health panel."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from channels.sandbox.push import create_subscription
from hub import clock, create_app, providers
from hub.models import AuditEntry, ContactPoint, Resident, Role, StaffUser, Topic
from tests.conftest import IsolatedClient
from tests.console_helpers import PASSWORD, csrf_token, login, residents, staff

ADMIN = "it@kranj.example"
PAGES = [
    "/admin",
    "/admin/users",
    "/admin/topics",
    "/admin/areas",
    "/admin/topics/road-works",
    "/admin/areas/center",
    "/admin/channels",
    "/admin/webhooks",
]


def _client(app) -> IsolatedClient:
    app.test_client_class = IsolatedClient
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


@pytest.fixture
def admin_client(seeded, client):
    staff(seeded, ADMIN, Role.ADMIN)
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    login(client, ADMIN)
    return client


def _post(client, path: str, data: dict | None = None, page: str = "/admin/users"):
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, page)})


def _audit(rt, action: str) -> list[AuditEntry]:
    with rt.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def _user(rt, email: str) -> StaffUser:
    with rt.session() as session:
        return session.scalar(select(StaffUser).where(StaffUser.email == email))


# -- who may ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
def test_admin_pages_are_for_admins_only(seeded, client, path):
    anonymous = client.get(path)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    staff(seeded, "podpora@kranj.example", Role.AGENT)
    login(client, "podpora@kranj.example")
    assert client.get(path).status_code == 403
    staff(seeded, ADMIN, Role.ADMIN)
    login(client, ADMIN)
    assert client.get(path).status_code == 200


def test_the_admin_link_is_shown_to_admins_only(seeded, client):
    staff(seeded, "obvescanje@kranj.example", Role.BROADCASTER)
    login(client, "obvescanje@kranj.example")
    assert 'href="/admin"' not in client.get("/").text
    staff(seeded, ADMIN, Role.ADMIN)
    login(client, ADMIN)
    assert 'href="/admin"' in client.get("/").text


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/admin/users", {"email": "nova@kranj.example", "role": "agent"}),
        ("/admin/topics", {"slug": "parking", "name_sl": "Parkiranje"}),
        ("/admin/channels/sms/test", {"address": "+38640111222"}),
        ("/admin/webhooks/telegram", {}),
    ],
)
def test_admin_forms_need_csrf(admin_client, seeded, path, data):
    assert admin_client.post(path, data=data).status_code == 400
    assert _user(seeded, "nova@kranj.example") is None
    with seeded.session() as session:
        assert session.scalar(select(Topic).where(Topic.slug == "parking")) is None
    assert _audit(seeded, "channel.test") == []
    assert _audit(seeded, "telegram.set_webhook") == []


# -- staff users ------------------------------------------------------------------------------


def _password(page) -> str:
    return re.search(r'<code class="password">([^<]+)</code>', page.text).group(1)


def test_a_new_user_signs_in_with_the_password_shown_once(admin_client, seeded, settings):
    created = _post(admin_client, "/admin/users", {"email": "Nova@Kranj.example", "role": "agent"})
    assert created.status_code == 200
    assert created.headers["Cache-Control"] == "no-store"
    assert "nova@kranj.example can sign in now" in created.text
    password = _password(created)
    listing = admin_client.get("/admin/users").text
    assert "nova@kranj.example" in listing and password not in listing
    [entry] = _audit(seeded, "staff.create")
    assert entry.actor == ADMIN and entry.detail == {"role": "agent"}
    other = _client(create_app(settings))
    assert login(other, "nova@kranj.example", password).status_code == 302
    assert other.get("/inbox").status_code == 200


@pytest.mark.parametrize(
    ("email", "message"),
    [("not an address", "Not a valid e-mail address"), (ADMIN, "already exists")],
)
def test_a_bad_or_taken_address_is_refused(admin_client, seeded, email, message):
    refused = _post(admin_client, "/admin/users", {"email": email, "role": "agent"})
    assert refused.status_code == 422
    assert message in refused.text
    with seeded.session() as session:
        assert session.scalar(select(func.count()).select_from(StaffUser)) == 1


def test_a_role_change_takes_effect_at_once_and_is_audited(admin_client, seeded, settings):
    staff(seeded, "podpora@kranj.example", Role.AGENT)
    agent = _client(create_app(settings))
    login(agent, "podpora@kranj.example")
    assert agent.get("/broadcasts/new").status_code == 403
    user_id = _user(seeded, "podpora@kranj.example").id
    changed = _post(admin_client, f"/admin/users/{user_id}/role", {"role": "broadcaster"})
    assert changed.status_code == 303
    assert agent.get("/broadcasts/new").status_code == 200  # the same session, a new role
    [entry] = _audit(seeded, "staff.role")
    assert (entry.actor, entry.target) == (ADMIN, f"staff:{user_id}")
    assert entry.detail == {"before": "agent", "after": "broadcaster"}
    assert (
        "podpora@kranj.example now has the role Broadcaster"
        in admin_client.get("/admin/users").text
    )


def test_a_disabled_user_is_signed_out_and_cannot_sign_in(admin_client, seeded, settings):
    staff(seeded, "odobritve@kranj.example", Role.APPROVER)
    approver = _client(create_app(settings))
    login(approver, "odobritve@kranj.example")
    assert approver.get("/").status_code == 200
    user_id = _user(seeded, "odobritve@kranj.example").id
    done = _post(admin_client, f"/admin/users/{user_id}/active", {"active": "0"})
    assert done.status_code == 303
    assert approver.get("/").status_code == 302  # the open session has ended
    assert login(approver, "odobritve@kranj.example").status_code == 401
    assert "Disabled" in admin_client.get("/admin/users").text
    assert len(_audit(seeded, "staff.disable")) == 1
    _post(admin_client, f"/admin/users/{user_id}/active", {"active": "1"})
    assert login(approver, "odobritve@kranj.example").status_code == 302
    assert len(_audit(seeded, "staff.enable")) == 1


def test_an_admin_cannot_demote_or_disable_themselves(admin_client, seeded):
    me = _user(seeded, ADMIN).id
    demote = _post(admin_client, f"/admin/users/{me}/role", {"role": "agent"})
    assert demote.status_code == 422
    assert "You cannot change your own role" in demote.text
    disable = _post(admin_client, f"/admin/users/{me}/active", {"active": "0"})
    assert disable.status_code == 422
    assert "You cannot disable your own account" in disable.text
    user = _user(seeded, ADMIN)
    assert (user.role, user.active) == ("admin", True)
    assert admin_client.get("/admin/users").status_code == 200
    assert _audit(seeded, "staff.role") == [] and _audit(seeded, "staff.disable") == []


def test_a_password_reset_shows_the_new_one_and_ends_the_old(admin_client, seeded, settings):
    staff(seeded, "podpora@kranj.example", Role.AGENT)
    agent = _client(create_app(settings))
    login(agent, "podpora@kranj.example")
    user_id = _user(seeded, "podpora@kranj.example").id
    reset = _post(admin_client, f"/admin/users/{user_id}/password")
    assert reset.status_code == 200 and reset.headers["Cache-Control"] == "no-store"
    assert agent.get("/").status_code == 302
    assert login(agent, "podpora@kranj.example", PASSWORD).status_code == 401
    assert login(agent, "podpora@kranj.example", _password(reset)).status_code == 302
    assert len(_audit(seeded, "staff.password_reset")) == 1


def test_the_user_list_shows_last_sign_in_and_lock_out(admin_client, seeded, settings):
    staff(seeded, "podpora@kranj.example", Role.AGENT)
    other = _client(create_app(settings))
    for _ in range(settings.signin_max_failures):
        login(other, "podpora@kranj.example", "wrong password!")
    page = admin_client.get("/admin/users").text
    row = page[page.index("podpora@kranj.example") :]
    assert "never" in row[:400] and "Locked after failed sign-ins" in row[:600]
    assert "never" not in page[page.index(ADMIN) :][:300]


# -- topics and areas -------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "model_slug"), [("topics", "parking"), ("areas", "orehovlje")])
def test_create_rename_and_a_taken_slug(admin_client, seeded, kind, model_slug):
    page = f"/admin/{kind}"
    created = _post(
        admin_client, page, {"slug": model_slug, "name_sl": "Ime", "name_en": "Name"}, page
    )
    assert created.status_code == 303
    assert f"<code>{model_slug}</code>" in admin_client.get(page).text
    taken = _post(admin_client, page, {"slug": model_slug, "name_sl": "Drugo"}, page)
    assert taken.status_code == 422
    assert f"{model_slug} is already taken" in taken.text
    renamed = _post(
        admin_client,
        f"{page}/{model_slug}",
        {"name_sl": "Novo ime", "name_en": "New name"},
        page,
    )
    assert renamed.status_code == 303
    listing = admin_client.get(page).text
    assert "Novo ime" in listing and "New name" in listing and "Drugo" not in listing
    noun = kind[:-1]
    assert len(_audit(seeded, f"{noun}.create")) == 1
    [rename] = _audit(seeded, f"{noun}.rename")
    assert rename.detail["before"] == {"sl": "Ime", "en": "Name"}


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"slug": "Road Works", "name_sl": "X"}, "only lower-case letters"),
        ({"slug": "-x", "name_sl": "X"}, "only lower-case letters"),
        ({"slug": "", "name_sl": "X"}, "Enter a short name"),
        ({"slug": "ok", "name_sl": " ", "name_en": "Only English"}, "main language"),
    ],
)
def test_bad_topic_input_changes_nothing(admin_client, seeded, form, message):
    with seeded.session() as session:
        before = session.scalar(select(func.count()).select_from(Topic))
    refused = _post(admin_client, "/admin/topics", form, "/admin/topics")
    assert refused.status_code == 422
    assert message in refused.text
    with seeded.session() as session:
        assert session.scalar(select(func.count()).select_from(Topic)) == before


def test_only_an_unused_topic_or_area_can_be_removed(admin_client, seeded):
    residents(seeded, ("Ana", "sl", {"email": "ana@example.org"}), area="center")
    used = _post(admin_client, "/admin/topics/road-works/remove", page="/admin/topics")
    assert used.status_code == 422
    assert "road-works is still used" in used.text
    area = _post(admin_client, "/admin/areas/center/remove", page="/admin/areas")
    assert area.status_code == 422
    assert _post(admin_client, "/admin/topics/events/remove", page="/admin/topics").status_code == (
        303
    )
    topics = admin_client.get("/admin/topics").text
    assert "<code>road-works</code>" in topics and "<code>events</code>" not in topics
    assert len(_audit(seeded, "topic.remove")) == 1
    assert admin_client.get("/admin/topics/nothing-here").status_code == 404


def test_names_are_escaped(admin_client, seeded):
    _post(admin_client, "/admin/topics", {"slug": "x", "name_sl": "<b>Ime</b>"}, "/admin/topics")
    page = admin_client.get("/admin/topics").text
    assert "&lt;b&gt;Ime&lt;/b&gt;" in page and "<b>Ime</b>" not in page


# -- channels ---------------------------------------------------------------------------------


def test_the_channel_page_says_what_is_set_but_never_the_secrets(admin_client, seeded):
    seeded.settings.smtp_password = "smtp-secret-never-shown"
    seeded.settings.twilio_auth_token = "twilio-secret-never-shown"
    page = admin_client.get("/admin/channels").text
    assert "never-shown" not in page
    assert "<code>SMTP_PASSWORD</code>: set" in page
    assert "<code>TWILIO_AUTH_TOKEN</code>: set" in page
    assert "<code>HUB_SMS_RATE</code>" in page and "<code>HUB_PUSH_CONCURRENCY</code>" in page
    assert "the sandbox stand-in" in page
    assert "+15005550006" in page  # the sandbox's Twilio sender


@pytest.mark.parametrize(
    ("channel", "address", "to"),
    [
        ("sms", "040 111 222", "+38640111222"),
        ("telegram", "5000", "5000"),
        ("email", "ana@example.org", "ana@example.org"),
    ],
)
def test_a_test_message_reaches_the_sandbox(
    admin_client, seeded, standin, smtp, channel, address, to
):
    sent = _post(
        admin_client, f"/admin/channels/{channel}/test", {"address": address}, "/admin/channels"
    )
    assert sent.status_code == 200
    assert "Outcome: <code>sent</code>" in sent.text
    [message] = standin.store.messages(channel=channel)
    assert message["to"] == to and "A test message from Mestni glas" in message["body"]
    [entry] = _audit(seeded, "channel.test")
    assert entry.detail["status"] == "sent" and address not in str(entry.detail)


def test_a_push_test_reaches_a_subscribed_browser(admin_client, seeded, standin):
    residents(seeded, ("Ana", "sl", {"email": "ana@example.org"}))
    subscription = create_subscription(standin.store, standin.url, providers.vapid_keys(seeded)[1])
    with seeded.session() as session:
        session.add(
            ContactPoint(
                resident_id=session.scalar(select(Resident.id)),
                channel="push",
                address=subscription["endpoint"],
                details=subscription["keys"],
                verified=True,
            )
        )
    page = _post(
        admin_client,
        "/admin/channels/push/test",
        {"address": subscription["endpoint"]},
        "/admin/channels",
    )
    assert "Outcome: <code>sent</code>" in page.text
    [notification] = standin.store.messages(channel="push")
    assert "A test message from Mestni glas" in notification["body"]


def test_a_provider_refusal_is_shown(admin_client, seeded, standin):
    standin.telegram.control_block("5000")
    page = _post(
        admin_client, "/admin/channels/telegram/test", {"address": "5000"}, "/admin/channels"
    )
    assert "The provider did not take it" in page.text and "blocked" in page.text
    assert _audit(seeded, "channel.test")[0].detail["status"] != "sent"


@pytest.mark.parametrize(
    ("channel", "address", "message"),
    [
        ("sms", "not a number", "Not a valid address"),
        ("telegram", "@someone", "whole number"),
        ("push", "https://push.example/x", "No browser subscribed"),
        ("email", "", "Enter where to send"),
    ],
)
def test_a_bad_test_address_sends_nothing(admin_client, seeded, standin, channel, address, message):
    page = _post(
        admin_client, f"/admin/channels/{channel}/test", {"address": address}, "/admin/channels"
    )
    assert page.status_code == 422 and message in page.text
    assert standin.store.count() == 0 and _audit(seeded, "channel.test") == []


# -- webhooks ---------------------------------------------------------------------------------


def test_the_webhook_panel_shows_telegram_and_registers_it(admin_client, seeded, standin):
    before = admin_client.get("/admin/webhooks").text
    assert "no: register it below" in before
    assert "http://hub.test/webhooks/twilio/sms" in before
    assert "http://hub.test/webhooks/twilio/status" in before
    done = _post(admin_client, "/admin/webhooks/telegram", page="/admin/webhooks")
    assert done.status_code == 303
    after = admin_client.get("/admin/webhooks").text
    assert "The webhook is registered at http://hub.test/webhooks/telegram" in after
    assert "no: register it below" not in after
    assert "Updates waiting at Telegram</dt><dd>0" in after
    [entry] = _audit(seeded, "telegram.set_webhook")
    assert entry.detail == {"url": "http://hub.test/webhooks/telegram"}


def test_the_panel_shows_telegrams_last_error(admin_client, standin):
    _post(admin_client, "/admin/webhooks/telegram", page="/admin/webhooks")
    telegram = standin.telegram  # http://hub.test does not answer: Telegram keeps the update
    failed = asyncio.run(telegram.post_update(telegram.message_update("Halo?", 1015)))
    assert failed["delivered"] is False
    page = admin_client.get("/admin/webhooks").text
    assert "Updates waiting at Telegram</dt><dd>1" in page
    last_error = page[page.index("Last error") :][:300]
    assert failed["error"] in last_error and re.search(r"\d{4}, \d+:\d\d:\d\d", last_error)


def test_the_panel_says_when_telegram_cannot_be_asked(admin_client):
    page = admin_client.get("/admin/webhooks")
    assert page.status_code == 200 and "could not be asked" in page.text


def _signed_sms(client, rt):
    params = {"MessageSid": "SM" + "1" * 32, "From": "+38640111222", "Body": "Živjo"}
    url = f"{rt.settings.base_url}/webhooks/twilio/sms"
    signature = RequestValidator(providers.twilio_account(rt).auth_token).compute_signature(
        url, params
    )
    return client.post(
        "/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
    )


def test_the_panel_shows_the_last_valid_request_in_local_time(admin_client, seeded):
    rows = re.findall(r"<code>([a-z-]+)</code></th><td>([^<]+)</td>", _last_valid(admin_client))
    assert rows == [("twilio-sms", "never"), ("twilio-status", "never"), ("telegram", "never")]
    forged = admin_client.post(
        "/webhooks/twilio/sms",
        data={"MessageSid": "SM1", "From": "+38640111222"},
        headers={"X-Twilio-Signature": "forged"},
    )
    assert forged.status_code == 403
    assert (
        "never"
        in dict(
            re.findall(r"<code>([a-z-]+)</code></th><td>([^<]+)</td>", _last_valid(admin_client))
        )["twilio-sms"]
    )
    clock.advance_to(datetime(2026, 1, 15, 10, 0, 0))  # UTC; 11:00 in Ljubljana in winter
    assert _signed_sms(admin_client, seeded).status_code == 200
    seen = dict(
        re.findall(r"<code>([a-z-]+)</code></th><td>([^<]+)</td>", _last_valid(admin_client))
    )
    assert seen["twilio-sms"].startswith("Jan 15, 2026, 11:00:0")
    assert seen["telegram"] == "never"


def _last_valid(client) -> str:
    page = client.get("/admin/webhooks").text
    return page[page.index('id="last-valid"') :]
