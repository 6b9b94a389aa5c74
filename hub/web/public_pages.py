"""Pages anyone may open: health, one-click unsubscribe, a published notice, the language
switch."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
)
from flask_babel import get_locale

from hub import csrf, health
from hub.broadcasts import published_notice
from hub.models import Priority
from hub.rendering import content_for, paragraphs
from hub.unsubscribe import find_target, is_subscribed, unsubscribe
from hub.web import local_path, public

bp = Blueprint("public", __name__)


@bp.route("/healthz")
@public
def healthz():
    healthy, report = health.check(current_app.extensions["hub"])
    return jsonify(report), (200 if healthy else 503)


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@public
@csrf.exempt  # RFC 8058: mail clients POST without cookies or tokens; the signed link is the key
def unsubscribe_page(token: str):
    rt = current_app.extensions["hub"]
    with rt.session() as db:
        target = find_target(db, rt.settings.secret_key, token)
        if target is None:
            return render_template("pages/unsubscribe_invalid.html"), 404
        if request.method == "POST":
            unsubscribe(db, target)
            return render_template("pages/unsubscribed.html", topic=target.topic)
        return render_template(
            "pages/unsubscribe.html", topic=target.topic, subscribed=is_subscribed(db, target)
        )


@bp.route("/notices/<int:broadcast_id>")
@public
def notice(broadcast_id: int):
    """One notice as residents got it, in the visitor's language (a push message links here,
    with the full text a push message has no room for)."""
    rt = current_app.extensions["hub"]
    with rt.session() as db:
        broadcast = published_notice(db, broadcast_id)
        if broadcast is None:
            abort(404)
        content = content_for(broadcast, str(get_locale()), rt.settings.default_locale)
        return render_template(
            "pages/notice.html",
            broadcast=broadcast,
            content=content,
            paragraphs=paragraphs(content.body),
            emergency=broadcast.priority == Priority.EMERGENCY,
        )


@bp.route("/language/<code>", methods=["POST"])
@public
def set_language(code: str):
    if code not in current_app.extensions["hub"].settings.locales:
        abort(400)
    session["locale"] = code
    return redirect(local_path(request.form.get("next"), "/"))
