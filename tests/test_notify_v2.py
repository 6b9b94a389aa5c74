"""The GOV.UK Notify-compatible API, driven by Notify's own Python client (from PyPI,
unchanged) against the hub on a real port; SMS goes to the Twilio stand-in, which calls back,
and e-mail to the SMTP stand-in."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import jwt
import pytest
import requests
from notifications_python_client.errors import HTTPError
from notifications_python_client.notifications import NotificationsAPIClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server

from hub import clock, providers
from hub.apikeys import create_api_key, revoke_api_key, service_id, split_key
from hub.models import ContactPoint, NotifyNotification, Resident
from hub.notify.templates import create_template, update_template
from hub.staff import create_staff_user
from hub.sweeper import sweep
from tests.helpers import work
from tests.processes import wait_until
from tests.test_cli import hub  # noqa: F401  (the fixture that runs the real `hub` command)

PHONE = "+38640111222"
SMS_BODY = (
    "Pozdravljeni ((name)), odvoz bioloških odpadkov bo ((day))."
    "((reminder?? Prosimo, pripravite zabojnik.))"
)


@pytest.fixture
def served(app, live_base_url) -> Iterator[str]:
    """The hub on a real port (werkzeug's threaded server: it stops without racing requests
    still being answered), also for the Twilio stand-in's status callbacks."""
    port = int(live_base_url.rsplit(":", 1)[1])
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield live_base_url
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def api(rt, served, standin, smtp):
    """Notify clients with keys of each type, against the hub on a real port."""
    made: list[NotificationsAPIClient] = []

    def client(key_type: str = "normal") -> NotificationsAPIClient:
        key = create_api_key(
            rt, name=f"odvoz {key_type}", role="agent", key_type=key_type, created_by="test"
        )
        made.append(NotificationsAPIClient(key, base_url=served))
        return made[-1]

    client.rt, client.url, client.standin, client.smtp = rt, served, standin, smtp
    yield client
    for one in made:
        one.request_session.close()


def _template(rt, template_type="sms", body=SMS_BODY, subject=None, name="Odvoz") -> str:
    with rt.session() as session:
        return create_template(
            session,
            name=name,
            template_type=template_type,
            body=body,
            subject=subject,
            actor="ana@kranj.si",
        ).id


def _errors(raised) -> tuple[int, list[dict]]:
    response = raised.value.response
    assert response.json()["status_code"] == response.status_code
    return response.status_code, response.json()["errors"]


def _count(rt) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).select_from(NotifyNotification))


# -- sending ----------------------------------------------------------------------------------


def test_an_sms_reaches_the_phone_and_is_delivered(api):
    rt, client = api.rt, api()
    template_id = _template(rt)
    sent = client.send_sms_notification(
        phone_number="040 111 222",
        template_id=template_id,
        personalisation={"name": "Ana", "day": "v četrtek", "reminder": "yes"},
        reference="odvoz-2026-03",
    )
    expected = (
        "Pozdravljeni Ana, odvoz bioloških odpadkov bo v četrtek. Prosimo, pripravite zabojnik."
    )
    assert sent["content"] == {"body": expected, "from_number": providers.SANDBOX_FROM_NUMBER}
    assert sent["reference"] == "odvoz-2026-03" and sent["scheduled_for"] is None
    assert sent["uri"] == f"{api.url}/v2/notifications/{sent['id']}"
    assert sent["template"] == {
        "id": template_id,
        "version": 1,
        "uri": f"{api.url}/v2/template/{template_id}/version/1",
    }
    assert client.get_notification_by_id(sent["id"])["status"] == "created"

    work(rt)
    [sms] = api.standin.store.messages(channel="sms")
    assert (sms["to"], sms["body"]) == (PHONE, expected)
    wait_until(
        lambda: client.get_notification_by_id(sent["id"])["status"] == "delivered",
        10,
        "Twilio's delivery receipt",
    )
    got = client.get_notification_by_id(sent["id"])
    assert got["phone_number"] == PHONE and got["email_address"] is None
    assert (got["type"], got["body"], got["reference"]) == ("sms", expected, "odvoz-2026-03")
    assert got["sent_at"] and got["completed_at"] and got["created_at"].endswith("Z")


