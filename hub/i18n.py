"""Labels and template helpers for translated, locale-formatted pages (sl first, en complete)."""

from __future__ import annotations

from flask import Flask, render_template
from flask_babel import format_datetime, format_number, get_locale
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

PRIORITY_LABELS = {"emergency": _l("Emergency"), "normal": _l("Normal"), "bulk": _l("Bulk")}
BROADCAST_STATUS_LABELS = {
    "draft": _l("Draft"),
    "scheduled": _l("Scheduled"),
    "planning": _l("Planning"),
    "sending": _l("Sending"),
    "done": _l("Done"),
    "cancelled": _l("Cancelled"),
}
DELIVERY_STATUS_LABELS = {
    "pending": _l("Waiting"),
    "sending": _l("Sending"),
    "retry": _l("Will retry"),
    "sent": _l("Sent"),
    "delivered": _l("Delivered"),
    "undelivered": _l("Not delivered"),
    "gone": _l("Address dead"),
    "failed": _l("Failed"),
    "cancelled": _l("Cancelled"),
}
CHANNEL_LABELS = {
    "email": _l("E-mail"),
    "sms": _l("SMS"),
    "telegram": _l("Telegram"),
    "push": _l("Web push"),
    "web": _l("Resident portal"),  # messages written and answered in the portal (hub.portal)
}
ERROR_TEXTS = {
    400: (_l("Bad request"), _l("The request was not understood. Check what you entered.")),
    403: (_l("Not allowed"), _l("Your account may not open this page.")),
    404: (_l("Not found"), _l("There is nothing at this address.")),
    405: (_l("Not allowed"), _l("This address does not accept that kind of request.")),
    500: (_l("Something went wrong"), _l("The hub could not finish this. Try again shortly.")),
}


def _label(table: dict):
    return lambda key: str(table.get(key, key))


def render_error(error: HTTPException):
    code = error.code or 500
    title, message = ERROR_TEXTS.get(code, ERROR_TEXTS[500])
    return render_template("pages/error.html", code=code, title=title, message=message), code


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(
        get_locale=get_locale,
        format_datetime=format_datetime,
        format_number=format_number,
        priority_label=_label(PRIORITY_LABELS),
        broadcast_status_label=_label(BROADCAST_STATUS_LABELS),
        delivery_status_label=_label(DELIVERY_STATUS_LABELS),
        channel_label=_label(CHANNEL_LABELS),
    )
    for code in ERROR_TEXTS:
        app.register_error_handler(code, render_error)
