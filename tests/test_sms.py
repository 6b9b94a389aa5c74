"""SMS end to end: the hub's send job drives the real `twilio` library over a socket to the
Twilio stand-in; status callbacks come back signed, in any order."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from hub import clock, providers, queues
from hub.broadcasts import NoticeDraft, send_notice
from hub.models import Area, ContactPoint, Delivery, Topic
from hub.residents import ResidentRow, import_rows
from hub.sweeper import sweep
from tests.helpers import work
from tests.processes import wait_until

BODY_SL = "Zaradi del na vodovodu bo v četrtek med 8. in 14. uro prekinjena dobava pitne vode."


def _resident(rt, phone: str, email: str | None = None, locale: str = "sl") -> None:
    addresses = {"sms": phone} | ({"email": email} if email else {})
    with rt.session() as session:
        area_id = session.scalar(select(Area.id).where(Area.slug == "center"))
        topic_id = session.scalar(select(Topic.id).where(Topic.slug == "water-supply"))
        row = ResidentRow("Ana", locale, area_id, [topic_id], addresses, list(addresses))
        import_rows(session, [row])


def _send(rt, gsm7: bool = False, priority: str = "normal") -> int:
    draft = NoticeDraft(
        "Prekinitev dobave vode",
        "water-supply",
        ("center",),
        priority,
        "preferred",
        {"sl": BODY_SL, "en": "Water supply is interrupted on Thursday, 8:00 to 14:00."},
        sms_transliterate=gsm7,
    )
    return send_notice(rt, draft, actor="test")


def _deliveries(rt, broadcast_id: int) -> list[Delivery]:
    with rt.session() as session:
        return list(
            session.scalars(
                select(Delivery).where(Delivery.broadcast_id == broadcast_id).order_by(Delivery.id)
            )
        )


def test_a_resident_gets_the_sms_in_their_language(seeded, standin):
    rt = seeded
    _resident(rt, "+38640111222")
    _resident(rt, "+38641333444", locale="en")
    broadcast_id = _send(rt)
    work(rt)
    received = {m["to"]: m for m in standin.store.messages(channel="sms")}
    assert set(received) == {"+38640111222", "+38641333444"}
    slovenian, english = received["+38640111222"], received["+38641333444"]
    assert "četrtek" in slovenian["body"] and "Prekinitev dobave vode" in slovenian["body"]
    assert "Thursday" in english["body"]
    assert slovenian["meta"]["encoding"] == "UCS-2"
    assert slovenian["meta"]["from"] == providers.SANDBOX_FROM_NUMBER
    rows = _deliveries(rt, broadcast_id)
    assert {r.status for r in rows} == {"sent"}
    assert {r.provider_id for r in rows} == {m["meta"]["sid"] for m in received.values()}


def test_gsm7_transliteration_saves_segments(seeded, standin):
    rt = seeded
    _resident(rt, "+38640111222")
    _send(rt)
    _send(rt, gsm7=True)
    work(rt)
    plain, transliterated = sorted(standin.store.messages(channel="sms"), key=lambda m: m["id"])
    assert plain["meta"]["encoding"] == "UCS-2" and "č" in plain["body"]
    assert transliterated["meta"]["encoding"] == "GSM-7"
    assert "cetrtek" in transliterated["body"] and "č" not in transliterated["body"]
    assert transliterated["meta"]["segments"] < plain["meta"]["segments"]


def test_an_opted_out_number_is_dead_and_the_resident_gets_an_email(seeded, standin, smtp):
    rt = seeded
    _resident(rt, "+15005550004", email="ana@example.org")  # Twilio: 21610, replied STOP
    broadcast_id = _send(rt)
    work(rt)
    sms, email = _deliveries(rt, broadcast_id)
    assert (sms.channel, sms.status) == ("sms", "gone")
    assert "21610" in sms.error
    assert (email.channel, email.status, email.fallback_from_id) == ("email", "sent", sms.id)
    with rt.session() as session:
        number = session.scalar(select(ContactPoint).where(ContactPoint.channel == "sms"))
        assert not number.active and "21610" in number.deactivated_reason
    assert standin.store.count("sms") == 0 and smtp.count("email") == 1


@pytest.mark.parametrize(
    "number, status, code",
    [
        ("+15005550001", "gone", "21211"),  # not a valid number
        ("+15005550009", "gone", "21614"),  # not a mobile number
        ("+15005550003", "failed", "21408"),  # the account may not send there: no retry
    ],
)
def test_twilio_errors_decide_the_outcome(seeded, standin, number, status, code):
    rt = seeded
    _resident(rt, number)
    broadcast_id = _send(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == status and code in row.error


def test_a_throttled_twilio_is_retried_without_counting_against_the_number(seeded, standin):
    rt = seeded
    standin.twilio.control_throttle(count=1)  # the next request gets 429 / 20429
    _resident(rt, "+38640111222")
    broadcast_id = _send(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert (row.status, row.attempts) == ("retry", 0)
    assert "20429" in row.error
    clock.advance_to(row.not_before + timedelta(seconds=rt.settings.sweep_grace_s + 1))
    sweep(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert (row.status, row.attempts) == ("sent", 1)
    assert standin.store.count("sms") == 1


def test_twilio_unreachable_means_retry(seeded, standin):
    rt = seeded
    standin.stop()
    _resident(rt, "+38640111222")
    broadcast_id = _send(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert (row.status, row.attempts) == ("retry", 0)
    assert "Twilio unreachable" in row.error


# -- status callbacks -----------------------------------------------------------------------


def _callback(client, rt, params: dict, signature: str | None = None):
    url = f"{rt.settings.base_url}/webhooks/twilio/status"
    if signature is None:
        token = providers.twilio_account(rt).auth_token
        signature = RequestValidator(token).compute_signature(url, params)
    return client.post(
        "/webhooks/twilio/status", data=params, headers={"X-Twilio-Signature": signature}
    )


def _sent_sms(rt, standin, phone="+38640111222") -> Delivery:
    _resident(rt, phone)
    broadcast_id = _send(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "sent"
    return row


def _status_of(rt, delivery_id: int) -> tuple[str, str | None]:
    with rt.session() as session:
        row = session.get(Delivery, delivery_id)
        return row.status, row.error


def test_forged_status_callbacks_are_refused(seeded, standin, client):
    rt = seeded
    row = _sent_sms(rt, standin)
    params = {"MessageSid": row.provider_id, "MessageStatus": "delivered"}
    forged = RequestValidator("not-the-token").compute_signature(
        f"{rt.settings.base_url}/webhooks/twilio/status", params
    )
    assert _callback(client, rt, params, signature=forged).status_code == 403
    assert _callback(client, rt, params, signature="").status_code == 403
    tampered = _callback(
        client, rt, params | {"MessageStatus": "undelivered"}, signature=_signature(rt, params)
    )
    assert tampered.status_code == 403
    assert _status_of(rt, row.id) == ("sent", None)


def _signature(rt, params: dict) -> str:
    token = providers.twilio_account(rt).auth_token
    return RequestValidator(token).compute_signature(
        f"{rt.settings.base_url}/webhooks/twilio/status", params
    )


def test_status_moves_forward_only(seeded, standin, client):
    rt = seeded
    row = _sent_sms(rt, standin)
    for status in ("delivered", "sent", "queued", "undelivered"):
        response = _callback(client, rt, {"MessageSid": row.provider_id, "MessageStatus": status})
        assert response.status_code == 204
    assert _status_of(rt, row.id) == ("delivered", None)


def test_signature_checked_against_the_public_url_behind_a_proxy(seeded, standin, client):
    rt = seeded
    row = _sent_sms(rt, standin)
    rt.settings.base_url = "https://obvestila.kranj.si"  # what Twilio called, through a proxy
    params = {"MessageSid": row.provider_id, "MessageStatus": "delivered"}
    assert (
        _callback(client, rt, params).status_code == 204
    )  # the request came in as http://localhost
    assert _status_of(rt, row.id)[0] == "delivered"


def test_a_dead_number_reported_by_the_carrier_falls_back(seeded, standin, smtp, client):
    rt = seeded
    _resident(rt, "+38640111222", email="ana@example.org")
    broadcast_id = _send(rt)
    work(rt)
    [sms] = _deliveries(rt, broadcast_id)
    params = {"MessageSid": sms.provider_id, "MessageStatus": "undelivered", "ErrorCode": "30005"}
    assert _callback(client, rt, params).status_code == 204
    work(rt)
    sms, email = _deliveries(rt, broadcast_id)
    assert sms.status == "undelivered" and "30005" in sms.error
    assert (email.status, email.fallback_from_id) == ("sent", sms.id)
    assert smtp.count("email") == 1


def test_bad_callbacks_get_a_clear_400(seeded, standin, client):
    rt = seeded
    assert _callback(client, rt, {"MessageStatus": "delivered"}).status_code == 400
    params = {"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "x"}
    assert _callback(client, rt, params).status_code == 400


def test_the_standin_posts_signed_callbacks_the_hub_accepts(
    live_base_url, seeded, standin, live_server
):
    rt = seeded
    standin.twilio.control_reverse_callbacks(on=True)  # "delivered" first, then a late "sent"
    _resident(rt, "+38640111222")
    broadcast_id = _send(rt)
    work(rt)
    wait_until(lambda: standin.twilio.stats["callback_204"] == 2, 10, "two status callbacks")
    assert standin.twilio.stats["callback_403"] == 0
    [row] = _deliveries(rt, broadcast_id)
    assert (row.status, row.error) == ("delivered", None)


def test_an_early_callback_is_applied_once_the_delivery_is_known(seeded, standin, client):
    """The provider can call back before the send job has recorded its message id."""
    rt = seeded
    row = _sent_sms(rt, standin)
    with rt.session() as session:  # as if the job's commit had not landed yet
        session.get(Delivery, row.id).provider_id = None
    params = {"MessageSid": row.provider_id, "MessageStatus": "delivered"}
    assert _callback(client, rt, params).status_code == 204
    assert _status_of(rt, row.id) == ("sent", None)
    with rt.session() as session:  # now it lands
        session.get(Delivery, row.id).provider_id = params["MessageSid"]
    high = queues.queue(rt.redis, "high")
    [job_id] = ScheduledJobRegistry(queue=high).get_job_ids()
    high.enqueue_job(high.fetch_job(job_id))  # its time has come
    work(rt)
    assert _status_of(rt, row.id) == ("delivered", None)


def test_another_process_can_set_a_scenario_over_http(seeded, standin):
    import json
    import urllib.request

    rt = seeded
    request = urllib.request.Request(
        f"{standin.url}/control/twilio/fail",
        data=json.dumps({"number": "+38640111222", "code": 21610}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    _resident(rt, "+38640111222")
    broadcast_id = _send(rt)
    work(rt)
    [row] = _deliveries(rt, broadcast_id)
    assert row.status == "gone" and "21610" in row.error
    missing = urllib.request.Request(f"{standin.url}/control/twilio/explode", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(missing, timeout=5)
    assert refused.value.code == 404
