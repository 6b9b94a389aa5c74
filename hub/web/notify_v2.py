"""GOV.UK Notify-compatible API (/v2). Every route needs a key, of any role, proven by Notify's
per-request JWT (hub.notify.auth) instead of a staff sign-in, so CSRF does not apply; every
error is one of Notify's JSON bodies."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from hub import csrf
from hub.models import Role
from hub.notify import notifications, statuses
from hub.notify.auth import authenticate
from hub.notify.errors import ApiError, not_found, validation_error
from hub.notify.templates import get_template, list_templates, preview_json, template_json
from hub.web import API_KEY_ATTR, roles

bp = Blueprint("notify_v2", __name__, url_prefix="/v2")
csrf.exempt(bp)

LIST_PARAMETERS = {"reference", "status", "template_type", "older_than", "include_jobs"}
TEMPLATE_TYPES = ("sms", "email", "letter")  # letters exist in Notify: a filter, never a send


def notify_key(view):
    """A view for any API key: the blueprint checks the request's JWT before it runs."""
    view = roles(*Role.ALL)(view)
    setattr(view, API_KEY_ATTR, True)
    return view


def _rt():
    return current_app.extensions["hub"]


@bp.before_request
def _authenticate() -> None:
    g.notify_key = authenticate(_rt(), request.headers.get("Authorization"))


@bp.errorhandler(ApiError)
def _api_error(error: ApiError):
    return jsonify(error.body()), error.status_code


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException):
    body = {
        "status_code": error.code,
        "errors": [{"error": error.name, "message": error.description}],
    }
    return jsonify(body), error.code


@bp.errorhandler(Exception)
def _server_error(error: Exception):
    current_app.logger.exception("Notify API request failed")
    body = {
        "status_code": 500,
        "errors": [{"error": "Exception", "message": "Internal server error"}],
    }
    return jsonify(body), 500


# -- notifications ----------------------------------------------------------------------------


@bp.route("/notifications/<any(sms, email):notification_type>", methods=["POST"])
@notify_key
def post_notification(notification_type: str):
    data = request.get_json(silent=True)
    send_request = notifications.parse_send_request(notification_type, data)
    return jsonify(notifications.send(_rt(), g.notify_key, send_request)), 201


@bp.route("/notifications/<notification_id>")
@notify_key
def get_notification(notification_id: str):
    if not notifications.is_uuid(notification_id):
        raise validation_error("notification_id is not a valid UUID")
    found = notifications.get_notification(_rt(), notification_id)
    if found is None:
        raise not_found()
    return jsonify(found)


@bp.route("/notifications")
@notify_key
def list_notifications():
    wanted = _notification_filter()
    found = notifications.list_notifications(_rt(), g.notify_key, wanted)
    return jsonify(notifications=found, links=_links("/v2/notifications", found))


def _notification_filter() -> notifications.NotificationFilter:
    """The query as Notify's schema reads it; every fault reported at once."""
    args = request.args
    faults = [
        f"Additional properties are not allowed ({name} was unexpected)"
        for name in args
        if name not in LIST_PARAMETERS
    ]
    faults += [
        f"status {s} is not one of [{', '.join(statuses.FILTERABLE)}]"
        for s in args.getlist("status")
        if s not in statuses.FILTERABLE
    ]
    faults += [
        f"template_type {t} is not one of [{', '.join(TEMPLATE_TYPES)}]"
        for t in args.getlist("template_type")
        if t not in TEMPLATE_TYPES
    ]
    older_than = args.get("older_than")
    if older_than is not None and not notifications.is_uuid(older_than):
        faults.append("older_than is not a valid UUID")
    if faults:
        raise validation_error(*faults)
    return notifications.NotificationFilter(
        template_types=args.getlist("template_type"),
        statuses=args.getlist("status"),
        reference=args.get("reference"),
        older_than=older_than,
    )


def _links(path: str, page: list[dict]) -> dict:
    """`current` is this query; `next` the same query for what is older than this page."""
    asked = list(request.args.items(multi=True))
    base = _rt().settings.base_url + path
    links = {"current": base + (f"?{urlencode(asked)}" if asked else "")}
    if page:
        rest = [(k, v) for k, v in asked if k != "older_than"]
        links["next"] = f"{base}?{urlencode([*rest, ('older_than', page[-1]['id'])])}"
    return links


@bp.route("/received-text-messages")
@notify_key
def received_text_messages():
    older_than = request.args.get("older_than")
    if older_than is not None and not notifications.is_uuid(older_than):
        raise validation_error("older_than is not a valid UUID")
    found = notifications.received_texts(_rt(), older_than)
    return jsonify(received_text_messages=found, links=_links("/v2/received-text-messages", found))


# -- templates --------------------------------------------------------------------------------


@bp.route("/templates")
@notify_key
def templates():
    template_type = request.args.get("type")
    if template_type is not None and template_type not in TEMPLATE_TYPES:
        raise validation_error(f"type {template_type} is not one of [{', '.join(TEMPLATE_TYPES)}]")
    with _rt().session() as session:
        found = list_templates(session, template_type)
    return jsonify(templates=[template_json(t) for t in found])


@bp.route("/template/<template_id>")
@bp.route("/template/<template_id>/version/<int:version>")
@notify_key
def template(template_id: str, version: int | None = None):
    return jsonify(template_json(_template(template_id, version)))


@bp.route("/template/<template_id>/preview", methods=["POST"])
@notify_key
def template_preview(template_id: str):
    data = request.get_json(silent=True)
    data = {} if data is None else data
    personalisation = data.get("personalisation", {}) if isinstance(data, dict) else None
    if not isinstance(personalisation, dict):
        raise validation_error("personalisation should contain key value pairs")
    return jsonify(preview_json(_template(template_id), personalisation))


def _template(template_id: str, version: int | None = None):
    if not notifications.is_uuid(template_id):
        raise validation_error("id is not a valid UUID")
    with _rt().session() as session:
        found = get_template(session, template_id, version)
    if found is None:
        raise not_found()
    return found