def test_a_notification_whose_job_redis_lost_is_sent_by_the_sweeper(api):
    rt, client = api.rt, api()
    sent = client.send_sms_notification(
        phone_number="040 111 222",
        template_id=_template(rt),
        personalisation={"name": "Ana", "day": "jutri", "reminder": "no"},
    )
    rt.redis.flushdb()  # the job is gone; the notification is still `created` in the database
    clock.advance_to(clock.utcnow() + timedelta(seconds=rt.settings.sweep_grace_s + 1))
    assert sweep(rt).requeued_inbound == 1
    work(rt)
    [sms] = api.standin.store.messages(channel="sms")
    assert sms["to"] == PHONE
    assert client.get_notification_by_id(sent["id"])["status"] != "created"


def test_an_email_arrives_with_its_subject_text_and_links(api):
    rt, client = api.rt, api()
    template_id = _template(
        rt,
        "email",
        subject="Odvoz ((day))",
        body="# Odvoz\n\nDober dan, ((name)).\n\nVeč: [urnik](https://www.kranj.si/odvoz)",
    )
    sent = client.send_email_notification(
        email_address="Ana.Novak@Example.org",
        template_id=template_id,
        personalisation={"name": "<Ana>", "day": "jutri"},
    )
    assert sent["content"]["subject"] == "Odvoz jutri"
    assert sent["content"]["from_email"] == "obvestila@mestni-glas.example"
    work(rt)
    [mail] = api.smtp.messages(channel="email")
    assert mail["to"] == "Ana.Novak@example.org" and mail["subject"] == "Odvoz jutri"
    assert (
        "Dober dan, <Ana>." in mail["body"] and "urnik (https://www.kranj.si/odvoz)" in mail["body"]
    )
    got = client.get_notification_by_id(sent["id"])
    assert (got["status"], got["email_address"], got["subject"]) == (
        "delivered",
        "Ana.Novak@example.org",
        "Odvoz jutri",
    )


def test_a_carrier_failure_is_a_failure_in_notifys_words(api):
    rt, client = api.rt, api()
    api.standin.twilio.control_undeliver(PHONE, error_code=30005)  # unknown handset
    personalisation = {"name": "Ana", "day": "jutri", "reminder": "no"}
    sent = client.send_sms_notification(PHONE, _template(rt), personalisation)
    assert sent["content"]["body"].endswith("bo jutri.")  # the optional text left out
    work(rt)
    wait_until(
        lambda: client.get_notification_by_id(sent["id"])["status"] == "permanent-failure",
        10,
        "Twilio's undelivered receipt",
    )
    failed = client.get_all_notifications(status="failed")["notifications"]
    assert [n["id"] for n in failed] == [sent["id"]]


def test_a_number_that_answered_stop_gets_nothing(api):
    rt, client = api.rt, api()
    with rt.session() as session:
        resident = Resident(name="Ana", locale="sl")
        session.add(resident)
        session.flush()
        session.add(
            ContactPoint(
                resident_id=resident.id,
                channel="sms",
                address=PHONE,
                opted_out_at=resident.created_at,
            )
        )
    sent = client.send_sms_notification(
        PHONE, _template(rt), {"name": "A", "day": "d", "reminder": ""}
    )
    work(rt)
    assert api.standin.store.count("sms") == 0
    assert client.get_notification_by_id(sent["id"])["status"] == "permanent-failure"


def test_a_test_key_never_sends_and_is_delivered_at_once(api):
    rt, client = api.rt, api("test")
    sent = client.send_sms_notification(
        PHONE, _template(rt), {"name": "A", "day": "d", "reminder": 0}
    )
    work(rt)
    assert api.standin.store.count("sms") == 0
    assert client.get_notification_by_id(sent["id"])["status"] == "delivered"
    # Each key type sees its own notifications in the list, as in Notify.
    assert api().get_all_notifications()["notifications"] == []
    assert [n["id"] for n in client.get_all_notifications()["notifications"]] == [sent["id"]]


def test_a_team_key_sends_only_to_staff(api):
    rt, client = api.rt, api("team")
    with rt.session() as session:
        create_staff_user(session, email="it@kranj.si", role="agent", password="a long password")
    template_id = _template(rt, "email", subject="Test", body="Pozdravljeni")
    client.send_email_notification("IT@kranj.si", template_id)
    for refused in (
        lambda: client.send_email_notification("ana@example.org", template_id),
        lambda: client.send_sms_notification(PHONE, _template(rt, body="Test")),
    ):
        with pytest.raises(HTTPError) as raised:
            refused()
        assert _errors(raised) == (
            400,
            [
                {
                    "error": "BadRequestError",
                    "message": "Can't send to this recipient using a team-only API key",
                }
            ],
        )
    work(rt)
    assert [m["to"] for m in api.smtp.messages(channel="email")] == ["IT@kranj.si"]
    assert _count(rt) == 1


