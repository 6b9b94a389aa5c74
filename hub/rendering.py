"""Render a notice once per (locale, channel). Per-recipient links are marks filled in at send."""

from __future__ import annotations

from flask import current_app
from flask_babel import force_locale
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.gsm import transliterate
from hub.models import Broadcast, Priority, Rendering

UNSUBSCRIBE_MARK = "%%UNSUBSCRIBE_URL%%"


def content_for(broadcast: Broadcast, locale: str, default_locale: str):
    by_locale = {c.locale: c for c in broadcast.contents}
    return by_locale.get(locale) or by_locale[default_locale]


def paragraphs(body: str) -> list[str]:
    """A notice's text as paragraphs (a blank line separates them)."""
    return [p.strip() for p in body.split("\n\n") if p.strip()]


def render(broadcast: Broadcast, locale: str, channel: str, default_locale: str) -> Rendering:
    content = content_for(broadcast, locale, default_locale)
    with force_locale(locale):
        topic_name = broadcast.topic.names.get(locale) or broadcast.topic.names.get(default_locale)
        subject = content.title
        if broadcast.priority == Priority.EMERGENCY:
            subject = _("EMERGENCY: %(title)s", title=content.title)
        context = {
            "subject": subject,
            "title": content.title,
            "paragraphs": paragraphs(content.body),
            "topic_name": topic_name,
            "emergency": broadcast.priority == Priority.EMERGENCY,
            "unsubscribe_url": UNSUBSCRIBE_MARK,
            "locale": locale,
        }
        text, html = _render_channel(channel, context)
    if channel == "sms" and broadcast.sms_transliterate:
        text = transliterate(text)
    return Rendering(
        broadcast_id=broadcast.id,
        locale=locale,
        channel=channel,
        subject=subject,
        text=text,
        html=html,
    )


def ensure_renderings(
    session: Session, broadcast: Broadcast, pairs: set[tuple[str, str]], default_locale: str
) -> None:
    """Create the (locale, channel) renderings this notice still lacks."""
    have = set(
        session.execute(
            select(Rendering.locale, Rendering.channel).where(
                Rendering.broadcast_id == broadcast.id
            )
        ).all()
    )
    for locale, channel in sorted(pairs - have):
        session.add(render(broadcast, locale, channel, default_locale))
    session.flush()


def renderings_of(session: Session, broadcast_id: int) -> dict[tuple[str, str], Rendering]:
    rows = session.scalars(select(Rendering).where(Rendering.broadcast_id == broadcast_id))
    return {(r.locale, r.channel): r for r in rows}


def _render_channel(channel: str, context: dict) -> tuple[str, str | None]:
    """(text, html): e-mail has both; Telegram's text is HTML (escaped by the template engine);
    SMS and push are plain text."""
    if channel == "email":
        return _render_message("messages/email.txt", context), _render_message(
            "messages/email.html", context
        )
    if channel == "telegram":
        return _render_message("messages/telegram.html", context).strip(), None
    return _render_message(f"messages/{channel}.txt", context).strip(), None


def _render_message(name: str, context: dict) -> str:
    """Message templates see only their context: no request, no page context processors."""
    return current_app.jinja_env.get_template(name).render(**context)
