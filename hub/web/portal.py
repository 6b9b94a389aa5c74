"""The resident portal under /me: passwordless sign-in, preferences, contact points, notices
and the conversation with the city, and the resident's own data. Thin views over hub.portal,
hub.preferences, hub.portal_notices and hub.portal_data; every form posts with a CSRF token and
every flow works without JavaScript."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _

from hub import live
from hub.models import CodePurpose
from hub.portal import (
    PortalError,
    RateLimited,
    add_push_subscription,
    confirm_code,
    confirm_link,
    contact_points,
    link_is_usable,
    move_contact,
    remove_contact,
    request_code,
    sign_in_with,
    telegram_link,
    vapid_public_key,
    verify_with,
)
from hub.portal_data import erase, export
from hub.portal_notices import (
    deliveries_of,
    notice_sent_to,
    notices_sent_to,
    thread_of,
    write,
)
from hub.preferences import (
    Preferences,
    choices,
    preferences_of,
    save_preferences,
    save_topic_channels,
    topic_channels_of,
    usable_channels,
)
from hub.rendering import content_for, paragraphs
from hub.web import RESIDENT_SESSION_KEY, current_resident, local_path, public, resident

bp = Blueprint("portal", __name__, url_prefix="/me")

PENDING_SIGN_IN = "portal_sign_in_code"  # session: the code id a sign-in waits for
PENDING_VERIFY = "portal_verify_code"  # session: the code id an added address waits for


def _rt():
    return current_app.extensions["hub"]


def _locale() -> str:
    return str(get_locale())


def _client() -> str:
    return request.remote_addr or "unknown"


def _refused(template: str, message: str, status: int, **context):
    flash(message, "error")
    return render_template(template, **context), status


# -- signing in -----------------------------------------------------------------------------


@bp.route("/signin", methods=["GET", "POST"])
@public
def signin():
    if request.method == "GET":
        return render_template("portal/signin.html")
    try:
        code_id, address = request_code(
            _rt(),
            request.form.get("address", ""),
            purpose=CodePurpose.SIGN_IN,
            locale=_locale(),
            client=_client(),
        )
    except PortalError as exc:
        return _refused("portal/signin.html", str(exc), 422)
    except RateLimited as exc:
        minutes = max(1, -(-exc.retry_after_s // 60))
        message = ngettext(
            "Too many codes asked for. Try again in %(num)d minute.",
            "Too many codes asked for. Try again in %(num)d minutes.",
            minutes,
        )
        return _refused("portal/signin.html", message, 429)
    session[PENDING_SIGN_IN] = code_id
    session["portal_address"] = address
    session["portal_next"] = local_path(request.args.get("next"), url_for("portal.home"))
    return redirect(url_for("portal.enter_code"))


@bp.route("/signin/code", methods=["GET", "POST"])
@public
def enter_code():
    if PENDING_SIGN_IN not in session:
        return redirect(url_for("portal.signin"))
    if request.method == "GET":
        return render_template("portal/code.html", address=session.get("portal_address", ""))
    rt = _rt()
    with rt.session() as db:
        proof = confirm_code(
            db, rt.settings.secret_key, session.get(PENDING_SIGN_IN), request.form.get("code", "")
        )
        resident_id = sign_in_with(db, proof) if proof else None
    if resident_id is None:
        message = _("The code is wrong or no longer valid. Check it, or ask for a new one.")
        return _refused("portal/code.html", message, 422, address=session.get("portal_address"))
    return _signed_in(resident_id)


def _signed_in(resident_id: int):
    target = session.get("portal_next") or url_for("portal.home")
    for key in (PENDING_SIGN_IN, "portal_address", "portal_next"):
        session.pop(key, None)
    session[RESIDENT_SESSION_KEY] = resident_id
    return redirect(target)


@bp.route("/link/<token>", methods=["GET", "POST"])
@public
def link(token: str):
    """The link in a code's message. Opening it only shows a button: mail scanners that open
    every link must not use it up."""
    rt = _rt()
    if request.method == "GET":
        with rt.session() as db:
            usable = link_is_usable(db, token)
        if not usable:
            return render_template("portal/link_invalid.html"), 404
        return render_template("portal/link.html", token=token)
    with rt.session() as db:
        proof = confirm_link(db, token)
        if proof is None:
            return render_template("portal/link_invalid.html"), 404
        if proof.purpose == CodePurpose.SIGN_IN:
            resident_id = sign_in_with(db, proof)
        else:
            try:
                verify_with(db, proof)
            except PortalError as exc:
                return _refused("portal/link_invalid.html", str(exc), 409)
            resident_id = None
    if resident_id is not None:
        return _signed_in(resident_id)
    flash(_("Your address is confirmed. Notices can go there now."), "info")
    return redirect(url_for("portal.contacts") if current_resident() else url_for("portal.signin"))


@bp.route("/signout", methods=["POST"])
@resident
def signout():
    session.pop(RESIDENT_SESSION_KEY, None)
    return redirect(url_for("portal.signin"))


# -- the resident's pages ---------------------------------------------------------------------


@bp.route("/")
@resident
def home():
    with _rt().session() as db:
        contacts = contact_points(db, current_resident())
        prefs = preferences_of(db, current_resident())
        return render_template("portal/home.html", contacts=contacts, prefs=prefs)


@bp.route("/preferences", methods=["GET", "POST"])
@resident
def preferences():
    rt = _rt()
    with rt.session() as db:
        stored = preferences_of(db, current_resident())
    if request.method == "GET":
        return _preferences_page(stored)
    try:
        wanted = _preferences_from(request.form)
    except PortalError as exc:
        return _preferences_page(stored, str(exc))
    try:
        with rt.session() as db:
            save_preferences(db, current_resident(), wanted, rt.settings.locales)
    except PortalError as exc:
        return _preferences_page(wanted, str(exc))
    session["locale"] = wanted.locale  # the portal speaks the language the notices come in
    flash(_("Your choices are saved."), "info")
    return redirect(url_for("portal.preferences"))


def _preferences_page(prefs: Preferences, error: str | None = None):
    with _rt().session() as db:
        areas, topics = choices(db)
    context = {"prefs": prefs, "areas": areas, "topics": topics}
    if error:
        return _refused("portal/preferences.html", error, 422, **context)
    return render_template("portal/preferences.html", **context)


def _preferences_from(form) -> Preferences:
    def ids(name: str) -> set[int]:
        values = form.getlist(name)
        if not all(v.isdigit() for v in values):
            raise PortalError(_("The form was not filled in as expected. Try again."))
        return {int(v) for v in values}

    home = form.get("area", "")
    if home and not home.isdigit():
        raise PortalError(_("The form was not filled in as expected. Try again."))
    return Preferences(
        name=form.get("name", ""),
        locale=form.get("locale", ""),
        area_id=int(home) if home else None,
        topic_ids=ids("topics"),
        other_area_ids=ids("areas"),
        quiet_start=form.get("quiet_start", ""),
        quiet_end=form.get("quiet_end", ""),
    )


@bp.route("/preferences/channels")
@resident
def topic_channels():
    return _topic_channels_page()


@bp.route("/preferences/channels/<int:topic_id>", methods=["POST"])
@resident
def save_topic_channel_order(topic_id: int):
    try:
        wanted = _topic_channels_from(request.form)
        with _rt().session() as db:
            save_topic_channels(db, current_resident(), topic_id, wanted)
    except PortalError as exc:
        return _topic_channels_page(str(exc), topic_id)
    flash(_("Your choices are saved."), "info")
    return redirect(url_for("portal.topic_channels"))


def _topic_channels_page(error: str | None = None, error_topic: int | None = None):
    with _rt().session() as db:
        context = {
            "topics": topic_channels_of(db, current_resident()),
            "usual": usable_channels(db, current_resident()),
            "error": error,
            "error_topic": error_topic,
            "form": request.form,
        }
    return render_template("portal/topic_channels.html", **context), 422 if error else 200


def _topic_channels_from(form) -> list[str] | None:
    """The form's channels in the order chosen, or None for the usual order."""
    unexpected = PortalError(_("The form was not filled in as expected. Try again."))
    mode = form.get("mode", "")
    positions = {}
    for key, value in form.items(multi=True):
        if key.startswith("position-") and value:
            if not value.isdigit():
                raise unexpected
            positions[key.removeprefix("position-")] = int(value)
    if mode not in ("usual", "own"):
        raise unexpected
    if mode == "usual":
        return None
    if not positions:
        raise PortalError(_("Choose at least one channel for this topic, or use your usual order."))
    if len(set(positions.values())) != len(positions):
        raise PortalError(_("Give each channel its own place in the order."))
    return sorted(positions, key=positions.__getitem__)


