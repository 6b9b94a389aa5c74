"""The staff console's notices: compose, preview, edit or delete a draft, approve and send,
watch it go, cancel, report."""

from __future__ import annotations

from collections.abc import Callable

from babel import Locale
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import format_time, get_locale, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from hub.audience import audience_estimate
from hub.broadcasts import (
    WRITERS,
    Actor,
    BroadcastError,
    NotADraft,
    NoticeDraft,
    SavedNotQueued,
    approval_refusal,
    content_fingerprint,
    deferred_count,
    delete_draft,
    draft_authors,
    drafts,
    edit_draft,
    fallbacks,
    progress,
    save_draft,
    start_draft,
)
from hub.clock import utcnow
from hub.console import cancel_notice, named_choices
from hub.i18n import BROADCAST_STATUS_LABELS
from hub.models import (
    CHANNELS,
    Area,
    Broadcast,
    BroadcastStatus,
    ChannelPolicy,
    DeliveryStatus,
    Topic,
)
from hub.preview import preview, preview_broadcast
from hub.reports import delivery_timeline, export_deliveries, failure_reasons, replies
from hub.web import current_staff, roles
from hub.web.compose import Choices, ComposeForm, draft_values, parse_compose

bp = Blueprint("broadcasts", __name__, url_prefix="/broadcasts")
FINISHED = (BroadcastStatus.DONE, BroadcastStatus.CANCELLED)


def _rt():
    return current_app.extensions["hub"]


def _actor() -> Actor:
    user = current_staff()
    return Actor(user.email, user.role)


CHANNEL_POLICY_LABELS = {
    ChannelPolicy.PREFERRED: _l("Each resident's preferred channel, the next one if it fails"),
    ChannelPolicy.ALL_CHANNELS: _l("Every channel a resident has verified"),
}


@bp.app_template_global()
def channel_policy_label(policy: str) -> str:
    return str(CHANNEL_POLICY_LABELS.get(policy, policy))


@bp.app_template_global()
def language_name(code: str) -> str:
    """A locale's name in the page's language ("slovenščina", "English")."""
    return Locale.parse(code).get_display_name(get_locale()) or code


@bp.app_template_global()
def local_name(names: dict) -> str:
    """An area's or topic's name in the page's language, else in the hub's."""
    default = _rt().settings.default_locale
    return names.get(str(get_locale())) or names.get(default) or next(iter(names.values()), "")


bp.add_app_template_global(format_time, "format_time")


@bp.app_template_global()
def duration(seconds: float) -> str:
    """'2 hours 5 minutes' in the page's language, with its plural forms."""
    seconds = max(1, round(seconds))
    if seconds < 60:
        return ngettext("%(num)d second", "%(num)d seconds", seconds)
    hours, minutes = divmod(round(seconds / 60), 60)
    parts = [ngettext("%(num)d hour", "%(num)d hours", hours)] if hours else []
    if minutes or not hours:
        parts.append(ngettext("%(num)d minute", "%(num)d minutes", minutes))
    return " ".join(parts)


def _compose_page(
    form: ComposeForm,
    status: int = 200,
    previews=None,
    error: str = "",
    editing: int | None = None,
):
    """The compose form, for a new notice or (`editing`: its id) a draft being edited."""
    rt = _rt()
    locale = str(get_locale())
    with rt.session() as db:
        topics = named_choices(db, Topic, locale, rt.settings.default_locale)
        areas = named_choices(db, Area, locale, rt.settings.default_locale)
    template = "pages/_preview.html" if _wants_fragment() else "pages/broadcast_compose.html"
    page = render_template(
        template,
        form=form,
        topics=topics,
        areas=areas,
        locales=rt.settings.locales,
        default_locale=rt.settings.default_locale,
        previews=previews,
        error=error,
        editing=editing,
    )
    return page, status


def _wants_fragment() -> bool:
    """console.js asks for the preview alone while someone types."""
    return request.headers.get("X-Hub-Fragment") == "preview"


def _choices() -> Choices:
    rt = _rt()
    with rt.session() as db:
        topics = named_choices(db, Topic, rt.settings.default_locale, rt.settings.default_locale)
        areas = named_choices(db, Area, rt.settings.default_locale, rt.settings.default_locale)
    return Choices(
        topics=frozenset(slug for slug, _ in topics),
        areas=frozenset(slug for slug, _ in areas),
        locales=rt.settings.locales,
        default_locale=rt.settings.default_locale,
        timezone=rt.settings.timezone,
    )