# -- bad input: Notify's bodies, nothing stored, nothing sent ------------------------------


@pytest.mark.parametrize(
    "send, errors",
    [
        (
            lambda c, t: c.send_sms_notification("12", t),
            [("ValidationError", "phone_number Not a valid international number")],
        ),
        (
            lambda c, t: c.send_email_notification("ana@", t),
            [("ValidationError", "email_address Not a valid email address")],
        ),
        (
            lambda c, t: c.send_sms_notification(PHONE, "not-a-uuid", reference="x"),
            [("ValidationError", "template_id is not a valid UUID")],
        ),
        (
            lambda c, t: c.post("/v2/notifications/sms", {"reference": 5}),
            [
                ("ValidationError", "phone_number is a required property"),
                ("ValidationError", "template_id is a required property"),
                ("ValidationError", "reference 5 is not of type string"),
            ],
        ),
        (
            lambda c, t: c.send_sms_notification(PHONE, str(uuid.uuid4())),
            [("BadRequestError", "Template not found")],
        ),
        (
            lambda c, t: c.send_email_notification("ana@example.org", t),
            [("BadRequestError", "sms template is not suitable for email notification")],
        ),
        (
            lambda c, t: c.send_sms_notification(PHONE, t, {"Name": "Ana"}),
            [("BadRequestError", "Missing personalisation: day, reminder")],
        ),
        (
            lambda c, t: c.send_sms_notification(
                PHONE, t, {"name": "x" * 900, "day": "d", "reminder": ""}
            ),
            [
                (
                    "BadRequestError",
                    "Text messages cannot be longer than 918 characters. "
                    "Your message is 945 characters",
                )
            ],
        ),
    ],
)
def test_bad_requests_get_notifys_errors_and_change_nothing(api, send, errors):
    rt, client = api.rt, api()
    with pytest.raises(HTTPError) as raised:
        send(client, _template(rt))
    assert _errors(raised) == (400, [{"error": e, "message": m} for e, m in errors])
    work(rt)
    assert _count(rt) == 0 and api.standin.store.count("sms") == 0


def test_the_rate_limit_per_key(api):
    api.rt.settings.notify_rate_limit = 2
    rt, client = api.rt, api("test")
    template_id = _template(rt, body="Test")
    client.send_sms_notification(PHONE, template_id)
    client.send_sms_notification(PHONE, template_id)
    with pytest.raises(HTTPError) as raised:
        client.send_sms_notification(PHONE, template_id)
    assert _errors(raised) == (
        429,
        [
            {
                "error": "RateLimitError",
                "message": "Exceeded rate limit for key type TEST of 2 requests per 60 seconds",
            }
        ],
    )
    api("normal").send_sms_notification(PHONE, template_id)  # another key: its own limit
    assert _count(rt) == 3


# -- authentication ---------------------------------------------------------------------------


def _token(secret: str, **claims) -> str:
    return jwt.encode({"iat": int(time.time())} | claims, secret, algorithm="HS256")


def _get(url: str, authorization: str | None):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return requests.get(f"{url}/v2/templates", headers=headers, timeout=10)


def test_bad_tokens_are_refused_with_notifys_messages(api):
    rt = api.rt
    key = create_api_key(rt, name="parking", role="agent", key_type="normal", created_by="test")
    service, secret = split_key(key)
    wrong_secret = str(uuid.uuid4())
    cases = [
        (None, 401, "Unauthorized: authentication token must be provided"),
        (f"Basic {key}", 401, "Unauthorized: authentication bearer scheme must be used"),
        ("Bearer not-a-jwt", 403, "Invalid token: signature, api token is not valid"),
        (f"Bearer {_token(secret)}", 403, "Invalid token: iss field not provided"),
        (
            f"Bearer {_token(secret, iss=str(uuid.uuid4()))}",
            403,
            "Invalid token: service not found",
        ),
        (f"Bearer {_token(wrong_secret, iss=service)}", 403, "Invalid token: API key not found"),
        (
            f"Bearer {_token(secret, iss=service, iat=int(time.time()) - 31)}",
            403,
            "Error: Your system clock must be accurate to within 30 seconds",
        ),
        (
            f"Bearer {_token(secret, iss=service, iat=int(time.time()) + 60)}",
            403,
            "Error: Your system clock must be accurate to within 30 seconds",
        ),
        (
            "Bearer "
            + jwt.encode({"iss": service, "iat": int(time.time())}, secret * 2, algorithm="HS512"),
            403,
            "Invalid token: algorithm used is not HS256",
        ),
    ]
    for authorization, status, message in cases:
        response = _get(api.url, authorization)
        assert (response.status_code, response.json()) == (
            status,
            {
                "status_code": status,
                "errors": [{"error": "AuthError", "message": message}],
            },
        ), authorization
    assert _get(api.url, f"Bearer {_token(secret, iss=service)}").status_code == 200


