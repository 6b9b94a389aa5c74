"""The web side: every route's access rule, sign-in, the notices page, health, the sandbox,
and one-click unsubscribe."""

from __future__ import annotations

import dataclasses
import re

from sqlalchemy import func, select

from hub import create_app
from hub.broadcasts import NoticeDraft, send_notice
from hub.models import ConsentRecord, Role, Subscription
from hub.staff import create_staff_user
from hub.web import access_rule
from tests.conftest import IsolatedClient
from tests.helpers import work

PUBLIC_ON_PURPOSE = {
    "static",
    "auth.login",
    "public.healthz",
    "public.unsubscribe_page",
    "public.set_language",
    "public.notice",  # a notice that has gone out; the link in push messages
    "feeds.notices",  # open data: the notices that have gone out, their Atom feed and CAP
    "feeds.notices_atom",
    "feeds.cap_alert",
    "sandbox.index",
    "sandbox.messages_json",
    "webhooks.twilio_status",  # signed by Twilio (X-Twilio-Signature), checked first
    "webhooks.twilio_sms",  # signed by Twilio
    "webhooks.telegram",  # Telegram's secret token, checked first
    "api_v1.openapi_json",  # the API's description; every operation in it needs a key
    "api_v1.docs",
    "portal.signin",  # residents sign in (and up) with a code sent to them
    "portal.enter_code",
    "portal.link",  # the link in that code's message: its token is the key
    "portal.service_worker",  # a static file, served under /me/ for its scope
}


def test_every_route_is_public_on_purpose_or_behind_a_role(app):
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        kind = access_rule(view)
        assert kind != "none", f"{rule} says neither @public nor @roles"
        if kind == "public":
            assert rule.endpoint in PUBLIC_ON_PURPOSE, f"{rule} is public by accident?"


def test_staff_pages_need_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


def _login(client, email, password):
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def _staff(rt, role=Role.BROADCASTER):
    with rt.session() as session:
        create_staff_user(
            session, email="urska@kranj.example", role=role, password="correct horse battery"
        )


def test_login_needs_csrf_and_the_right_password(rt, client):
    _staff(rt)
    no_token = client.post(
        "/login", data={"email": "urska@kranj.example", "password": "correct horse battery"}
    )
    assert no_token.status_code == 400
    assert _login(client, "urska@kranj.example", "wrong password!").status_code == 401
    assert client.get("/").status_code == 302
    ok = _login(client, "urska@kranj.example", "correct horse battery")
    assert ok.status_code == 302
    assert client.get("/").status_code == 200


def test_login_next_never_leaves_the_site(rt, client):
    _staff(rt)
    page = client.get("/login?next=//evil.example/")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post(
        "/login?next=//evil.example/",
        data={
            "email": "urska@kranj.example",
            "password": "correct horse battery",
            "csrf_token": token,
        },
    )
    assert response.headers["Location"] == "/"


def test_notices_page_shows_counts_by_status_in_slovenian_and_english(seeded, client, smtp):
    rt = seeded
    _staff(rt)
    _resident(rt)
    send_notice(rt, _draft(), actor="test")
    work(rt)
    _login(client, "urska@kranj.example", "correct horse battery")
    page = client.get("/", headers={"Accept-Language": "en"})
    assert "Waste collection" in page.text and "Odvoz" in page.text
    assert "Sent: 1" in page.text
    page_sl = client.get("/", headers={"Accept-Language": "sl"})
    assert "Odvoz odpadkov" in page_sl.text
    assert "Poslano: 1" in page_sl.text


def test_healthz_reports_dependencies(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["database"] == "ok" and body["redis"] == "ok"
    assert set(body["queues"]) == {"emergency", "high", "default", "bulk"}


def test_healthz_is_503_when_redis_is_down(settings):
    broken = settings.replace(redis_url="redis://127.0.0.1:1/0")
    response = _isolated(create_app(broken)).get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "fail" and body["redis"].startswith("error: ")
    assert body["database"] == "ok"


def test_sandbox_lists_what_the_standin_received(seeded, client, smtp):
    rt = seeded
    _resident(rt)
    send_notice(rt, _draft(), actor="test")
    work(rt)
    listed = client.get("/sandbox/messages.json").get_json()
    assert len(listed) == 1
    assert {"channel", "to", "subject", "body", "received_at"} <= set(listed[0])
    assert listed[0]["to"] == "ana@example.org"
    page = client.get("/sandbox")
    assert "ana@example.org" in page.text and "Jutri odvoz." in page.text
    assert client.get("/sandbox/messages.json?limit=abc").status_code == 400


def test_sandbox_is_gone_when_providers_are_real(settings):
    real = settings.replace(
        smtp_host="smtp.city.example",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from_number="+38651000000",
        telegram_bot_token="123:abc",
    )
    assert _isolated(create_app(real)).get("/sandbox").status_code == 404


def _resident(rt):
    from hub.models import Area, Topic
    from hub.residents import ResidentRow, import_rows

    with rt.session() as session:
        area = session.scalar(select(Area.id).where(Area.slug == "center"))
        topic = session.scalar(select(Topic.id).where(Topic.slug == "waste-collection"))
        import_rows(
            session,
            [ResidentRow("Ana", "sl", area, [topic], {"email": "ana@example.org"}, ["email"])],
        )


def _draft():
    return NoticeDraft(
        "Odvoz",
        "waste-collection",
        ("center",),
        "normal",
        "preferred",
        {"sl": "Jutri odvoz.", "en": "Collection tomorrow."},
    )


def _unsubscribe_link(smtp) -> str:
    headers = smtp.messages()[0]["meta"]
    assert headers["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"
    url = headers["list_unsubscribe"].strip("<>")
    return url.removeprefix("http://hub.test")


def _subscriptions(rt) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).select_from(Subscription))


