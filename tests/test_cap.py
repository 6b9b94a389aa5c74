"""OASIS CAP 1.2: each public notice as an alert valid against the official schema, a Cancel
once it is cancelled, and `hub cap import` turning an alert into an emergency draft."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from flask_babel import force_locale
from lxml import etree
from sqlalchemy import func, select

from hub.broadcasts import NoticeDraft, cancel_broadcast, send_notice
from hub.cap import SCHEMA_PATH, CapError, import_alert
from hub.models import AuditEntry, Broadcast, BroadcastStatus
from hub.planning import plan_broadcast
from tests.helpers import work
from tests.processes import worker_env

CAP = "{urn:oasis:names:tc:emergency:cap:1.2}"
NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}


def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))


def emergency(areas=("center", "planina")) -> NoticeDraft:
    return NoticeDraft(
        title="Poplava: evakuacija",
        topic="emergencies",
        areas=areas,
        priority="emergency",
        channel_policy="all",
        bodies={
            "sl": "Reka Kokra je prestopila bregove.\n\nUmaknite se v višja nadstropja & čakajte.",
            "en": "The Kokra river has burst its banks.\n\nMove upstairs & wait.",
        },
        titles={"en": "Flood: evacuation"},
    )


def cap_of(client, broadcast_id: int) -> etree._Element:
    response = client.get(f"/feeds/cap/{broadcast_id}.xml")
    assert response.status_code == 200
    assert response.content_type == "application/cap+xml; charset=utf-8"
    alert = etree.fromstring(response.data, etree.XMLParser(resolve_entities=False))
    assert schema().validate(alert), schema().error_log
    return alert


def info_by_language(alert) -> dict[str, etree._Element]:
    return {i.findtext("cap:language", namespaces=NS): i for i in alert.findall("cap:info", NS)}


def test_a_two_language_emergency_is_a_valid_cap_alert(seeded, client):
    rt = seeded
    broadcast_id = send_notice(rt, emergency(), actor="test")
    work(rt)
    alert = cap_of(client, broadcast_id)
    assert alert.tag == f"{CAP}alert"
    assert alert.findtext("cap:identifier", namespaces=NS) == f"hub.test:notice:{broadcast_id}"
    assert alert.findtext("cap:sender", namespaces=NS) == "hub.test"
    assert alert.findtext("cap:status", namespaces=NS) == "Actual"
    assert alert.findtext("cap:msgType", namespaces=NS) == "Alert"
    assert alert.findtext("cap:scope", namespaces=NS) == "Public"
    with rt.session() as session:
        planned_at = session.get(Broadcast, broadcast_id).planned_at
    local = planned_at.replace(tzinfo=UTC).astimezone(ZoneInfo("Europe/Ljubljana"))
    assert alert.findtext("cap:sent", namespaces=NS) == local.replace(microsecond=0).isoformat()
    assert re.search(r"\+0[12]:00$", alert.findtext("cap:sent", namespaces=NS))

    infos = info_by_language(alert)
    assert list(infos) == ["sl-SI", "en-US"]
    sl, en = infos["sl-SI"], infos["en-US"]
    for info in (sl, en):
        assert info.findtext("cap:category", namespaces=NS) == "Safety"
        assert info.findtext("cap:urgency", namespaces=NS) == "Immediate"
        assert info.findtext("cap:severity", namespaces=NS) == "Severe"
        assert info.findtext("cap:certainty", namespaces=NS) == "Observed"
        assert info.findtext("cap:senderName", namespaces=NS) == "Kranj"
        assert info.findtext("cap:web", namespaces=NS) == f"http://hub.test/notices/{broadcast_id}"
        assert info.xpath("cap:area/cap:areaDesc/text()", namespaces=NS) == ["Center", "Planina"]
    assert sl.findtext("cap:event", namespaces=NS) == "Nujna obvestila"
    assert en.findtext("cap:event", namespaces=NS) == "Emergencies"
    assert sl.findtext("cap:headline", namespaces=NS) == "Poplava: evakuacija"
    assert en.findtext("cap:headline", namespaces=NS) == "Flood: evacuation"
    assert en.findtext("cap:description", namespaces=NS) == emergency().bodies["en"]


def test_a_notice_for_the_whole_city_names_the_city(seeded, client):
    rt = seeded
    draft = NoticeDraft("Prireditev", "events", (), "bulk", "preferred", {"sl": "Koncert na trgu."})
    broadcast_id = send_notice(rt, draft, actor="test")
    work(rt)
    alert = cap_of(client, broadcast_id)
    (info,) = alert.findall("cap:info", NS)
    assert info.findtext("cap:language", namespaces=NS) == "sl-SI"
    assert info.xpath("cap:area/cap:areaDesc/text()", namespaces=NS) == ["Kranj"]
    assert info.findtext("cap:category", namespaces=NS) == "Other"
    assert info.findtext("cap:urgency", namespaces=NS) == "Future"


def _resident(rt):
    from hub.models import Area
    from hub.residents import ResidentRow, import_rows

    with rt.session() as session:
        area = session.scalar(select(Area.id).where(Area.slug == "center"))
        import_rows(
            session, [ResidentRow("Ana", "sl", area, [], {"email": "ana@example.org"}, ["email"])]
        )


def test_a_notice_cancelled_after_going_out_becomes_a_cancel_message(seeded, client):
    rt = seeded
    _resident(rt)
    broadcast_id = send_notice(rt, emergency(), actor="test")
    plan_broadcast(rt, broadcast_id)  # planned, its e-mail not sent yet: the notice is out
    original = cap_of(client, broadcast_id)
    with rt.session() as session:
        assert session.get(Broadcast, broadcast_id).status == BroadcastStatus.SENDING
        cancel_broadcast(session, broadcast_id)
    cancel = cap_of(client, broadcast_id)
    assert cancel.findtext("cap:msgType", namespaces=NS) == "Cancel"
    identifier = original.findtext("cap:identifier", namespaces=NS)
    assert cancel.findtext("cap:identifier", namespaces=NS) == f"{identifier}:cancel"
    sent = original.findtext("cap:sent", namespaces=NS)
    assert cancel.findtext("cap:references", namespaces=NS) == f"hub.test,{identifier},{sent}"
    assert cancel.findtext("cap:info/cap:responseType", namespaces=NS) == "AllClear"
    assert cancel.find("cap:info/cap:web", NS) is None  # its public page is gone


# -- import -----------------------------------------------------------------------------------


@pytest.fixture
def hub(settings):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hub.cli", *args],
            env=worker_env(settings, LANG="en_US.UTF-8"),
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


def _count(rt, model) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_import_round_trip_makes_an_emergency_draft_with_the_same_texts(
    seeded, client, hub, tmp_path
):
    rt = seeded
    draft = NoticeDraft(
        "Zapora Koroške ceste",
        "road-works",
        ("center", "planina"),
        "normal",
        "preferred",
        {"sl": "Cesta bo zaprta.\n\nObvoz po Bleiweisovi.", "en": "The road is closed."},
        titles={"en": "Koroška road closed"},
    )
    original_id = send_notice(rt, draft, actor="test")
    work(rt)
    path = tmp_path / "alert.xml"
    path.write_bytes(client.get(f"/feeds/cap/{original_id}.xml").data)

    result = hub("cap", "import", str(path))
    assert result.returncode == 0, result.stderr
    new_id = int(re.search(r"emergency draft (\d+) created", result.stdout).group(1))
    with rt.session() as session:
        imported = session.get(Broadcast, new_id)
        assert imported.status == BroadcastStatus.DRAFT
        assert imported.priority == "emergency"
        assert imported.topic.slug == "emergencies"
        assert [a.slug for a in imported.areas] == ["center", "planina"]
        texts = {c.locale: (c.title, c.body) for c in imported.contents}
        entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "cap.import"))
    assert texts == {
        "sl": ("Zapora Koroške ceste", draft.bodies["sl"]),
        "en": ("Koroška road closed", "The road is closed."),
    }
    assert entry.actor == "cli" and entry.target == f"broadcast:{new_id}"
    assert entry.detail["identifier"] == f"hub.test:notice:{original_id}"
    # A draft is not public until an approver starts it.
    assert client.get(f"/feeds/cap/{new_id}.xml").status_code == 404


def _alert(area="Center", *, namespace="urn:oasis:names:tc:emergency:cap:1.2", extra="") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="{namespace}">
  <identifier>urad-zascita-2026-17</identifier>
  <sender>cz@gov.si</sender>
  <sent>2026-03-01T10:00:00+01:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>sl-SI</language>
    <category>Met</category>
    <event>Neurje</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <headline>Močno neurje s točo</headline>
    <description>Pričakujemo točo.{extra}</description>
    <instruction>Avtomobile umaknite pod streho.</instruction>
    <area><areaDesc>{area}</areaDesc></area>
  </info>
</alert>
"""