def test_a_revoked_key_is_refused(api):
    rt = api.rt
    key = create_api_key(rt, name="parking", role="agent", key_type="normal", created_by="test")
    client = NotificationsAPIClient(key, base_url=api.url)
    client.request_session.headers["Connection"] = "close"
    assert client.get_all_templates() == {"templates": []}
    other = api()  # the service keeps another key
    revoke_api_key(rt, 1, actor="test")
    with pytest.raises(HTTPError) as raised:
        client.get_all_templates()
    assert _errors(raised) == (
        403,
        [{"error": "AuthError", "message": "Invalid token: API key revoked"}],
    )
    assert other.get_all_templates() == {"templates": []}
    assert service_id(rt) == split_key(key)[0]


# -- reading back -----------------------------------------------------------------------------


def test_list_filters_and_older_than_paging(api):
    rt, client = api.rt, api("test")
    sms_template = _template(rt, body="Test ((n))")
    email_template = _template(rt, "email", subject="S", body="B")
    ids = [
        client.send_sms_notification(PHONE, sms_template, {"n": i}, reference=f"r{i % 2}")["id"]
        for i in range(5)
    ]
    mail = client.send_email_notification("ana@example.org", email_template)["id"]
    everything = client.get_all_notifications()
    assert [n["id"] for n in everything["notifications"]] == [mail, *reversed(ids)]
    assert everything["links"]["current"] == f"{api.url}/v2/notifications"
    assert everything["links"]["next"] == f"{api.url}/v2/notifications?older_than={ids[0]}"
    sms = client.get_all_notifications(template_type="sms", reference="r0")
    assert [n["id"] for n in sms["notifications"]] == [ids[4], ids[2], ids[0]]
    older = client.get_all_notifications(template_type="sms", older_than=ids[3])
    assert [n["id"] for n in older["notifications"]] == [ids[2], ids[1], ids[0]]
    assert client.get_all_notifications(status=["sending", "created"])["notifications"] == []
    walked = list(client.get_all_notifications_iterator(template_type="sms"))
    assert [n["id"] for n in walked] == list(reversed(ids))
    assert walked[0]["body"] == "Test 4" and walked[0]["template"]["version"] == 1
    with pytest.raises(HTTPError) as raised:
        client.get_all_notifications(status="lost", template_type="letterz")
    status, errors = _errors(raised)
    assert status == 400 and [e["message"].split(" is not one of")[0] for e in errors] == [
        "status lost",
        "template_type letterz",
    ]


def test_one_notification_bad_id_and_unknown_id(api):
    client = api()
    with pytest.raises(HTTPError) as raised:
        client.get_notification_by_id("nope")
    assert _errors(raised) == (
        400,
        [{"error": "ValidationError", "message": "notification_id is not a valid UUID"}],
    )
    with pytest.raises(HTTPError) as raised:
        client.get_notification_by_id(str(uuid.uuid4()))
    assert _errors(raised) == (404, [{"error": "NoResultFound", "message": "No result found"}])


