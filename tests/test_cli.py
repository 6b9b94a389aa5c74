"""The `hub` command as an operator runs it: a real process against the test database."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from hub.models import Broadcast, Resident, StaffUser
from tests.processes import WorkerProcesses, worker_env

HEADER = "name,email,phone,locale,area,topics,channels,quiet_hours\n"


@pytest.fixture
def hub(settings, tmp_path):
    def run(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "hub.cli", *args],
            env=worker_env(settings, LANG="en_US.UTF-8", **env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"hub {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    return run


def _count(rt, model) -> int:
    with rt.session() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_reference_data_and_lists(hub, rt):
    assert "added 26 areas, 7 topics" in hub("seed", "kranj").stdout
    assert "added 0 areas, 0 topics" in hub("seed", "kranj").stdout  # idempotent
    areas = hub("areas", "list").stdout.splitlines()
    assert len(areas) == 26
    assert "strazisce\tStražišče" in areas
    assert "waste-collection\tOdvoz odpadkov" in hub("topics", "list").stdout.splitlines()


def test_db_upgrade_is_repeatable(hub):
    assert "database at revision head" in hub("db", "upgrade").stdout


def test_users_create_prints_password_once_and_rejects_bad_input(hub, rt):
    out = hub("users", "create", "--email", "Ana@Kranj.si", "--role", "approver").stdout
    assert "created approver ana@kranj.si; password (shown once): " in out
    again = hub("users", "create", "--email", "ana@kranj.si", "--role", "agent", check=False)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    bad_role = hub("users", "create", "--email", "b@kranj.si", "--role", "king", check=False)
    assert bad_role.returncode == 2
    assert _count(rt, StaffUser) == 1


def test_import_good_file(hub, rt, tmp_path):
    hub("seed", "kranj")
    path = tmp_path / "residents.csv"
    path.write_text(
        HEADER
        + "Ana Novak,ana@example.org,041 123 456,sl,center,waste-collection;events,sms;email,"
        + "22:00-07:00\n"
        + "John Smith,john@example.org,,en,planina,road-works,,\n",
        encoding="utf-8",
    )
    result = hub("residents", "import", str(path))
    assert "imported 2 residents" in result.stdout
    with rt.session() as session:
        ana = session.scalar(select(Resident).where(Resident.name == "Ana Novak"))
        channels = [(c.channel, c.address, c.rank) for c in ana.contact_points]
        assert channels == [("sms", "+38641123456", 1), ("email", "ana@example.org", 2)]
        assert (ana.quiet_start, ana.quiet_end) == (22 * 60, 7 * 60)


def test_import_with_bad_rows_imports_nothing_and_lists_each(hub, rt, tmp_path):
    hub("seed", "kranj")
    path = tmp_path / "residents.csv"
    path.write_text(
        HEADER
        + "Ok Person,ok@example.org,,sl,center,events,,\n"
        + "Lost,lost@example.org,,sl,atlantis,events,,\n"
        + "Typo,not-an-email,,sl,center,events,,\n"
        + "Phone,,12,sl,center,events,,\n"
        + "Twin,ok@example.org,,sl,center,events,,\n"
        + "Topicless,t@example.org,,sl,center,knitting,,\n"
        + "Sleepy,s@example.org,,sl,center,events,,25:00-07:00\n",
        encoding="utf-8",
    )
    result = hub("residents", "import", str(path), check=False)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert any(line.startswith("line 3: unknown area atlantis") for line in lines)
    assert any(line.startswith("line 4: malformed e-mail address not-an-email") for line in lines)
    assert any(line.startswith("line 5: malformed phone number 12") for line in lines)
    assert any("line 6: duplicate ok@example.org, already used by line 2" in ln for ln in lines)
    assert any(line.startswith("line 7: unknown topic knitting") for line in lines)
    assert any(line.startswith("line 8: quiet hours must look like") for line in lines)
    assert "6 bad rows" in result.stderr and "nothing was imported" in result.stderr
    assert _count(rt, Resident) == 0


def test_import_rejects_missing_columns_and_non_utf8(hub, rt, tmp_path):
    hub("seed", "kranj")
    no_columns = tmp_path / "a.csv"
    no_columns.write_text("name,email\nAna,ana@example.org\n", encoding="utf-8")
    result = hub("residents", "import", str(no_columns), check=False)
    assert result.returncode == 2
    assert "missing columns: phone, locale, area, topics" in result.stderr
    latin = tmp_path / "b.csv"
    latin.write_bytes((HEADER + "Žiga,z@example.org,,sl,center,events,,\n").encode("cp1250"))
    result = hub("residents", "import", str(latin), check=False)
    assert result.returncode == 2
    assert "is not UTF-8" in result.stderr
    assert _count(rt, Resident) == 0


def test_import_refuses_addresses_already_known(hub, rt, tmp_path):
    hub("seed", "kranj")
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "Ana,ana@example.org,,sl,center,events,,\n", encoding="utf-8")
    hub("residents", "import", str(path))
    again = hub("residents", "import", str(path), check=False)
    assert again.returncode == 2
    assert "already used by a resident already in the hub" in again.stderr
    assert _count(rt, Resident) == 1


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--topic", "knitting"], "unknown topic knitting"),
        (["--area", "atlantis"], "unknown area atlantis"),
        (["--body-sl", ""], "the text in sl is required"),
        (["--priority", "urgent"], "Invalid value for '--priority'"),
        (["--at", "tomorrow"], "--at must be an ISO time"),
        (["--at", "2020-01-01T08:00"], "the scheduled time is in the past"),
    ],
)
def test_broadcast_send_bad_input_exits_2_and_changes_nothing(hub, rt, args, reason):
    hub("seed", "kranj")
    base = {"--topic": "events", "--title": "Koncert", "--body-sl": "Danes ob 20h."}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = hub("broadcast", "send", *[x for kv in base.items() for x in kv], check=False)
    assert result.returncode == 2
    assert reason in result.stderr
    assert _count(rt, Broadcast) == 0


def test_broadcast_send_wait_shows_progress_and_summary(hub, rt, smtp, settings, tmp_path):
    hub("seed", "kranj")
    path = tmp_path / "r.csv"
    rows = "".join(
        f"R{i},r{i}@example.org,,{'en' if i % 2 else 'sl'},center,events,,\n" for i in range(40)
    )
    path.write_text(HEADER + rows, encoding="utf-8")
    hub("residents", "import", str(path))
    workers = WorkerProcesses(settings, tmp_path)
    workers.start()
    try:
        result = hub(
            "broadcast",
            "send",
            "--topic",
            "events",
            "--area",
            "center",
            "--title",
            "Koncert",
            "--title-en",
            "Concert",
            "--body-sl",
            "Danes ob 20h.",
            "--body-en",
            "Tonight at 8.",
            "--wait",
        )
    finally:
        workers.stop_all()
    assert "notice 1 queued" in result.stdout
    assert "notice 1: Done, 40 deliveries" in result.stdout
    assert re.search(r"^  email +Sent +40$", result.stdout, re.MULTILINE)
    english = [m for m in smtp.messages() if m["subject"] == "Concert"]
    assert len(english) == 20 and all("Tonight at 8." in m["body"] for m in english)


def test_commands_on_an_unmigrated_database_say_what_to_do(hub, tmp_path):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    result = hub("topics", "list", check=False, HUB_DATABASE_URL=empty)
    assert result.returncode == 1
    assert "run `hub db upgrade` first" in result.stderr
    assert "Traceback" not in result.stderr


def test_redis_down_at_send_saves_the_notice_and_says_so(hub, rt):
    hub("seed", "kranj")
    send = ("broadcast", "send", "--topic", "events", "--title", "Koncert", "--body-sl", "Danes.")
    result = hub(*send, check=False, HUB_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 1
    assert "notice 1 is saved, but Redis cannot be reached" in result.stderr
    assert "Traceback" not in result.stderr
    assert _count(rt, Broadcast) == 1  # and the sweeper starts it once Redis is back


@pytest.mark.parametrize(
    "env, message",
    [
        ({"HUB_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}, "cannot use the database"),
        ({"HUB_PORT": "abc"}, "HUB_PORT must be a whole number, not 'abc'"),
        (
            {"HUB_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "HUB_SECRET_KEY": ""},
            "set HUB_SECRET_KEY",
        ),
    ],
)
def test_setup_mistakes_get_one_clear_line(hub, env, message):
    result = hub("topics", "list", check=False, **env)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_import_refuses_addresses_that_need_smtputf8(hub, rt, tmp_path):
    hub("seed", "kranj")
    path = tmp_path / "r.csv"
    path.write_text(HEADER + "Žiga,žiga@example.si,,sl,center,events,,\n", encoding="utf-8")
    result = hub("residents", "import", str(path), check=False)
    assert result.returncode == 2
    assert "line 2: malformed e-mail address žiga@example.si" in result.stderr
    assert _count(rt, Resident) == 0


def test_broadcast_preview_shows_sms_cost_and_saves_nothing(hub, rt):
    hub("seed", "kranj")
    body = "Zaradi del na vodovodu bo v četrtek med 8. in 14. uro prekinjena dobava pitne vode."
    out = hub(
        "broadcast", "preview", "--topic", "water-supply", "--area", "center",
        "--title", "Prekinitev dobave vode", "--body-sl", body, "--body-en", "Water is off.",
    ).stdout  # fmt: skip
    sms = out.split("== sl / sms ==")[1].split("==")[0]
    assert body in sms and "UCS-2, 133 characters, 2 segments" in sms
    assert "with --gsm7: GSM-7, 133 characters, 1 segment, 1 fewer" in sms
    assert "== en / push ==" in out and "== sl / telegram ==" in out
    assert "<b>Prekinitev dobave vode</b>" in out
    assert _count(rt, Broadcast) == 0
    bad = hub("broadcast", "preview", "--topic", "nope", "--title", "x", "--body-sl", "y",
              check=False)  # fmt: skip
    assert bad.returncode == 2 and "unknown topic nope" in bad.stderr