# -- contact points ---------------------------------------------------------------------------


@bp.route("/contacts")
@resident
def contacts():
    return _contacts_page()


def _contacts_page(error: str | None = None, status: int = 200):
    rt = _rt()
    with rt.session() as db:
        context = {
            "contacts": contact_points(db, current_resident()),
            "vapid_public_key": vapid_public_key(rt),
        }
    if error:
        flash(error, "error")
    return render_template("portal/contacts.html", **context), status


@bp.route("/contacts/add", methods=["POST"])
@resident
def add_contact():
    try:
        code_id, address = request_code(
            _rt(),
            request.form.get("address", ""),
            purpose=CodePurpose.VERIFY,
            locale=_locale(),
            client=_client(),
            resident_id=current_resident(),
        )
    except PortalError as exc:
        return _contacts_page(str(exc), 422)
    except RateLimited:
        return _contacts_page(_("Too many codes asked for. Try again later."), 429)
    session[PENDING_VERIFY] = code_id
    session["portal_verify_address"] = address
    return redirect(url_for("portal.verify_contact"))


@bp.route("/contacts/verify", methods=["GET", "POST"])
@resident
def verify_contact():
    if PENDING_VERIFY not in session:
        return redirect(url_for("portal.contacts"))
    address = session.get("portal_verify_address", "")
    if request.method == "GET":
        return render_template("portal/verify.html", address=address)
    rt = _rt()
    with rt.session() as db:  # committed on its own: a wrong code counts even though refused
        proof = confirm_code(
            db, rt.settings.secret_key, session[PENDING_VERIFY], request.form.get("code", "")
        )
    if proof is None or proof.resident_id != current_resident():
        message = _("The code is wrong or no longer valid. Check it, or ask for a new one.")
        return _refused("portal/verify.html", message, 422, address=address)
    try:
        with rt.session() as db:
            verify_with(db, proof)
    except PortalError as exc:
        return _refused("portal/verify.html", str(exc), 422, address=address)
    session.pop(PENDING_VERIFY, None)
    session.pop("portal_verify_address", None)
    flash(_("Your address is confirmed. Notices can go there now."), "info")
    return redirect(url_for("portal.contacts"))