@bp.route("/new", methods=["GET", "POST"])
@roles(*WRITERS)
def compose():
    if request.method == "GET":
        return _compose_page(ComposeForm(values=request.args))
    return _submit(lambda draft: save_draft(_rt(), draft, actor=_actor()))


def _submit(save: Callable[[NoticeDraft], int], editing: int | None = None):
    """The compose form posted, new or edited alike: errors by field (nothing saved), a
    preview (nothing saved), or `save(draft)` and on to the draft it returns."""
    form, draft = parse_compose(request.form, _choices(), utcnow())
    if draft is None:
        return _compose_page(form, 422, editing=editing)
    rt = _rt()
    try:
        if request.form.get("action") == "preview":
            with rt.session() as db:
                previews = preview(db, draft, rt.settings.default_locale)
            return _compose_page(form, previews=previews, editing=editing)
        broadcast_id = save(draft)
    except NotADraft as error:
        flash(str(error), "error")
        return redirect(url_for("broadcasts.progress_page", broadcast_id=editing)), 303
    except BroadcastError as error:
        return _compose_page(form, 422, error=str(error), editing=editing)
    flash(_("The draft is saved. Check it, then send it."), "info")
    return redirect(url_for("broadcasts.draft", broadcast_id=broadcast_id))


@bp.route("/drafts")
@roles(*WRITERS)
def drafts_page():
    with _rt().session() as db:
        return render_template("pages/broadcast_drafts.html", drafts=drafts(db))


@bp.route("/<int:broadcast_id>/edit", methods=["GET", "POST"])
@roles(*WRITERS)
def edit(broadcast_id: int):
    """The compose form again, filled in from the draft; only a draft can be edited."""
    rt = _rt()
    with rt.session() as db:
        broadcast = db.get(Broadcast, broadcast_id) or abort(404)
        if broadcast.status != BroadcastStatus.DRAFT:
            return _not_a_draft(broadcast)
        values = draft_values(broadcast, rt.settings.default_locale, rt.settings.timezone)
    if request.method == "POST":
        return _submit(lambda draft: _edit(broadcast_id, draft), editing=broadcast_id)
    return _compose_page(ComposeForm(values=values), editing=broadcast_id)


def _not_a_draft(broadcast: Broadcast):
    """Approved, sent or cancelled: say so, change nothing, show where the notice is."""
    status = BROADCAST_STATUS_LABELS.get(broadcast.status, broadcast.status)
    flash(_("Only a draft can be changed. This notice is: %(status)s.", status=status), "error")
    return redirect(url_for("broadcasts.progress_page", broadcast_id=broadcast.id)), 303


def _edit(broadcast_id: int, draft: NoticeDraft) -> int:
    edit_draft(_rt(), broadcast_id, draft, actor=_actor())
    return broadcast_id


@bp.route("/<int:broadcast_id>/delete", methods=["GET", "POST"])
@roles(*WRITERS)
def delete(broadcast_id: int):
    """GET asks to confirm (works without JavaScript); POST deletes the draft."""
    rt = _rt()
    with rt.session() as db:
        broadcast = db.get(Broadcast, broadcast_id) or abort(404)
        if broadcast.status != BroadcastStatus.DRAFT:
            return _not_a_draft(broadcast)
        if request.method == "GET":
            return render_template("pages/broadcast_delete.html", broadcast=broadcast)
    try:
        title = delete_draft(rt, broadcast_id, actor=_actor())
    except BroadcastError as error:  # approved or deleted meanwhile
        flash(str(error), "error")
        return redirect(url_for("broadcasts.progress_page", broadcast_id=broadcast_id)), 303
    flash(_("The draft “%(title)s” is deleted.", title=title), "info")
    return redirect(url_for("broadcasts.drafts_page")), 303


@bp.route("/<int:broadcast_id>")
@roles(*WRITERS)
def draft(broadcast_id: int):
    rt = _rt()
    with rt.session() as db:
        broadcast = db.get(Broadcast, broadcast_id) or abort(404)
        if broadcast.status != BroadcastStatus.DRAFT:
            return redirect(url_for("broadcasts.progress_page", broadcast_id=broadcast_id))
        four_eyes = rt.settings.emergency_four_eyes
        return render_template(
            "pages/broadcast_draft.html",
            broadcast=broadcast,
            previews=preview_broadcast(broadcast, rt.settings.default_locale),
            reach=audience_estimate(db, broadcast, rt.settings),
            refusal=approval_refusal(
                broadcast, _actor(), four_eyes=four_eyes, authors=draft_authors(db, broadcast_id)
            ),
            fingerprint=content_fingerprint(broadcast),
            locales=rt.settings.locales,
            default_locale=rt.settings.default_locale,
        )


