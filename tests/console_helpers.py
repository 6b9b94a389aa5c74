"""Helpers for the staff console's tests (client and browser): staff, residents, sign-in."""

from __future__ import annotations

import re

from sqlalchemy import select

from hub.models import Area, Topic
from hub.residents import ResidentRow, import_rows
from hub.staff import create_staff_user

PASSWORD = "correct horse battery"


def staff(rt, email: str, role: str) -> str:
    with rt.session() as session:
        create_staff_user(session, email=email, role=role, password=PASSWORD)
    return email


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path)
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def login(client, email: str, password: str = PASSWORD, address: str = "127.0.0.1"):
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf_token(client)},
        environ_base={"REMOTE_ADDR": address},
    )


def residents(rt, *people: tuple[str, str, dict[str, str]], area="center", quiet=None) -> None:
    """(name, locale, {channel: address}) following road works in `area`."""
    with rt.session() as session:
        area_id = session.scalar(select(Area.id).where(Area.slug == area))
        topic = session.scalar(select(Topic.id).where(Topic.slug == "road-works"))
        import_rows(
            session,
            [
                ResidentRow(name, locale, area_id, [topic], addresses, list(addresses), quiet)
                for name, locale, addresses in people
            ],
        )


def compose_form(**changes) -> dict:
    form = {
        "title": "Zapora Koroške ceste",
        "topic": "road-works",
        "areas": ["center"],
        "priority": "normal",
        "channel_policy": "preferred",
        "scheduled_at": "",
        "body_sl": "Koroška cesta bo jutri zaprta od 8. do 16. ure.",
        "title_en": "Koroška road closed",
        "body_en": "Koroška road is closed tomorrow from 8 am to 4 pm.",
        "action": "save",
    }
    form.update(changes)
    return form
