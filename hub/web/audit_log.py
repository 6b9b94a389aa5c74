"""The audit log for admins: every sensitive action, newest first, a page at a time."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request

from hub.models import Role
from hub.staff import audit_entries
from hub.web import roles

bp = Blueprint("audit_log", __name__, url_prefix="/admin/audit")
PAGE_SIZE = 50


@bp.route("")
@roles(Role.ADMIN)
def index():
    before = request.args.get("before", "")
    if before and not before.isdigit():
        abort(400)
    with current_app.extensions["hub"].session() as db:
        entries = audit_entries(db, before=int(before) if before else None, limit=PAGE_SIZE + 1)
    return render_template(
        "pages/audit_log.html",
        entries=entries[:PAGE_SIZE],
        next_before=entries[PAGE_SIZE - 1].id if len(entries) > PAGE_SIZE else None,
    )
