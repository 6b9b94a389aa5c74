"""/api/v1 as another city system uses it: keys and roles on every endpoint, residents,
notices, deliveries and conversations, idempotent POSTs, cursor pages, and bad input that gets
a clear problem+json and changes nothing."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from hub import idempotency
from hub.apikeys import create_api_key, key_for_bearer, revoke_api_key
from hub.conversations import receive
from hub.models import (
    ApiKeyType,
    AuditEntry,
    Broadcast,
    ContactPoint,
    Message,
    Resident,
    Role,
    Subscription,
)
from hub.web import access_rule
from hub.web.api_support import API_KEY_ATTR
from hub.web.api_v1 import api
from tests.helpers import work

PROBLEM = "application/problem+json"
ANA = {
    "name": "Ana Novak",
    "locale": "sl",
    "area": "center",
    "topics": ["waste-collection", "road-works"],
    "email": "Ana@Example.ORG",
    "phone": "041 123 456",
    "channels": ["sms", "email"],
    "quiet_hours": "22:00-07:00",
}
NOTICE = {
    "title": "Odvoz odpadkov",
    "topic": "waste-collection",
    "areas": ["center"],
    "bodies": {"sl": "Jutri odvoz bioloških odpadkov.", "en": "Organic waste tomorrow."},
}

# Who may call what; admin may call everything. A new endpoint must be added here.
ROLES_OF = {
    "list_areas": {"broadcaster", "approver", "agent"},
    "list_topics": {"broadcaster", "approver", "agent"},
    "list_residents": {"broadcaster", "approver"},
    "get_resident": {"broadcaster", "approver"},
    "create_resident": set(),
    "import_residents": set(),
    "patch_resident": set(),
    "erase_resident": set(),
    "list_broadcasts": {"broadcaster", "approver"},
    "create_broadcast": {"broadcaster", "approver"},
    "get_broadcast": {"broadcaster", "approver"},
    "broadcast_status": {"broadcaster", "approver"},
    "approve_broadcast": {"broadcaster", "approver"},
    "cancel": {"broadcaster", "approver"},
    "list_deliveries": {"broadcaster", "approver"},
    "list_conversations": {"agent"},
    "get_conversation": {"agent"},
    "list_messages": {"agent"},
    "reply_to": {"agent"},
}


@pytest.fixture
def keys(seeded):
    """A normal key per role, by role name."""
    return {
        role: create_api_key(
            seeded,
            name=f"{role} system",
            role=role,
            key_type="normal",
            created_by="admin@kranj.example",
        )
        for role in Role.ALL
    }


def call(client, method, path, key=None, json=None, headers=None, **kwargs):
    headers = {"Accept-Language": "en", **(headers or {})}  # the messages are read in English
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return client.open(f"/api/v1{path}", method=method, json=json, headers=headers, **kwargs)


def assert_problem(response, status):
    assert response.status_code == status, response.text
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in response.text
    return body


def count(rt, model) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).select_from(model))


# -- keys and roles ------------------------------------------------------------------------


def test_every_api_route_is_an_operation_with_a_role_check_or_public_on_purpose(app):
    operations = {f"api_v1.{op.endpoint}": op for op in api.operations}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        view = app.view_functions[rule.endpoint]
        if rule.endpoint in ("api_v1.openapi_json", "api_v1.docs"):
            assert access_rule(view) == "public"
            continue
        assert getattr(view, API_KEY_ATTR, False), f"{rule} does not check an API key"
        assert rule.endpoint in operations, f"{rule} is not in the OpenAPI document"
    assert set(ROLES_OF) == {op.endpoint for op in api.operations}, "update ROLES_OF"
    for op in api.operations:
        assert op.roles == frozenset(ROLES_OF[op.endpoint] | {"admin"}), op.endpoint


def _sample_request(op):
    """The operation on a missing id with an empty body: past the key check it can only
    answer 200, 404 or 422, so each role's status shows the role check alone."""
    path = op.rule
    for name in ("resident_id", "broadcast_id", "conversation_id"):
        path = path.replace(f"<int(min=1, max=2147483647):{name}>", "999999")
    body = ([] if op.endpoint == "import_residents" else {}) if op.body is not None else None
    return op.method, path, body


