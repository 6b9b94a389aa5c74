"""Public notices as open data: the list, its Atom feed and a CAP 1.2 document per notice
(public on purpose: they only ever show notices that have already gone out to residents), and
the admin's CAP import."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, render_template, request
from flask_babel import get_locale
from flask_babel import gettext as _

from hub import cap, open_data
from hub.broadcasts import BroadcastError
from hub.models import Role
from hub.rendering import content_for
from hub.web import current_staff, public, roles

bp = Blueprint("feeds", __name__)

ATOM_TYPE = "application/atom+xml; charset=utf-8"
CAP_TYPE = "application/cap+xml; charset=utf-8"


@bp.route("/notices")
@public
def notices():
    """Every public notice, newest first, by topic and area, a page at a time."""
    rt = current_app.extensions["hub"]
    page = request.args.get("page", 1, type=int)
    with rt.session() as db:
        topics, areas = open_data.filter_choices(db)
        try:
            chosen = open_data.notice_filter(
                db, request.args.get("topic"), request.args.get("area")
            )
            result = open_data.public_notices(db, chosen, page)
        except open_data.FilterError as exc:
            return _bad_filter(str(exc), topics, areas)
        except open_data.NoSuchPage:
            abort(404)
        return render_template(
            "pages/notices.html",
            result=result,
            chosen=chosen,
            topics=topics,
            areas=areas,
            locale=str(get_locale()),
            content_of=lambda n: content_for(n, str(get_locale()), rt.settings.default_locale),
            feed_url=open_data.feed_url(rt.settings, str(get_locale()), chosen),
        )


def _bad_filter(message: str, topics, areas):
    return render_template(
        "pages/notices.html",
        result=None,
        error=message,
        chosen=open_data.NoticeFilter(),
        topics=topics,
        areas=areas,
        locale=str(get_locale()),
    ), 400


@bp.route("/feeds/notices.atom")
@public
def notices_atom():
    """The Atom feed; `?lang=sl|en` (default: the hub's language), optional `topic`, `area`."""
    rt = current_app.extensions["hub"]
    locale = request.args.get("lang") or rt.settings.default_locale
    if locale not in rt.settings.locales:
        return _plain_error(_("unknown language %(lang)s", lang=locale))
    with rt.session() as db:
        try:
            chosen = open_data.notice_filter(
                db, request.args.get("topic"), request.args.get("area")
            )
        except open_data.FilterError as exc:
            return _plain_error(str(exc))
        return Response(
            open_data.atom_feed(db, rt.settings, locale, chosen), content_type=ATOM_TYPE
        )


@bp.route("/feeds/cap/<int:broadcast_id>.xml")
@public
def cap_alert(broadcast_id: int):
    """A notice as an OASIS CAP 1.2 alert (a Cancel once it was cancelled after going out)."""
    rt = current_app.extensions["hub"]
    with rt.session() as db:
        broadcast = cap.cap_notice(db, broadcast_id)
        if broadcast is None:
            abort(404)
        return Response(cap.alert_xml(broadcast, rt.settings), content_type=CAP_TYPE)


def _plain_error(message: str) -> tuple[Response, int]:
    return Response(message + "\n", content_type="text/plain; charset=utf-8"), 400


@bp.route("/admin/cap/import", methods=["GET", "POST"])
@roles(Role.ADMIN)
def cap_import():
    """Upload a CAP 1.2 alert: it becomes an emergency draft for an approver to start."""
    if request.method == "GET":
        return render_template("pages/cap_import.html")
    upload = request.files.get("alert")
    if upload is None or not upload.filename:
        return render_template("pages/cap_import.html", error=_("choose a CAP file")), 400
    rt = current_app.extensions["hub"]
    try:
        with rt.session() as db:
            broadcast = cap.import_alert(
                db,
                upload.read(cap.MAX_ALERT_BYTES + 1),
                actor=current_staff().email,
                settings=rt.settings,
            )
            created = broadcast.id
    except (cap.CapError, BroadcastError) as exc:
        return render_template("pages/cap_import.html", error=str(exc)), 400
    return render_template("pages/cap_import.html", created=created), 201
