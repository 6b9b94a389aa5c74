"""/sandbox: what the providers' stand-ins received, while any provider runs on its stand-in.

Public on purpose: it exists only on a sandboxed hub (demo, evaluation, tests), where it plays
the residents' phones and inboxes; on a hub with real providers it is a 404."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify, render_template, request

from channels.sandbox.store import SandboxStore
from hub import providers
from hub.models import CHANNELS
from hub.web import public

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")


def _store() -> SandboxStore:
    settings = current_app.extensions["hub"].settings
    if not settings.sandbox_active:
        abort(404)
    return SandboxStore(settings.sandbox_db_path)


def _filters() -> dict:
    limit = request.args.get("limit", "200")
    if not limit.isdigit() or not 1 <= int(limit) <= 5000:
        abort(400, "limit must be a whole number from 1 to 5000")
    return {
        "limit": int(limit),
        "channel": request.args.get("channel") or None,
        "to": request.args.get("to") or None,
    }


@bp.route("")
@public
def index():
    store = _store()
    filters = _filters()
    return render_template(
        "pages/sandbox.html",
        messages=store.messages(**filters),
        total=store.count(),
        filters=filters,
        accounts=providers.sandbox_accounts(current_app.extensions["hub"]),
        channels=CHANNELS,
    )


@bp.route("/messages.json")
@public
def messages_json():
    return jsonify(_store().messages(**_filters()))