def test_one_click_unsubscribe_really_unsubscribes(seeded, smtp):
    rt = seeded
    _resident(rt)
    send_notice(rt, _draft(), actor="test")
    work(rt)
    path = _unsubscribe_link(smtp)
    # A mail client's one-click POST: no cookies, no CSRF token (RFC 8058).
    client = _isolated(create_app(rt.settings))
    confirm = client.get(path)
    assert confirm.status_code == 200 and "Odvoz odpadkov" in confirm.text
    assert _subscriptions(rt) == 1
    done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert _subscriptions(rt) == 0
    with rt.session() as session:
        consent = session.scalar(select(ConsentRecord).where(ConsentRecord.action == "withdrawn"))
    assert consent.scope == "topic:waste-collection" and consent.source == "list-unsubscribe"
    # The next notice on that topic does not reach her.
    smtp.clear()
    send_notice(rt, _draft(), actor="test")
    work(rt)
    assert smtp.messages() == []


def test_forged_unsubscribe_links_change_nothing(seeded, smtp, client):
    rt = seeded
    _resident(rt)
    send_notice(rt, _draft(), actor="test")
    work(rt)
    path = _unsubscribe_link(smtp)
    for bad in (path[:-3] + "xyz", "/unsubscribe/garbage", "/unsubscribe/MTIzNDU2.nope"):
        assert client.post(bad).status_code == 404
        assert client.get(bad).status_code == 404
    assert _subscriptions(rt) == 1


def test_language_switch(client):
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    client.post("/language/en", data={"csrf_token": token, "next": "/login"})
    assert "Sign in" in client.get("/login").text
    client.post("/language/sl", data={"csrf_token": token, "next": "/login"})
    assert "Prijava" in client.get("/login").text
    assert client.post("/language/xx", data={"csrf_token": token}).status_code == 400


def _isolated(application):
    application.test_client_class = IsolatedClient
    return application.test_client()


def test_healthz_is_503_when_the_database_is_down(settings):
    broken = settings.replace(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    response = _isolated(create_app(broken)).get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"].startswith("error: ") and body["redis"] == "ok"
    assert "nobody" not in response.text  # no connection string in the answer


def test_language_switch_never_redirects_off_site(client):
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    for target in ("//evil.example/", "/\t/evil.example/phish", "/\\evil.example", "https://e.x/"):
        response = client.post("/language/en", data={"csrf_token": token, "next": target})
        assert response.headers["Location"] == "/", target


def test_a_sent_notice_has_a_public_page_in_the_visitors_language(seeded, client, smtp):
    rt = seeded
    _resident(rt)
    draft = _draft()
    draft.bodies["sl"] = "Jutri odvoz.\n\nPosode postavite ob cesto do 6. ure."  # a dict
    broadcast_id = send_notice(rt, draft, actor="test")
    work(rt)
    page = client.get(f"/notices/{broadcast_id}", headers={"Accept-Language": "sl"})
    assert page.status_code == 200
    assert "<p>Posode postavite ob cesto do 6. ure.</p>" in page.text
    assert "Odvoz odpadkov" in page.text  # the topic
    english = client.get(f"/notices/{broadcast_id}", headers={"Accept-Language": "en"})
    assert "Collection tomorrow." in english.text


def test_a_notice_that_has_not_gone_out_is_not_published(seeded, client):
    from datetime import timedelta

    from hub import clock

    rt = seeded
    draft = dataclasses.replace(_draft(), scheduled_at=clock.utcnow() + timedelta(days=1))
    broadcast_id = send_notice(rt, draft, actor="test")
    assert client.get(f"/notices/{broadcast_id}").status_code == 404
    assert client.get("/notices/999999").status_code == 404


def test_sandbox_shows_the_standins_credentials(seeded, client):
    from hub import providers

    rt = seeded
    page = client.get("/sandbox").text
    assert providers.twilio_account(rt).auth_token in page
    assert providers.telegram_token(rt) in page
    assert providers.vapid_keys(rt)[1] in page