@bp.route("/contacts/<int:contact_id>/move", methods=["POST"])
@resident
def move(contact_id: int):
    step = {"up": -1, "down": 1}.get(request.form.get("direction", ""), 0)
    try:
        with _rt().session() as db:
            move_contact(db, current_resident(), contact_id, step)
    except PortalError as exc:
        return _contacts_page(str(exc), 422)
    return redirect(url_for("portal.contacts"))


@bp.route("/contacts/<int:contact_id>/remove", methods=["POST"])
@resident
def remove(contact_id: int):
    try:
        with _rt().session() as db:
            remove_contact(db, current_resident(), contact_id)
    except PortalError as exc:
        return _contacts_page(str(exc), 422)
    flash(_("The address is removed."), "info")
    return redirect(url_for("portal.contacts"))


@bp.route("/contacts/telegram", methods=["POST"])
@resident
def link_telegram():
    deep_link = telegram_link(_rt(), current_resident())
    if deep_link is None:
        return _contacts_page(_("Telegram cannot be reached right now. Try again later."), 503)
    return render_template("portal/telegram.html", deep_link=deep_link)


@bp.route("/contacts/push", methods=["POST"])
@resident
def add_push():
    """The page's script posts the browser's push subscription here (JSON, CSRF header)."""
    try:
        with _rt().session() as db:
            contact = add_push_subscription(db, current_resident(), request.get_json(silent=True))
            contact_id = contact.id
    except PortalError as exc:
        return jsonify(error=str(exc)), 422
    return jsonify(id=contact_id), 201