def _inbound_sms(client, rt, sid: str, sender: str, body: str) -> None:
    params = {"MessageSid": sid, "From": sender, "To": providers.SANDBOX_FROM_NUMBER, "Body": body}
    url = f"{rt.settings.base_url}/webhooks/twilio/sms"
    signature = RequestValidator(providers.twilio_account(rt).auth_token).compute_signature(
        url, params
    )
    response = client.post(
        "/webhooks/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200


def test_received_text_messages_come_from_the_inbox(api, client):
    rt, notify = api.rt, api()
    for n in range(3):
        _inbound_sms(client, rt, f"SM{n}", "+38641333444", f"Kdaj bo odvoz? {n}")
    work(rt)
    page = notify.get_received_texts()
    texts = page["received_text_messages"]
    assert [t["content"] for t in texts] == [
        "Kdaj bo odvoz? 2",
        "Kdaj bo odvoz? 1",
        "Kdaj bo odvoz? 0",
    ]
    assert {t["user_number"] for t in texts} == {"+38641333444"}
    assert {t["notify_number"] for t in texts} == {providers.SANDBOX_FROM_NUMBER}
    assert {t["service_id"] for t in texts} == {service_id(rt)}
    older = notify.get_received_texts(older_than=texts[0]["id"])["received_text_messages"]
    assert [t["id"] for t in older] == [t["id"] for t in texts[1:]]
    assert [t["id"] for t in notify.get_received_texts_iterator()] == [t["id"] for t in texts]


# -- templates --------------------------------------------------------------------------------


def test_templates_versions_and_preview(api):
    rt, client = api.rt, api()
    sms_id = _template(rt, name="Odvoz")
    email_id = _template(
        rt, "email", subject="Odvoz ((day))", body="Dober dan, ((name)).", name="E"
    )
    with rt.session() as session:
        update_template(session, sms_id, actor="bojan@kranj.si", body="Odvoz ((day)).")
    current = client.get_template(sms_id)
    assert (current["version"], current["body"], current["created_by"]) == (
        2,
        "Odvoz ((day)).",
        "bojan@kranj.si",
    )
    assert current["updated_at"] and current["personalisation"] == {"day": {"required": True}}
    first = client.get_template_version(sms_id, 1)
    assert (first["version"], first["body"], first["created_by"]) == (1, SMS_BODY, "ana@kranj.si")
    assert first["updated_at"] is None and first["type"] == "sms" and first["name"] == "Odvoz"
    assert [t["id"] for t in client.get_all_templates(template_type="email")["templates"]] == [
        email_id
    ]
    assert {t["id"] for t in client.get_all_templates()["templates"]} == {sms_id, email_id}

    preview = client.post_template_preview(email_id, {"name": "Ana", "day": "jutri"})
    assert preview == {
        "id": email_id,
        "type": "email",
        "version": 1,
        "body": "Dober dan, Ana.",
        "subject": "Odvoz jutri",
        "html": "<p>Dober dan, Ana.</p>",
        "postage": None,
    }
    with pytest.raises(HTTPError) as raised:
        client.post_template_preview(email_id, {"name": "Ana"})
    assert _errors(raised) == (
        400,
        [{"error": "BadRequestError", "message": "Missing personalisation: day"}],
    )
    for call, status, message in (
        (lambda: client.get_template(str(uuid.uuid4())), 404, "No result found"),
        (lambda: client.get_template_version(sms_id, 3), 404, "No result found"),
        (lambda: client.get_template("x"), 400, "id is not a valid UUID"),
        (
            lambda: client.get_all_templates(template_type="fax"),
            400,
            "type fax is not one of [sms, email, letter]",
        ),
    ):
        with pytest.raises(HTTPError) as raised:
            call()
        assert _errors(raised)[0] == status and _errors(raised)[1][0]["message"] == message


def test_templates_on_the_command_line(hub, rt, tmp_path):  # noqa: F811
    created = hub(
        "templates",
        "create",
        "--name",
        "Odvoz",
        "--type",
        "email",
        "--subject",
        "Odvoz ((day))",
        "--body",
        "Dober dan, ((name)).",
    ).stdout
    template_id, version = created.split()
    assert version == "1" and uuid.UUID(template_id)
    body = tmp_path / "body.txt"
    body.write_text("Dober dan, ((name)).\n\nOdvoz bo ((day)).", encoding="utf-8")
    updated = hub("templates", "update", template_id, "--body-file", str(body)).stdout
    assert updated.split() == [template_id, "2"]
    assert hub("templates", "list").stdout == f"{template_id}\t2\temail\tOdvoz\n"
    for args in (
        ("create", "--name", "x", "--type", "sms"),
        ("create", "--name", "x", "--type", "email", "--body", "b"),
        ("create", "--name", "x", "--type", "sms", "--body", "b", "--subject", "s"),
        ("create", "--name", "x", "--type", "fax", "--body", "b"),
        ("update", str(uuid.uuid4()), "--name", "y"),
        ("update", template_id, "--body", "  "),
    ):
        result = hub("templates", *args, check=False)
        assert result.returncode == 2, args
        assert result.stderr.strip().splitlines()[-1].startswith("Error: "), args
        assert "Traceback" not in result.stderr
    assert hub("templates", "list").stdout == f"{template_id}\t2\temail\tOdvoz\n"
