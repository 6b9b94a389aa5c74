"""The agents' inbox: the list of conversations, one conversation with everything an agent does
to it, the canned answers, and the live stream the open pages listen to.

Every change is a POST (CSRF-checked by hub.csrf) that redirects back (Post/Redirect/Get). Bad
input changes nothing: the page comes back with status 400, the error by the form it concerns
and what the agent typed still in it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

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
from flask_babel import format_number, get_locale, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from hub import conversations, inbox, live, outbound
from hub.clock import utcnow
from hub.conversations import ConversationError
from hub.inbox import InboxFilter
from hub.models import CONVERSATION_PRIORITIES, Conversation, Message, Role
from hub.web import current_staff, local_path, roles

bp = Blueprint("inbox", __name__, url_prefix="/inbox")

STATUS_LABELS = {
    "open": _l("Open"),
    "pending": _l("Waiting for the resident"),
    "snoozed": _l("Snoozed"),
    "resolved": _l("Resolved"),
}
PRIORITY_LABELS = {
    "low": _l("Low"),
    "normal": _l("Normal"),
    "high": _l("High"),
    "urgent": _l("Urgent"),
}
ASSIGNEE_CHOICES = {"": _l("Anyone"), "me": _l("Me"), "none": _l("Nobody")}
FILTER_ARGS = ("status", "assignee", "label", "channel", "q")


def _rt():
    return current_app.extensions["hub"]


@bp.context_processor
def _helpers() -> dict:
    return {
        "status_label": lambda key: str(STATUS_LABELS.get(key, key)),
        "conversation_priority_label": lambda key: str(PRIORITY_LABELS.get(key, key)),
        "waiting_label": waiting_label,
        "locale_name": locale_name,
        "local_name": local_name,
    }


def waiting_label(since: datetime | None) -> str:
    """How long a resident has waited, as "waiting 12 minutes" in the page's language
    (Slovenian has four plural forms)."""
    if since is None:
        return ""
    minutes = max(0, int((utcnow() - since).total_seconds() // 60))
    if minutes < 1:
        return _("waiting less than a minute")
    if minutes < 60:
        return ngettext(
            "waiting %(count)s minute", "waiting %(count)s minutes", minutes,
            count=format_number(minutes),
        )  # fmt: skip
    hours = minutes // 60
    if hours < 48:
        return ngettext(
            "waiting %(count)s hour", "waiting %(count)s hours", hours, count=format_number(hours)
        )
    days = hours // 24
    return ngettext(
        "waiting %(count)s day", "waiting %(count)s days", days, count=format_number(days)
    )


def local_name(names: dict) -> str:
    """A topic's or area's name in the page's language, else the hub's."""
    default = _rt().settings.default_locale
    return names.get(str(get_locale())) or names.get(default) or ""


def locale_name(code: str) -> str:
    try:
        return Locale.parse(code).get_display_name(str(get_locale())) or code
    except ValueError:
        return code


# -- the list ------------------------------------------------------------------------------------


@bp.route("")
@roles(Role.AGENT)
def index():
    """Conversations, the longest waiting first; a GET form of filters (bookmarkable)."""
    return _list("inbox/list.html")


@bp.route("/rows")
@roles(Role.AGENT)
def rows():
    """The list's rows alone, for the page's script to refresh when something changes."""
    return _list("inbox/_rows.html")


def _list(template: str):
    args = {key: request.args.get(key, "").strip() for key in FILTER_ARGS}
    args["status"] = args["status"] or "open"
    after = request.args.get("after") or None
    context = {
        "args": args,
        "channels": inbox.ANSWERABLE_CHANNELS,
        "assignee_choices": ASSIGNEE_CHOICES,
        "list_url": url_for(".index", after=after, **_nonempty(args)),
    }
    try:
        filters = _filters(args, current_staff().id)
        with _rt().session() as db:
            page = inbox.inbox(db, filters, after=after)
            more = page.next_cursor
            context.update(
                page=page,
                next_url=url_for(".index", after=more, **_nonempty(args)) if more else None,
                summaries=inbox.summaries(db, page.conversations),
                known_labels=inbox.known_labels(db),
            )
            return render_template(template, **context)
    except ConversationError as error:
        return render_template(template, error=str(error), **context), 400


def _filters(args: dict[str, str], my_id: int) -> InboxFilter:
    if args["assignee"] not in ASSIGNEE_CHOICES:
        raise ConversationError(_("unknown assignee filter %(value)s", value=args["assignee"]))
    if args["channel"] and args["channel"] not in inbox.ANSWERABLE_CHANNELS:
        raise ConversationError(_("unknown channel %(value)s", value=args["channel"]))
    return InboxFilter(
        status=None if args["status"] == "any" else args["status"],
        assignee_id=my_id if args["assignee"] == "me" else None,
        unassigned=args["assignee"] == "none",
        channel=args["channel"] or None,
        label=args["label"].lower() or None,
        text=args["q"] or None,
    )


def _nonempty(args: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in args.items() if value}


# -- one conversation ----------------------------------------------------------------------------


@bp.route("/<int:conversation_id>")
@roles(Role.AGENT)
def conversation(conversation_id: int):
    """The conversation; opening it marks it read. `?canned=<shortcut>` fills the answer box
    with that canned answer (the form that does so works without JavaScript)."""
    with _rt().session() as db:
        if db.get(Conversation, conversation_id) is None:
            abort(404)
        conversations.mark_read(db, conversation_id)
    shortcut = request.args.get("canned", "").strip()
    if not shortcut:
        return _page(conversation_id)
    try:
        text = _canned(conversation_id, shortcut)
    except ConversationError as error:
        return _page(conversation_id, status=400, error=str(error), form="canned")
    return _page(conversation_id, draft={"text": text}, form="reply")


@bp.route("/<int:conversation_id>/messages")
@roles(Role.AGENT)
def messages(conversation_id: int):
    """The messages alone, for the page's script to refresh on a new message or status."""
    return _page(conversation_id, template="inbox/_messages.html")


