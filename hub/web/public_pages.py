"""Pages anyone may open: health, one-click unsubscribe, the language switch."""

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

from hub import csrf, health
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


@bp.route("/language/<code>", methods=["POST"])
@public
def set_language(code: str):
    if code not in current_app.extensions["hub"].settings.locales:
        abort(400)
    session["locale"] = code
    return redirect(local_path(request.form.get("next"), "/"))
