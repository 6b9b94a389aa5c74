"""The compose form of the staff console: from the posted fields to a NoticeDraft, with an
error per field a person can fix (for a new notice and for editing a draft alike). The
notice's own rules are checked again by hub.broadcasts when it is saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from hub.broadcasts import MAX_TITLE, NoticeDraft
from hub.models import Broadcast, ChannelPolicy, Priority

LOCAL_INPUT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> posts


@dataclass
class ComposeForm:
    """The posted values (to show the form again as it was) and the errors by field name."""

    values: MultiDict
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Choices:
    topics: frozenset[str]
    areas: frozenset[str]
    locales: tuple[str, ...]
    default_locale: str
    timezone: str


def parse_compose(
    form: MultiDict, choices: Choices, now: datetime
) -> tuple[ComposeForm, NoticeDraft | None]:
    """The draft, or None and the form with its errors. `now` is naive UTC."""
    result = ComposeForm(values=form)
    errors = result.errors
    title = _title(form.get("title", ""), "title", errors)
    titles = {
        loc: _title(form.get(f"title_{loc}", ""), f"title_{loc}", errors, required=False)
        for loc in choices.locales
        if loc != choices.default_locale
    }
    topic = form.get("topic", "")
    if topic not in choices.topics:
        errors["topic"] = _("Choose a topic.")
    areas = tuple(form.getlist("areas"))
    if not set(areas) <= choices.areas:
        errors["areas"] = _("Choose areas from the list.")
    priority = form.get("priority", Priority.NORMAL)
    if priority not in Priority.ALL:
        errors["priority"] = _("Choose a priority.")
    policy = form.get("channel_policy", ChannelPolicy.PREFERRED)
    if policy not in ChannelPolicy.ALL:
        errors["channel_policy"] = _("Choose how to pick channels.")
    bodies = {loc: form.get(f"body_{loc}", "").strip() for loc in choices.locales}
    if not bodies[choices.default_locale]:
        errors[f"body_{choices.default_locale}"] = _("Write the text in this language.")
    for loc, body in bodies.items():
        if "\0" in body:
            errors[f"body_{loc}"] = _("The text contains a character that cannot be sent.")
    scheduled_at = _schedule(form.get("scheduled_at", ""), choices.timezone, now, errors)
    if errors:
        return result, None
    return result, NoticeDraft(
        title=title,
        topic=topic,
        areas=areas,
        priority=priority,
        channel_policy=policy,
        bodies={loc: body for loc, body in bodies.items() if body},
        titles={loc: t for loc, t in titles.items() if t},
        scheduled_at=scheduled_at,
        sms_transliterate=form.get("sms_transliterate") == "1",
    )


def draft_values(broadcast: Broadcast, default_locale: str, timezone: str) -> MultiDict:
    """A stored draft as the compose form would post it: the edit page starts from these,
    and parse_compose reads them back into the same notice."""
    values = MultiDict(
        {
            "title": broadcast.title,
            "topic": broadcast.topic.slug,
            "priority": broadcast.priority,
            "channel_policy": broadcast.channel_policy,
            "scheduled_at": _local_input(broadcast.scheduled_at, timezone),
        }
    )
    values.setlist("areas", [area.slug for area in broadcast.areas])
    for content in broadcast.contents:
        values[f"body_{content.locale}"] = content.body
        if content.locale != default_locale and content.title != broadcast.title:
            values[f"title_{content.locale}"] = content.title
    if broadcast.sms_transliterate:
        values["sms_transliterate"] = "1"
    return values


def _local_input(utc: datetime | None, timezone: str) -> str:
    """Naive UTC as the city's wall-clock time, the way <input type="datetime-local"> shows it."""
    if utc is None:
        return ""
    local = utc.replace(tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo(timezone))
    return local.strftime(LOCAL_INPUT)


def _title(raw: str, name: str, errors: dict, required: bool = True) -> str:
    title = raw.strip()
    if not title and required:
        errors[name] = _("Write a title.")
    elif len(title) > MAX_TITLE:
        errors[name] = _("The title must have at most %(n)d characters.", n=MAX_TITLE)
    elif any(c in title for c in "\r\n\0"):
        errors[name] = _("The title must be a single line.")
    return title


def _schedule(raw: str, timezone: str, now: datetime, errors: dict) -> datetime | None:
    """A local wall-clock time (the city's time zone) as naive UTC; empty: send at once."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        local = datetime.strptime(raw[:16], LOCAL_INPUT).replace(tzinfo=ZoneInfo(timezone))
    except ValueError:
        errors["scheduled_at"] = _("Give the date and time as 2026-03-01T08:00.")
        return None
    utc = local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)
    if utc <= now:
        errors["scheduled_at"] = _("The time has passed; choose a later one or leave it empty.")
        return None
    return utc
