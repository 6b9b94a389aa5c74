"""Topics and areas as admins keep them: create, rename (a name per locale), and remove one
that nothing uses yet. A topic or area that notices, residents or subscriptions refer to stays:
removing it would rewrite history and silently drop residents' choices."""

from __future__ import annotations

import re
from dataclasses import dataclass

from flask_babel import gettext as _
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.console import named_choices
from hub.models import Area, Broadcast, Resident, Subscription, Topic, broadcast_areas
from hub.staff import audit

SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_SLUG = 64
MAX_NAME = 200
KINDS: dict[str, type[Area | Topic]] = {"topics": Topic, "areas": Area}
NOUNS = {Topic: "topic", Area: "area"}  # in audit actions: topic.create, area.rename, ...


class CatalogueError(ValueError):
    """Bad input or a refused change; the message says which, and nothing was changed."""


@dataclass(frozen=True)
class Entry:
    slug: str
    names: dict
    uses: int  # notices, residents and subscriptions that refer to it


def entries(session: Session, model: type[Area | Topic], locale: str, default: str) -> list[Entry]:
    """Every topic or area, by its name in `locale`, with how much refers to it."""
    names = dict(session.execute(select(model.slug, model.names)).all())
    uses = _uses_by_slug(session, model)
    ordered = named_choices(session, model, locale, default)
    return [Entry(slug, names[slug], uses.get(slug, 0)) for slug, _name in ordered]


def _references(model: type[Area | Topic]) -> list[tuple]:
    """(table, column) pairs holding this model's id."""
    if model is Topic:
        return [(Broadcast, Broadcast.topic_id), (Subscription, Subscription.topic_id)]
    return [
        (broadcast_areas, broadcast_areas.c.area_id),
        (Resident, Resident.area_id),
        (Subscription, Subscription.area_id),
    ]


def _uses_by_slug(session: Session, model: type[Area | Topic]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for _table, column in _references(model):
        query = (
            select(model.slug, func.count())
            .select_from(model)
            .join(_table, column == model.id)
            .group_by(model.slug)
        )
        for slug, n in session.execute(query):
            totals[slug] = totals.get(slug, 0) + n
    return totals


def clean_slug(raw: str) -> str:
    slug = raw.strip()
    if not slug:
        raise CatalogueError(_("Enter a short name for addresses (the slug)."))
    if len(slug) > MAX_SLUG or not SLUG_RE.fullmatch(slug):
        raise CatalogueError(
            _(
                "The slug may have only lower-case letters a-z, digits and single hyphens "
                "between them, at most %(num)d characters.",
                num=MAX_SLUG,
            )
        )
    return slug


def clean_names(raw: dict[str, str], locales: tuple[str, ...], default: str) -> dict[str, str]:
    """{locale: name} for the locales given; the hub's own language is required."""
    names = {code: raw.get(code, "").strip() for code in locales}
    if not names.get(default):
        raise CatalogueError(_("Enter the name in the hub's main language."))
    if any(len(name) > MAX_NAME for name in names.values()):
        raise CatalogueError(_("A name may have at most %(num)d characters.", num=MAX_NAME))
    return {code: name for code, name in names.items() if name}


def _get(session: Session, model: type[Area | Topic], slug: str) -> Area | Topic:
    item = session.scalar(select(model).where(model.slug == slug))
    if item is None:
        raise CatalogueError(_("There is no %(slug)s.", slug=slug))
    return item


def names_of(session: Session, model: type[Area | Topic], slug: str) -> dict | None:
    """The names of one topic or area, None if there is none with this slug."""
    return session.scalar(select(model.names).where(model.slug == slug))


def create_entry(
    session: Session, model: type[Area | Topic], *, slug: str, names: dict, actor: str
) -> None:
    """Add a topic or area; a slug already taken is refused (slugs appear in links and CSVs)."""
    if session.scalar(select(model.id).where(model.slug == slug)) is not None:
        raise CatalogueError(_("%(slug)s is already taken; choose another slug.", slug=slug))
    try:
        with session.begin_nested():
            session.add(model(slug=slug, names=names))
    except IntegrityError:  # another admin took it a moment ago
        raise CatalogueError(
            _("%(slug)s is already taken; choose another slug.", slug=slug)
        ) from None
    audit(session, actor, f"{NOUNS[model]}.create", f"{NOUNS[model]}:{slug}")


def rename_entry(
    session: Session, model: type[Area | Topic], *, slug: str, names: dict, actor: str
) -> None:
    """New names; the slug stays, so links, CSV imports and API clients keep working."""
    item = _get(session, model, slug)
    before = dict(item.names)
    item.names = names
    audit(
        session,
        actor,
        f"{NOUNS[model]}.rename",
        f"{NOUNS[model]}:{slug}",
        before=before,
        after=names,
    )


def remove_entry(session: Session, model: type[Area | Topic], *, slug: str, actor: str) -> None:
    """Remove a topic or area nothing refers to; otherwise refuse and say why."""
    item = _get(session, model, slug)
    uses = sum(
        session.scalar(select(func.count()).select_from(table).where(column == item.id)) or 0
        for table, column in _references(model)
    )
    if uses:
        raise CatalogueError(
            _(
                "%(slug)s is still used by notices, residents or subscriptions (%(num)d), "
                "so it stays. Rename it instead.",
                slug=slug,
                num=uses,
            )
        )
    session.delete(item)
    audit(session, actor, f"{NOUNS[model]}.remove", f"{NOUNS[model]}:{slug}")