def test_each_endpoint_answers_each_role_as_the_table_says(client, keys, rt):
    before = count(rt, Resident), count(rt, Broadcast)
    for op in api.operations:
        method, path, body = _sample_request(op)
        anonymous = call(client, method, path, json=body)
        assert_problem(anonymous, 401)
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        for role, key in keys.items():
            response = call(client, method, path, key, json=body)
            if role == "admin" or role in ROLES_OF[op.endpoint]:
                assert response.status_code in (200, 404, 422), (op.endpoint, role, response.text)
            else:
                assert_problem(response, 403)
                assert role in response.get_json()["detail"]
    assert (count(rt, Resident), count(rt, Broadcast)) == before


def test_missing_wrong_and_revoked_keys_get_401(client, keys, rt):
    assert_problem(call(client, "GET", "/areas", headers={"Authorization": "Basic eDp5"}), 401)
    garbage = call(client, "GET", "/areas", "not-a-key")
    assert_problem(garbage, 401)
    assert garbage.headers["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'
    holder = key_for_bearer(rt, keys["agent"])
    assert call(client, "GET", "/areas", keys["agent"]).status_code == 200
    revoke_api_key(rt, holder.id, actor="admin@kranj.example")
    assert_problem(call(client, "GET", "/areas", keys["agent"]), 401)


# -- residents -------------------------------------------------------------------------------


def test_a_resident_is_created_read_changed_and_erased(client, keys, rt):
    admin = keys["admin"]
    created = call(client, "POST", "/residents", admin, json=ANA)
    assert created.status_code == 201, created.text
    ana = created.get_json()
    assert ana["phone"] == "+38641123456" and ana["email"] == "Ana@example.org"
    assert ana["channels"] == ["sms", "email"] and ana["quiet_hours"] == "22:00-07:00"
    assert ana["topics"] == ["road-works", "waste-collection"] and ana["area"] == "center"
    assert created.headers["Location"] == f"/api/v1/residents/{ana['id']}"
    assert call(client, "GET", f"/residents/{ana['id']}", keys["broadcaster"]).get_json() == ana

    changed = call(
        client,
        "PATCH",
        f"/residents/{ana['id']}",
        admin,
        json={"phone": "+386 31 555 444", "email": None, "topics": ["events"]},
    )
    assert changed.status_code == 200, changed.text
    body = changed.get_json()
    assert (body["phone"], body["email"], body["topics"]) == ("+38631555444", None, ["events"])
    assert body["channels"] == ["sms"] and body["name"] == "Ana Novak"
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 1
        email = session.scalar(select(ContactPoint).where(ContactPoint.channel == "email"))
        assert email.active is False  # kept for its delivery history, never used again
        actors = set(
            session.scalars(select(AuditEntry.actor).where(AuditEntry.action.like("resident.%")))
        )
    assert actors == {"admin system"}

    assert call(client, "DELETE", f"/residents/{ana['id']}", admin).status_code == 204
    assert_problem(call(client, "GET", f"/residents/{ana['id']}", admin), 404)
    assert_problem(call(client, "DELETE", f"/residents/{ana['id']}", admin), 404)
    assert count(rt, ContactPoint) == 0


def test_bulk_import_is_all_or_nothing_and_names_every_bad_record(client, keys, rt):
    good = {"name": "Janez", "area": "center", "topics": ["events"], "phone": "040 111 222"}
    records = [
        good,
        {**good, "phone": "12", "name": "Bad phone"},
        {**good, "phone": "040 111 333", "topics": ["no-such-topic"]},
        {**good, "phone": "040 111 222", "name": "Same phone as the first"},
    ]
    rejected = call(client, "POST", "/residents/import", keys["admin"], json=records)
    errors = assert_problem(rejected, 422)["errors"]
    assert [e["pointer"] for e in errors] == ["#/1", "#/2", "#/3"]
    assert "12" in errors[0]["detail"] and "no-such-topic" in errors[1]["detail"]
    assert count(rt, Resident) == 0

    wrong_type = call(
        client, "POST", "/residents/import", keys["admin"], json=[{**good, "topics": "events"}]
    )
    assert [e["pointer"] for e in assert_problem(wrong_type, 422)["errors"]] == ["#/0/topics"]

    records = [good, {**good, "phone": "040 111 333"}, {**good, "phone": None, "email": "j@x.si"}]
    imported = call(client, "POST", "/residents/import", keys["admin"], json=records)
    assert imported.status_code == 201, imported.text
    ids = imported.get_json()["ids"]
    assert len(ids) == 3 and count(rt, Resident) == 3


@pytest.mark.parametrize(
    ("body", "kwargs", "status", "pointer"),
    [
        (None, {"data": "{not json", "content_type": "application/json"}, 400, None),
        (
            None,
            {"data": "name=Ana", "content_type": "application/x-www-form-urlencoded"},
            415,
            None,
        ),
        ({**ANA, "name": 42}, {}, 422, "#/name"),
        ({**ANA, "topics": ["waste-collection", 7]}, {}, 422, "#/topics/1"),
        ({**ANA, "colour": "blue"}, {}, 422, "#/colour"),
        ({**ANA, "name": "Ana\x00"}, {}, 422, "#/name"),
        ({**ANA, "topics": ["no-such-topic"]}, {}, 422, "#"),
        ({**ANA, "phone": "041 12"}, {}, 422, "#"),
        ({**ANA, "area": "atlantis"}, {}, 422, "#"),
        ({k: v for k, v in ANA.items() if k != "area"}, {}, 422, "#/area"),
    ],
)
def test_bad_input_gets_a_clear_problem_and_changes_nothing(
    client, keys, rt, body, kwargs, status, pointer
):
    response = call(client, "POST", "/residents", keys["admin"], json=body, **kwargs)
    problem = assert_problem(response, status)
    if pointer is not None:
        assert problem["errors"][0]["pointer"] == pointer
        assert problem["errors"][0]["detail"]
    assert count(rt, Resident) == 0


def test_an_address_of_another_resident_is_a_duplicate(client, keys, rt):
    first = call(client, "POST", "/residents", keys["admin"], json=ANA).get_json()
    other = call(client, "POST", "/residents", keys["admin"], json={**ANA, "email": None})
    assert "+38641123456" in assert_problem(other, 422)["detail"]
    second = call(
        client,
        "POST",
        "/residents",
        keys["admin"],
        json={**ANA, "phone": "040 999 888", "email": "b@x.si"},
    )
    taken = call(
        client,
        "PATCH",
        f"/residents/{second.get_json()['id']}",
        keys["admin"],
        json={"phone": ANA["phone"]},
    )
    assert_problem(taken, 422)
    same = call(
        client, "PATCH", f"/residents/{first['id']}", keys["admin"], json={"phone": ANA["phone"]}
    )
    assert same.status_code == 200  # your own address is not a duplicate of itself


# -- idempotency -----------------------------------------------------------------------------


def test_a_retried_post_gets_the_first_answer_and_creates_nothing_twice(client, keys, rt):
    headers = {"Idempotency-Key": "import-2026-05-01"}
    first = call(client, "POST", "/residents", keys["admin"], json=ANA, headers=headers)
    again = call(client, "POST", "/residents", keys["admin"], json=ANA, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(rt, Resident) == 1

    other_body = call(
        client, "POST", "/residents", keys["admin"], json={**ANA, "name": "X"}, headers=headers
    )
    assert "Idempotency-Key" in assert_problem(other_body, 422)["detail"]
    other_key = create_api_key(rt, name="other", role="admin", key_type="normal", created_by="a")
    own = call(
        client,
        "POST",
        "/residents",
        other_key,
        json={**ANA, "phone": "040 1", "email": None},
        headers=headers,
    )
    assert own.status_code == 422 and "Idempotent-Replayed" not in own.headers  # its own key space
    assert count(rt, Resident) == 1
    bad_key = call(
        client,
        "POST",
        "/residents",
        keys["admin"],
        json=ANA,
        headers={"Idempotency-Key": "x" * 256},
    )
    assert_problem(bad_key, 400)


def test_a_retried_approval_starts_the_notice_once(client, keys, rt):
    draft = call(client, "POST", "/broadcasts", keys["broadcaster"], json=NOTICE).get_json()
    headers = {"Idempotency-Key": "approve-1"}
    path = f"/broadcasts/{draft['id']}/approve"
    first = call(client, "POST", path, keys["approver"], headers=headers)
    again = call(client, "POST", path, keys["approver"], headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json() and first.get_json()["status"] == "scheduled"
    assert_problem(call(client, "POST", path, keys["approver"]), 409)  # without the key: told
    with rt.session() as session:
        approvals = session.scalar(
            select(func.count()).where(AuditEntry.action == "broadcast.approve")
        )
    assert approvals == 1


def test_concurrent_duplicates_do_not_both_run(app, keys, rt):
    results = []
    barrier = threading.Barrier(6)

    def post():
        with app.test_client() as client:
            barrier.wait()
            results.append(
                call(
                    client,
                    "POST",
                    "/residents",
                    keys["admin"],
                    json=ANA,
                    headers={"Idempotency-Key": "same"},
                )
            )

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in results)
    assert set(statuses) <= {201, 409} and 201 in statuses, statuses
    assert len({r.text for r in results if r.status_code == 201}) == 1
    assert count(rt, Resident) == 1


def test_a_claim_is_taken_once(rt, keys):
    holder = key_for_bearer(rt, keys["admin"])
    assert idempotency.claim(rt, holder.id, "k", "hash") is None
    with pytest.raises(idempotency.StillRunning):
        idempotency.claim(rt, holder.id, "k", "hash")
    with pytest.raises(idempotency.KeyReused):
        idempotency.claim(rt, holder.id, "k", "another hash")
    idempotency.release(rt, holder.id, "k")
    assert idempotency.claim(rt, holder.id, "k", "hash") is None


# -- pages -----------------------------------------------------------------------------------


def test_pages_follow_next_without_duplicates_or_gaps(client, keys, rt):
    seen, url, pages = [], "/api/v1/areas?limit=7", 0
    while url:
        response = client.get(url, headers={"Authorization": f"Bearer {keys['agent']}"})
        assert response.status_code == 200
        body = response.get_json()
        seen += [a["slug"] for a in body["items"]]
        assert len(body["items"]) <= 7
        if body["next"]:
            assert response.headers["Link"] == f'<{body["next"]}>; rel="next"'
        url, pages = body["next"], pages + 1
    assert pages == 4 and len(seen) == len(set(seen)) == 26

    records = [{"name": f"R{i}", "area": "center", "phone": f"040 200 {i:03d}"} for i in range(120)]
    assert call(client, "POST", "/residents/import", keys["admin"], json=records).status_code == 201
    capped = call(client, "GET", "/residents?limit=1000", keys["admin"]).get_json()
    assert len(capped["items"]) == 100
    rest = call(
        client, "GET", f"/residents?cursor={capped['next_cursor']}", keys["admin"]
    ).get_json()
    assert [r["name"] for r in capped["items"] + rest["items"]] == [f"R{i}" for i in range(120)]
    assert rest["next"] is None and rest["next_cursor"] is None
    assert_problem(call(client, "GET", "/residents?cursor=nonsense", keys["admin"]), 400)
    assert_problem(call(client, "GET", "/residents?limit=many", keys["admin"]), 400)


# -- notices and deliveries ------------------------------------------------------------------


def test_a_notice_is_drafted_approved_sent_counted_and_its_deliveries_queried(
    client, keys, rt, smtp
):
    for i in range(3):
        resident = {
            "name": f"R{i}",
            "area": "center",
            "topics": ["waste-collection"],
            "email": f"r{i}@x.si",
        }
        call(client, "POST", "/residents", keys["admin"], json=resident)
    created = call(client, "POST", "/broadcasts", keys["broadcaster"], json=NOTICE)
    assert created.status_code == 201, created.text
    notice = created.get_json()
    assert (notice["status"], notice["created_by"], notice["topic"]) == (
        "draft",
        "broadcaster system",
        "waste-collection",
    )
    assert notice["bodies"]["en"] == "Organic waste tomorrow."
    assert (
        call(client, "GET", "/broadcasts", keys["approver"]).get_json()["items"][0]["id"]
        == notice["id"]
    )

    approved = call(client, "POST", f"/broadcasts/{notice['id']}/approve", keys["broadcaster"])
    assert (
        approved.status_code == 200 and approved.get_json()["approved_by"] == "broadcaster system"
    )
    work(rt)
    status = call(
        client, "GET", f"/broadcasts/{notice['id']}/status", keys["broadcaster"]
    ).get_json()
    assert (status["status"], status["total"], status["open"]) == ("done", 3, 0)
    assert status["by_status"] == {"sent": 3} and status["by_channel"] == {"email": {"sent": 3}}
    assert len(smtp.messages(channel="email")) == 3

    resident_id = call(client, "GET", "/residents", keys["admin"]).get_json()["items"][0]["id"]
    mine = call(
        client,
        "GET",
        f"/deliveries?broadcast_id={notice['id']}&resident_id={resident_id}&status=sent",
        keys["approver"],
    )
    [delivery] = mine.get_json()["items"]
    assert (delivery["resident_id"], delivery["channel"]) == (resident_id, "email")
    assert delivery["sent_at"].endswith("Z")
    none = call(
        client, "GET", f"/deliveries?broadcast_id={notice['id']}&status=failed", keys["approver"]
    )
    assert none.get_json()["items"] == []
    assert_problem(call(client, "GET", "/deliveries?status=lost", keys["approver"]), 400)
    assert_problem(
        call(client, "POST", f"/broadcasts/{notice['id']}/cancel", keys["broadcaster"]), 409
    )


def test_bad_notices_are_refused_and_nothing_is_stored(client, keys, rt):
    for body in (
        {**NOTICE, "topic": "no-such-topic"},
        {**NOTICE, "areas": ["atlantis"]},
        {**NOTICE, "bodies": {"en": "English only"}},
        {**NOTICE, "bodies": {"sl": "x", "de": "Deutsch"}},
        {**NOTICE, "priority": "urgent"},
        {**NOTICE, "scheduled_at": "2001-01-01T00:00:00+01:00"},
        {**NOTICE, "scheduled_at": "2030-01-01T08:00:00"},
    ):
        assert_problem(call(client, "POST", "/broadcasts", keys["broadcaster"], json=body), 422)
    assert count(rt, Broadcast) == 0


def test_an_emergency_needs_a_second_key_to_approve_it(client, keys, rt):
    emergency = {**NOTICE, "priority": "emergency"}
    draft = call(client, "POST", "/broadcasts", keys["approver"], json=emergency).get_json()
    path = f"/broadcasts/{draft['id']}/approve"
    refused = call(client, "POST", path, keys["approver"])
    assert "second person" in assert_problem(refused, 403)["detail"]
    assert (
        "approver" in assert_problem(call(client, "POST", path, keys["broadcaster"]), 403)["detail"]
    )
    assert (
        call(client, "GET", f"/broadcasts/{draft['id']}", keys["approver"]).get_json()["status"]
        == "draft"
    )
    approved = call(client, "POST", path, keys["admin"])
    assert approved.status_code == 200 and approved.get_json()["approved_by"] == "admin system"


def test_a_draft_can_be_cancelled(client, keys):
    draft = call(client, "POST", "/broadcasts", keys["broadcaster"], json=NOTICE).get_json()
    cancelled = call(client, "POST", f"/broadcasts/{draft['id']}/cancel", keys["broadcaster"])
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"
    assert_problem(
        call(client, "POST", f"/broadcasts/{draft['id']}/approve", keys["broadcaster"]), 409
    )


def test_a_test_key_never_sends(client, keys, rt):
    test_key = create_api_key(
        rt, name="trial", role="admin", key_type=ApiKeyType.TEST, created_by="a"
    )
    draft = call(client, "POST", "/broadcasts", test_key, json=NOTICE)
    assert draft.status_code == 201  # a draft sends nothing
    refused = call(client, "POST", f"/broadcasts/{draft.get_json()['id']}/approve", test_key)
    assert "test key" in assert_problem(refused, 403)["detail"]
    assert (
        call(client, "GET", f"/broadcasts/{draft.get_json()['id']}", test_key).get_json()["status"]
        == "draft"
    )
    conversation_id = _conversation(client, keys, rt)
    refused = call(
        client, "POST", f"/conversations/{conversation_id}/messages", test_key, json={"text": "Hi"}
    )
    assert_problem(refused, 403)
    with rt.session() as session:
        assert session.scalar(select(func.count()).where(Message.direction == "out")) == 0


# -- conversations ---------------------------------------------------------------------------


def _conversation(client, keys, rt) -> int:
    call(client, "POST", "/residents", keys["admin"], json=ANA)
    with rt.session() as session:
        return receive(
            session, "sms", "+38641123456", "Kdaj bo odvoz?", default_locale="sl"
        ).conversation_id


def test_an_agent_reads_the_inbox_and_answers(client, keys, rt, standin):
    conversation_id = _conversation(client, keys, rt)
    agent = keys["agent"]
    [listed] = call(client, "GET", "/conversations", agent).get_json()["items"]
    assert (listed["id"], listed["channel"], listed["unread"]) == (conversation_id, "sms", 1)
    assert call(client, "GET", "/conversations?status=resolved", agent).get_json()["items"] == []
    assert (
        call(client, "GET", f"/conversations/{conversation_id}", agent).get_json()["status"]
        == "open"
    )

    answered = call(
        client,
        "POST",
        f"/conversations/{conversation_id}/messages",
        agent,
        json={"text": "Jutri zjutraj."},
        headers={"Idempotency-Key": "answer-1"},
    )
    assert answered.status_code == 201, answered.text
    again = call(
        client,
        "POST",
        f"/conversations/{conversation_id}/messages",
        agent,
        json={"text": "Jutri zjutraj."},
        headers={"Idempotency-Key": "answer-1"},
    )
    assert again.get_json() == answered.get_json()
    work(rt)
    assert [m["body"] for m in standin.store.messages(channel="sms")] == ["Jutri zjutraj."]
    thread = call(client, "GET", f"/conversations/{conversation_id}/messages", agent).get_json()[
        "items"
    ]
    assert [(m["direction"], m["body"]) for m in thread] == [
        ("in", "Kdaj bo odvoz?"),
        ("out", "Jutri zjutraj."),
    ]
    assert thread[1]["status"] == "sent"
    empty = call(
        client, "POST", f"/conversations/{conversation_id}/messages", agent, json={"text": ""}
    )
    assert assert_problem(empty, 422)["errors"][0]["pointer"] == "#/text"
    nowhere = call(
        client,
        "POST",
        f"/conversations/{conversation_id}/messages",
        agent,
        json={"text": "x", "channel": "telegram"},
    )
    assert "telegram" in assert_problem(nowhere, 422)["detail"]
    assert_problem(call(client, "GET", "/conversations/999/messages", agent), 404)


def test_unknown_addresses_and_methods_are_problems(client, keys):
    assert_problem(call(client, "GET", "/nothing-here", keys["admin"]), 404)
    wrong = call(client, "PUT", "/areas", keys["admin"], json={})
    assert_problem(wrong, 405)
    assert "GET" in wrong.headers["Allow"]
    assert_problem(call(client, "GET", "/residents/0", keys["admin"]), 404)
    assert_problem(call(client, "GET", "/residents/99999999999999999999", keys["admin"]), 404)
