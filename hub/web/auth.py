"""Staff sign-in and sign-out."""

from __future__ import annotations

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

from hub.models import Role
from hub.staff import authenticate
from hub.web import local_path, public, roles

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if request.method == "POST":
        rt = current_app.extensions["hub"]
        with rt.session() as db:
            user = authenticate(db, request.form.get("email", ""), request.form.get("password", ""))
            user_id = user.id if user else None
        if user_id is not None:
            session.clear()
            session["staff_id"] = user_id
            return redirect(local_path(request.args.get("next"), url_for("staff.index")))
        flash(_("Wrong e-mail address or password."), "error")
        return render_template("pages/login.html"), 401
    return render_template("pages/login.html")


@bp.route("/logout", methods=["POST"])
@roles(*Role.ALL)
def logout():
    session.pop("staff_id", None)
    return redirect(url_for("auth.login"))