@bp.route("/<int:broadcast_id>/approve", methods=["POST"])
@roles(*WRITERS)
def approve(broadcast_id: int):
    rt = _rt()
    try:
        # The fingerprint of the draft as the page showed it: an edit since then refuses.
        fingerprint = request.form.get("fingerprint") or None
        start_draft(rt, broadcast_id, actor=_actor(), fingerprint=fingerprint)
    except SavedNotQueued:
        flash(_("Approved. The queue is unavailable; sending starts when it is back."), "error")
    except BroadcastError as error:
        flash(str(error), "error")
        return redirect(url_for("broadcasts.draft", broadcast_id=broadcast_id)), 303
    return redirect(url_for("broadcasts.progress_page", broadcast_id=broadcast_id)), 303


def _progress_or_404(db, broadcast_id: int):
    try:
        return progress(db, broadcast_id)
    except BroadcastError:
        abort(404)


@bp.route("/<int:broadcast_id>/progress")
@roles(*WRITERS)
def progress_page(broadcast_id: int):
    rt = _rt()
    with rt.session() as db:
        counts = _progress_or_404(db, broadcast_id)
        broadcast = db.get(Broadcast, broadcast_id)
        if broadcast.status == BroadcastStatus.DRAFT:
            return redirect(url_for("broadcasts.draft", broadcast_id=broadcast_id))
        reply_count, newest_replies = replies(db, broadcast_id)
        return render_template(
            "pages/broadcast_progress.html",
            broadcast=broadcast,
            progress=counts,
            percent=_percent(counts),
            waiting=deferred_count(db, broadcast_id),
            timeline=delivery_timeline(db, broadcast_id),
            failures=failure_reasons(db, broadcast_id),
            fell_back=fallbacks(db, broadcast_id),
            reply_count=reply_count,
            replies=newest_replies,
            finished=broadcast.status in FINISHED,
            statuses=DeliveryStatus.OPEN + DeliveryStatus.FINAL,
            channels=[c for c in CHANNELS if any(k[0] == c for k in counts.by_channel_status)],
        )


def _percent(counts) -> int:
    if not counts.total:
        return 100 if counts.status in FINISHED else 0
    return counts.final * 100 // counts.total


@bp.route("/<int:broadcast_id>/progress.json")
@roles(*WRITERS)
def progress_json(broadcast_id: int):
    """What the progress page's script polls every two seconds."""
    with _rt().session() as db:
        counts = _progress_or_404(db, broadcast_id)
    by_channel: dict[str, dict[str, int]] = {}
    for (channel, status), n in counts.by_channel_status.items():
        by_channel.setdefault(channel, {})[status] = n
    return jsonify(
        status=counts.status,
        status_label=str(BROADCAST_STATUS_LABELS.get(counts.status, counts.status)),
        finished=counts.status in FINISHED,
        total=counts.total,
        final=counts.final,
        percent=_percent(counts),
        by_status=dict(counts.by_status),
        by_channel=by_channel,
    )


@bp.route("/<int:broadcast_id>/cancel", methods=["GET", "POST"])
@roles(*WRITERS)
def cancel(broadcast_id: int):
    """GET asks to confirm (works without JavaScript); POST cancels."""
    rt = _rt()
    if request.method == "GET":
        with rt.session() as db:
            broadcast = db.get(Broadcast, broadcast_id) or abort(404)
            return render_template("pages/broadcast_cancel.html", broadcast=broadcast)
    try:
        cancelled = cancel_notice(rt, broadcast_id, actor=current_staff().email)
    except BroadcastError as error:
        flash(str(error), "error")
    else:
        message = ngettext(
            "Cancelled: %(num)d delivery had not gone yet and will not be sent.",
            "Cancelled: %(num)d deliveries had not gone yet and will not be sent.",
            cancelled,
        )
        flash(message, "info")
    return redirect(url_for("broadcasts.progress_page", broadcast_id=broadcast_id)), 303


@bp.route("/<int:broadcast_id>/deliveries.csv")
@roles(*WRITERS)
def export_csv(broadcast_id: int):
    rt = _rt()
    with rt.session() as db:
        if db.get(Broadcast, broadcast_id) is None:
            abort(404)
    lines = export_deliveries(rt, broadcast_id, actor=current_staff().email)
    response = Response(lines, mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="notice-{broadcast_id}-deliveries.csv"'
    )
    return response