def test_import_takes_description_and_instruction_and_the_city_as_the_whole_city(seeded):
    rt = seeded
    with rt.session() as session:
        broadcast = import_alert(
            session, _alert("  KRANJ ").encode(), actor="cz", settings=rt.settings
        )
        assert broadcast.areas == [] and broadcast.title == "Močno neurje s točo"
        assert broadcast.contents[0].body == "Pričakujemo točo.\n\nAvtomobile umaknite pod streho."
        assert broadcast.channel_policy == "all"
        broadcast = import_alert(
            session, _alert("orehek - DRULOVKA").encode(), actor="cz", settings=rt.settings
        )
        assert [a.slug for a in broadcast.areas] == ["orehek-drulovka"]


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"<alert><identifier>x</alert>", "not well-formed XML"),
        (_alert(namespace="urn:oasis:names:tc:emergency:cap:1.1").encode(), "not a CAP 1.2 alert"),
        (_alert().replace("<scope>Public</scope>", "").encode(), "not a valid CAP 1.2 alert"),
        (_alert().replace("<status>Actual", "<status>Exercise").encode(), "status Actual"),
        (_alert().replace("<msgType>Alert", "<msgType>Cancel").encode(), "Alert and Update"),
        (_alert("Atlantis").encode(), "unknown areas in the alert: Atlantis"),
        (_alert().replace("sl-SI", "de-DE").encode(), "no info block in sl, en"),
        (_alert(extra="x" * 1_000_001).encode(), "larger than"),
    ],
)
def test_bad_alerts_are_refused_and_nothing_is_stored(seeded, document, reason):
    rt = seeded
    with (
        force_locale("en"),  # the reasons are read in English here
        pytest.raises(CapError, match=re.escape(reason)),
        rt.session() as session,
    ):
        import_alert(session, document, actor="cz", settings=rt.settings)
    assert _count(rt, Broadcast) == 0
    assert _count(rt, AuditEntry) == 0