@bp.route("/<int:conversation_id>/canned")
@roles(Role.AGENT)
def canned(conversation_id: int):
    """A canned answer filled in for this conversation, as JSON: {"text": ...}."""
    with _rt().session() as db:
        if db.get(Conversation, conversation_id) is None:
            abort(404)
    try:
        return jsonify(text=_canned(conversation_id, request.args.get("shortcut", "")))
    except ConversationError as error:
        return jsonify(error=str(error)), 400


def _canned(conversation_id: int, shortcut: str) -> str:
    me = current_staff()
    with _rt().session() as db:
        return inbox.canned_text(
            db, shortcut, conversation_id, me.name or me.email, _rt().settings.default_locale
        )


def _page(
    conversation_id: int,
    *,
    status: int = 200,
    error: str | None = None,
    form: str | None = None,
    draft=None,
    template: str = "inbox/conversation.html",
):
    """Render the conversation; after a refused action, `form` names the form whose `error`
    is shown by it and whose fields keep what was typed (`draft`)."""
    settings = _rt().settings
    with _rt().session() as db:
        found = inbox.details(db, conversation_id, str(get_locale()))
        if found is None:
            abort(404)
        unknown = found.conversation.resident_id is None
        find = request.args.get("find", "").strip()
        html = render_template(
            template,
            d=found,
            c=found.conversation,
            staff=inbox.assignable_staff(db),
            shortcuts=inbox.canned_shortcuts(db),
            known_labels=inbox.known_labels(db),
            find=find,
            matches=inbox.find_residents(db, find) if unknown and find else [],
            areas=inbox.area_choices(db) if unknown else [],
            locales=settings.locales,
            priorities=CONVERSATION_PRIORITIES,
            error=error,
            form=form,
            draft=draft if draft is not None else {},
        )
    return html, status


# -- what an agent does --------------------------------------------------------------------------


