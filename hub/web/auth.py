"""Staff sign-in and sign-out: lock-out after repeated failures, a session that lasts
HUB_SESSION_LIFETIME, and sign-out everywhere."""

from __future__ import annotations

import math

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext

from hub.models import Role
from hub.signin import sign_in, sign_out_everywhere
from hub.web import current_staff, local_path, public, roles

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if request.method == "GET":
        return render_template("pages/login.html")
    rt = current_app.extensions["hub"]
    result = sign_in(
        rt,
        request.form.get("email", ""),
        request.form.get("password", ""),
        request.remote_addr or "unknown",
    )
    if result.user_id is not None:
        session.clear()
        session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME, checked server-side
        session["staff_id"] = result.user_id
        session["generation"] = result.generation
        return redirect(local_path(request.args.get("next"), url_for("staff.index")))
    if result.retry_after_s:
        minutes = math.ceil(result.retry_after_s / 60)
        flash(
            ngettext(
                "Too many failed sign-ins. Try again in %(num)d minute.",
                "Too many failed sign-ins. Try again in %(num)d minutes.",
                minutes,
            ),
            "error",
        )
        response = current_app.make_response((render_template("pages/login.html"), 429))
        response.headers["Retry-After"] = str(result.retry_after_s)
        return response
    flash(_("Wrong e-mail address or password."), "error")
    return render_template("pages/login.html"), 401


@bp.route("/logout", methods=["POST"])
@roles(*Role.ALL)
def logout():
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/logout/everywhere", methods=["POST"])
@roles(*Role.ALL)
def logout_everywhere():
    """End this user's sessions on every device (a lost phone, a shared computer)."""
    sign_out_everywhere(current_app.extensions["hub"], current_staff().id)
    session.clear()
    flash(_("You are signed out on every device."), "info")
    return redirect(url_for("auth.login"))
