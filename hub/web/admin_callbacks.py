"""The admins' view of the callbacks to other city systems: each endpoint, what waits for it,
and its last attempts with their errors. Read-only: endpoints are added and removed with
`hub callbacks`."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from hub.callbacks import overview
from hub.models import Role
from hub.web import roles

bp = Blueprint("admin_callbacks", __name__, url_prefix="/admin")


@bp.route("/callbacks")
@roles(Role.ADMIN)
def index():
    rt = current_app.extensions["hub"]
    with rt.session() as db:
        endpoints = overview(db)
    return render_template("pages/admin_callbacks.html", endpoints=endpoints)