def test_cli_refuses_bad_alerts_with_one_line_and_exit_2(seeded, hub, tmp_path):
    rt = seeded
    cases = {
        "malformed.xml": b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>",
        "namespace.xml": _alert(namespace="urn:example:not-cap").encode(),
        "unknown-area.xml": _alert("Atlantis").encode(),
    }
    for name, document in cases.items():
        path = tmp_path / name
        path.write_bytes(document)
        result = hub("cap", "import", str(path))
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, result.stderr)
    assert "unknown areas in the alert: Atlantis" in result.stderr
    assert _count(rt, Broadcast) == 0


def test_an_xxe_attempt_is_not_resolved(seeded, hub, tmp_path):
    rt = seeded
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    document = _alert(extra="&xxe;").replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<!DOCTYPE alert [<!ENTITY xxe SYSTEM "file://{secret}">]>',
    )
    path = tmp_path / "xxe.xml"
    path.write_text(document, encoding="utf-8")
    result = hub("cap", "import", str(path))
    assert result.returncode == 2
    assert "DOCTYPE" in result.stderr
    assert "TOP-SECRET-VALUE" not in result.stdout + result.stderr
    with pytest.raises(CapError), rt.session() as session:
        import_alert(session, document.encode(), actor="cz", settings=rt.settings)
    assert _count(rt, Broadcast) == 0


# -- import over HTTP (admins only, CSRF) -------------------------------------------------------


def _signed_in(client, rt, role: str):
    from hub.staff import create_staff_user

    email = f"{role}@kranj.example"
    with rt.session() as session:
        create_staff_user(session, email=email, role=role, password="correct horse battery")
    token = _csrf(client, "/login")
    client.post(
        "/login", data={"email": email, "password": "correct horse battery", "csrf_token": token}
    )
    return client


def _csrf(client, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def _upload(client, document: bytes, token: str | None):
    from io import BytesIO

    data = {"alert": (BytesIO(document), "alert.xml")}
    if token:
        data["csrf_token"] = token
    return client.post(
        "/admin/cap/import",
        data=data,
        content_type="multipart/form-data",
        headers={"Accept-Language": "en"},
    )


def test_an_admin_imports_an_alert_over_http_with_csrf(seeded, client):
    rt = seeded
    _signed_in(client, rt, "admin")
    token = _csrf(client, "/admin/cap/import")
    assert _upload(client, _alert().encode(), token=None).status_code == 400  # no CSRF token
    assert _count(rt, Broadcast) == 0
    refused = _upload(client, _alert("Atlantis").encode(), token)
    assert refused.status_code == 400
    assert "unknown areas in the alert: Atlantis" in refused.text
    assert _count(rt, Broadcast) == 0
    created = _upload(client, _alert().encode(), token)
    assert created.status_code == 201
    new_id = int(re.search(r"Emergency draft (\d+) created", created.text).group(1))
    with rt.session() as session:
        imported = session.get(Broadcast, new_id)
        assert (imported.status, imported.priority) == ("draft", "emergency")
        assert imported.created_by == "admin@kranj.example"


def test_only_admins_may_import_over_http(seeded, client):
    rt = seeded
    anonymous = client.get("/admin/cap/import")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    _signed_in(client, rt, "broadcaster")
    assert client.get("/admin/cap/import").status_code == 403
