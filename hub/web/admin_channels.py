"""Admin pages for the providers: each channel's settings with a test message, and the health
of the provider webhooks (Telegram's getWebhookInfo, the Twilio URLs, the last signed request).
Settings come from the environment and are shown, never edited, and never their secrets."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from telegram.error import TelegramError

from hub import admin
from hub.models import CHANNELS, Role
from hub.web import current_staff, roles

bp = Blueprint("admin_channels", __name__, url_prefix="/admin")


def _rt():
    return current_app.extensions["hub"]


def _channels_page(status: int = 200, tested: str = "", result=None, error: str = ""):
    page = render_template(
        "admin/channels.html",
        channels=admin.channel_overview(_rt()),
        tested=tested,
        result=result,
        error=error,
        address=request.form.get("address", ""),
    )
    return page, status


@bp.route("/channels")
@roles(Role.ADMIN)
def channels():
    return _channels_page()


@bp.route("/channels/<channel>/test", methods=["POST"])
@roles(Role.ADMIN)
def test_message(channel: str):
    if channel not in CHANNELS:
        abort(404)
    try:
        result = admin.send_test(
            _rt(),
            actor=current_staff().email,
            channel=channel,
            address=request.form.get("address", ""),
        )
    except admin.AdminError as error:
        return _channels_page(422, tested=channel, error=str(error))
    return _channels_page(tested=channel, result=result)


@bp.route("/webhooks")
@roles(Role.ADMIN)
def webhooks():
    rt = _rt()
    return render_template(
        "admin/webhooks.html", panel=admin.webhook_panel(rt), timezone=rt.settings.timezone
    )


@bp.route("/webhooks/telegram", methods=["POST"])
@roles(Role.ADMIN)
def register_telegram():
    try:
        info = admin.register_telegram_webhook(_rt(), actor=current_staff().email)
    except (TelegramError, OSError) as error:
        flash(_("Telegram refused the webhook: %(error)s", error=str(error)), "error")
    else:
        flash(_("The webhook is registered at %(url)s.", url=info.url), "info")
    return redirect(url_for("admin_channels.webhooks"), 303)