@bp.route("/sw.js")
@public
def service_worker():
    """The push service worker, served from /me/ so that its scope covers the portal's pages:
    a worker's scope is at most its own folder, and `navigator.serviceWorker.ready` in a page
    waits for a worker whose scope covers that page (one under /static/ never would)."""
    response = current_app.send_static_file("portal-sw.js")
    response.headers["Cache-Control"] = "no-cache"  # a new version reaches browsers at once
    return response


# -- notices and messages ---------------------------------------------------------------------


@bp.route("/notices")
@resident
def notices():
    rt = _rt()
    with rt.session() as db:
        sent = notices_sent_to(db, current_resident(), _locale(), rt.settings.default_locale)
    return render_template("portal/notices.html", notices=sent)


@bp.route("/notices/<int:broadcast_id>")
@resident
def notice(broadcast_id: int):
    return _notice_page(broadcast_id)


def _notice_page(broadcast_id: int, status: int = 200):
    rt = _rt()
    with rt.session() as db:
        broadcast = notice_sent_to(db, current_resident(), broadcast_id)
        if broadcast is None:
            abort(404)
        content = content_for(broadcast, _locale(), rt.settings.default_locale)
        page = render_template(
            "portal/notice.html",
            broadcast=broadcast,
            content=content,
            paragraphs=paragraphs(content.body),
            deliveries=deliveries_of(db, current_resident(), broadcast_id),
        )
    return page, status


@bp.route("/notices/<int:broadcast_id>/answer", methods=["POST"])
@resident
def answer(broadcast_id: int):
    try:
        _write(request.form.get("text", ""), broadcast_id)
    except PortalError as exc:
        flash(str(exc), "error")
        return _notice_page(broadcast_id, 422)
    flash(_("Your answer is sent to the city."), "info")
    return redirect(url_for("portal.messages"))


@bp.route("/messages", methods=["GET", "POST"])
@resident
def messages():
    status = 200
    if request.method == "POST":
        try:
            _write(request.form.get("text", ""), None)
        except PortalError as exc:
            flash(str(exc), "error")
            status = 422
        else:
            flash(_("Your message is sent to the city."), "info")
            return redirect(url_for("portal.messages"))
    with _rt().session() as db:
        thread = thread_of(db, current_resident())
        return render_template("portal/messages.html", thread=thread), status


def _write(text: str, broadcast_id: int | None) -> None:
    rt = _rt()
    with rt.session() as db:
        received = write(
            db,
            current_resident(),
            text,
            default_locale=rt.settings.default_locale,
            broadcast_id=broadcast_id,
        )
    live.publish(rt, "message", received.conversation_id)  # the agents' inbox shows it now


# -- own data ---------------------------------------------------------------------------------


@bp.route("/data")
@resident
def data():
    return render_template("portal/data.html")


@bp.route("/data.json")
@resident
def download():
    rt = _rt()
    with rt.session() as db:
        document = export(db, current_resident(), rt.settings.default_locale)
    response = current_app.json.response(document)
    response.headers["Content-Disposition"] = 'attachment; filename="mestni-glas-data.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/delete", methods=["POST"])
@resident
def delete_account():
    if request.form.get("confirm") != "yes":
        return _refused(
            "portal/data.html",
            _("Tick the box to confirm that you want to delete the account."),
            422,
        )
    with _rt().session() as db:
        erase(db, current_resident())
    session.pop(RESIDENT_SESSION_KEY, None)
    return render_template("portal/deleted.html")