def _act(
    conversation_id: int,
    change: Callable[[Session], object],
    done: str,
    then: Callable[[object], None] | None = None,
):
    """Run `change` in one transaction; on success flash `done` and redirect back, on a
    ConversationError show the page again with the error (status 400), nothing changed."""
    try:
        with _rt().session() as db:
            if db.get(Conversation, conversation_id) is None:
                abort(404)
            result = change(db)
    except ConversationError as error:
        form = request.endpoint.rsplit(".", 1)[-1]
        return _page(conversation_id, status=400, error=str(error), form=form,
                     draft=request.form)  # fmt: skip
    if then is not None:
        then(result)
    flash(done, "success")
    back = url_for(".conversation", conversation_id=conversation_id)
    return redirect(local_path(request.form.get("next"), back))


def _field(name: str) -> str:
    return request.form.get(name, "")


@bp.route("/<int:conversation_id>/reply", methods=["POST"])
@roles(Role.AGENT)
def reply(conversation_id: int):
    channel = _field("channel") or None
    author_id = current_staff().id

    def change(db: Session) -> int:
        if channel is not None and channel not in inbox.ANSWERABLE_CHANNELS:
            raise ConversationError(_("cannot answer on %(channel)s", channel=channel))
        message = conversations.reply(
            db, conversation_id, _field("text"), author_id=author_id, channel=channel
        )
        return message.id

    def send(message_id: int) -> None:  # after the commit: the job must find the message
        outbound.enqueue(_rt(), message_id)
        live.publish(_rt(), "message", conversation_id, message_id=message_id)

    return _act(conversation_id, change, _("The answer is on its way."), then=send)


@bp.route("/<int:conversation_id>/note", methods=["POST"])
@roles(Role.AGENT)
def note(conversation_id: int):
    author_id = current_staff().id
    return _act(
        conversation_id,
        lambda db: inbox.add_note(db, conversation_id, _field("text"), author_id).id,
        _("The note is saved. It is not sent to anyone."),
        then=lambda _id: live.publish(_rt(), "message", conversation_id),
    )


@bp.route("/<int:conversation_id>/messages/<int:message_id>/retry", methods=["POST"])
@roles(Role.AGENT)
def retry(conversation_id: int, message_id: int):
    def change(db: Session) -> int:
        message = db.get(Message, message_id)
        if message is None or message.conversation_id != conversation_id:
            abort(404)
        return conversations.retry_message(db, message_id).id

    return _act(
        conversation_id,
        change,
        _("The answer is being sent again."),
        then=lambda _id: outbound.enqueue(_rt(), message_id),
    )


@bp.route("/<int:conversation_id>/assign", methods=["POST"])
@roles(Role.AGENT)
def assign(conversation_id: int):
    """`to`: "me", a staff user's id, or empty to unassign."""
    to, my_id = _field("to"), current_staff().id

    def change(db: Session) -> None:
        if to not in ("", "me") and not to.isdigit():
            raise ConversationError(_("choose who gets the conversation"))
        inbox.assign(db, conversation_id, my_id if to == "me" else int(to) if to else None)

    return _act(conversation_id, change, _("The assignment is changed."))


@bp.route("/<int:conversation_id>/labels", methods=["POST"])
@roles(Role.AGENT)
def add_label(conversation_id: int):
    return _act(
        conversation_id,
        lambda db: inbox.add_label(db, conversation_id, _field("label")),
        _("The label is added."),
    )


@bp.route("/<int:conversation_id>/labels/remove", methods=["POST"])
@roles(Role.AGENT)
def remove_label(conversation_id: int):
    return _act(
        conversation_id,
        lambda db: inbox.remove_label(db, conversation_id, _field("label")),
        _("The label is removed."),
    )


@bp.route("/<int:conversation_id>/priority", methods=["POST"])
@roles(Role.AGENT)
def priority(conversation_id: int):
    return _act(
        conversation_id,
        lambda db: inbox.set_priority(db, conversation_id, _field("priority")),
        _("The priority is changed."),
    )


