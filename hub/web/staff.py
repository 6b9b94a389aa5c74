"""The staff console (for now: the notices with their delivery counts)."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from hub.broadcasts import recent_broadcasts
from hub.models import DeliveryStatus, Role
from hub.web import roles

bp = Blueprint("staff", __name__)


@bp.route("/")
@roles(*Role.ALL)
def index():
    rt = current_app.extensions["hub"]
    with rt.session() as db:
        rows = recent_broadcasts(db)
        topics = {b.id: b.topic.names for b, _ in rows}
    return render_template(
        "pages/index.html",
        rows=rows,
        topics=topics,
        statuses=DeliveryStatus.OPEN + DeliveryStatus.FINAL,
    )
