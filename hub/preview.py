"""How a notice will read on every channel, in every language it has, before it is sent:
for SMS also the encoding and segments, with and without GSM-7 transliteration (a city pays
per segment, and one č makes a whole message UCS-2)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from channels.gsm import SmsLength, sms_length, transliterate
from hub.adapters import CHANNEL_ADAPTERS
from hub.broadcasts import NoticeDraft, create_broadcast
from hub.models import Broadcast
from hub.rendering import UNSUBSCRIBE_MARK, render


@dataclass(frozen=True)
class ChannelPreview:
    locale: str
    channel: str
    subject: str
    text: str
    sms: SmsLength | None = None  # as it will be sent
    sms_gsm7: SmsLength | None = None  # with transliteration


def preview(session: Session, draft: NoticeDraft, default_locale: str) -> list[ChannelPreview]:
    """Validates like sending (BroadcastError), renders, and saves nothing. Each resident's
    own unsubscribe link shows as a placeholder."""
    broadcast = create_broadcast(
        session, draft, created_by="preview", default_locale=default_locale
    )
    try:
        return preview_broadcast(broadcast, default_locale)
    finally:
        session.rollback()


def preview_broadcast(broadcast: Broadcast, default_locale: str) -> list[ChannelPreview]:
    """Every (locale, channel) of a notice, its default locale first."""
    return [
        _one(broadcast, content.locale, channel, default_locale)
        for content in sorted(broadcast.contents, key=lambda c: c.locale != default_locale)
        for channel in CHANNEL_ADAPTERS
    ]


def _one(broadcast, locale: str, channel: str, default_locale: str) -> ChannelPreview:
    rendering = render(broadcast, locale, channel, default_locale)
    if channel != "sms":
        text = rendering.text.replace(UNSUBSCRIBE_MARK, "<…/unsubscribe/…>")
        return ChannelPreview(locale, channel, rendering.subject, text)
    return ChannelPreview(
        locale,
        channel,
        rendering.subject,
        rendering.text,
        sms=sms_length(rendering.text),
        sms_gsm7=sms_length(transliterate(rendering.text)),
    )