@bp.route("/<int:conversation_id>/snooze", methods=["POST"])
@roles(Role.AGENT)
def snooze(conversation_id: int):
    """`until`: a local date and time (the city's time zone), or `mode=reply`: until the
    resident writes again."""
    timezone = ZoneInfo(_rt().settings.timezone)

    def change(db: Session) -> None:
        until = None if _field("mode") == "reply" else _utc_from_local(_field("until"), timezone)
        inbox.snooze(db, conversation_id, until)

    return _act(conversation_id, change, _("The conversation is snoozed."))


def _utc_from_local(value: str, timezone: ZoneInfo) -> datetime:
    """A browser's datetime-local value ("2025-03-01T08:30") in the city's time, as naive UTC
    (how the database keeps times)."""
    try:
        local = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConversationError(_("enter the date and time to snooze until")) from None
    if local.tzinfo is not None:
        raise ConversationError(_("enter the date and time to snooze until"))
    return local.replace(tzinfo=timezone).astimezone(UTC).replace(tzinfo=None)


@bp.route("/<int:conversation_id>/resolve", methods=["POST"])
@roles(Role.AGENT)
def resolve(conversation_id: int):
    return _act(
        conversation_id,
        lambda db: inbox.resolve(db, conversation_id),
        _("The conversation is resolved."),
    )


@bp.route("/<int:conversation_id>/reopen", methods=["POST"])
@roles(Role.AGENT)
def reopen(conversation_id: int):
    return _act(
        conversation_id,
        lambda db: inbox.reopen(db, conversation_id),
        _("The conversation is open again."),
    )


@bp.route("/<int:conversation_id>/link", methods=["POST"])
@roles(Role.AGENT)
def link(conversation_id: int):
    def change(db: Session) -> None:
        resident_id = _field("resident_id")
        if not resident_id.isdigit():
            raise ConversationError(_("choose a resident"))
        inbox.link_to_resident(db, conversation_id, int(resident_id))

    return _act(conversation_id, change, _("The sender is linked to the resident."))


@bp.route("/<int:conversation_id>/resident", methods=["POST"])
@roles(Role.AGENT)
def create_resident(conversation_id: int):
    locales = _rt().settings.locales

    def change(db: Session) -> int:
        if _field("locale") not in locales:
            raise ConversationError(_("choose a language"))
        return inbox.create_resident_from(
            db, conversation_id, _field("name"), _field("locale"), _field("area") or None
        )

    return _act(conversation_id, change, _("The resident is created."))


# -- canned answers ------------------------------------------------------------------------------


@bp.route("/canned", methods=["GET", "POST"])
@roles(Role.AGENT)
def canned_answers():
    """The canned answers; the form adds one or replaces the text of a shortcut in a locale."""
    settings = _rt().settings
    error = None
    if request.method == "POST":
        locale = _field("locale")
        try:
            with _rt().session() as db:
                if locale not in settings.locales:
                    raise ConversationError(_("choose a language"))
                inbox.save_canned(db, _field("shortcut"), locale, _field("body"))
        except ConversationError as exc:
            error = str(exc)
        else:
            flash(_("The canned answer is saved."), "success")
            return redirect(url_for(".canned_answers"))
    with _rt().session() as db:
        html = render_template(
            "inbox/canned.html",
            answers=inbox.canned_responses(db),
            locales=settings.locales,
            error=error,
        )
    return html, 400 if error else 200


# -- live ----------------------------------------------------------------------------------------


@bp.route("/events")
@roles(Role.AGENT)
def events():
    """Server-sent events: `message` when a resident writes, `status` when an answer's status
    changes; each with the conversation's id. The stream ends after a few minutes and the
    browser reconnects by itself."""
    rt = _rt()
    seconds = current_app.config.get("HUB_EVENTS_STREAM_S", live.STREAM_FOR_S)
    # No request context in the generator: it needs only the runtime, and holds nothing else
    # for the minutes it runs.
    response = Response(live.stream(rt, seconds), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
