"""The agents' inbox over HTTP. For now the live stream the inbox pages listen to; the pages
themselves come with the staff console."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from hub import live
from hub.models import Role
from hub.web import roles

bp = Blueprint("inbox", __name__, url_prefix="/inbox")


@bp.route("/events")
@roles(Role.AGENT)
def events():
    """Server-sent events: `message` when a resident writes, `status` when an answer's status
    changes; each with the conversation's id. The stream ends after a few minutes and the
    browser reconnects by itself."""
    rt = current_app.extensions["hub"]
    seconds = current_app.config.get("HUB_EVENTS_STREAM_S", live.STREAM_FOR_S)
    # No request context in the generator: it needs only the runtime, and holds nothing else
    # for the minutes it runs.
    response = Response(live.stream(rt, seconds), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
