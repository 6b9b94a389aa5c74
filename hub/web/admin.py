"""The admin section of the staff console: its index, staff accounts and roles, and topics and
areas. Admins only. Channels and webhooks are in hub.web.admin_channels."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from hub import admin, catalogue
from hub.models import Role
from hub.web import current_staff, roles

bp = Blueprint("admin", __name__, url_prefix="/admin")

KIND_TITLES = {"topics": _l("Topics"), "areas": _l("Areas")}
ROLE_LABELS = {
    Role.ADMIN: _l("Administrator"),
    Role.BROADCASTER: _l("Broadcaster"),
    Role.APPROVER: _l("Approver"),
    Role.AGENT: _l("Support agent"),
}
KINDS = "<any(topics, areas):kind>"


def _rt():
    return current_app.extensions["hub"]


@bp.app_template_global()
def role_label(role: str) -> str:
    return str(ROLE_LABELS.get(role, role))


@bp.route("")
@roles(Role.ADMIN)
def index():
    return render_template("admin/index.html")


# -- staff ----------------------------------------------------------------------------------


def _users_page(status: int = 200, error: str = "", form=None):
    page = render_template(
        "admin/users.html",
        users=admin.staff_rows(_rt()),
        roles=Role.ALL,
        error=error,
        form=form or {},
        me=current_staff().id,
    )
    return page, status


def _password_page(email: str, password: str, created: bool):
    """The password is in this one response only: not stored in plain, not cached."""
    page = render_template("admin/password.html", email=email, password=password, created=created)
    response = make_response(page)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/users")
@roles(Role.ADMIN)
def users():
    return _users_page()


@bp.route("/users", methods=["POST"])
@roles(Role.ADMIN)
def create_user():
    try:
        email, password = admin.create_user(
            _rt(),
            actor=current_staff().email,
            email=request.form.get("email", ""),
            role=request.form.get("role", ""),
        )
    except admin.AdminError as error:
        return _users_page(422, str(error), request.form)
    return _password_page(email, password, created=True)


@bp.route("/users/<int:user_id>/role", methods=["POST"])
@roles(Role.ADMIN)
def change_role(user_id: int):
    role = request.form.get("role", "")
    try:
        email = admin.change_role(_rt(), actor=current_staff(), user_id=user_id, role=role)
    except admin.AdminError as error:
        return _users_page(422, str(error))
    flash(_("%(email)s now has the role %(role)s.", email=email, role=role_label(role)), "info")
    return redirect(url_for("admin.users"), 303)


@bp.route("/users/<int:user_id>/active", methods=["POST"])
@roles(Role.ADMIN)
def set_active(user_id: int):
    active = request.form.get("active") == "1"
    try:
        email = admin.set_active(_rt(), actor=current_staff(), user_id=user_id, active=active)
    except admin.AdminError as error:
        return _users_page(422, str(error))
    if active:
        flash(_("%(email)s can sign in again.", email=email), "info")
    else:
        flash(_("%(email)s is disabled and signed out everywhere.", email=email), "info")
    return redirect(url_for("admin.users"), 303)


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@roles(Role.ADMIN)
def reset_password(user_id: int):
    try:
        email, password = admin.reset_password(_rt(), actor=current_staff(), user_id=user_id)
    except admin.AdminError as error:
        return _users_page(422, str(error))
    return _password_page(email, password, created=False)


# -- topics and areas -----------------------------------------------------------------------


def _names_from_form() -> dict[str, str]:
    """The name in each language, as the form gave them, cleaned (raises CatalogueError)."""
    settings = _rt().settings
    given = {code: request.form.get(f"name_{code}", "") for code in settings.locales}
    return catalogue.clean_names(given, settings.locales, settings.default_locale)


def _catalogue_page(kind: str, status: int = 200, error: str = "", form=None):
    rt = _rt()
    with rt.session() as db:
        rows = catalogue.entries(
            db, catalogue.KINDS[kind], str(get_locale()), rt.settings.default_locale
        )
    page = render_template(
        "admin/catalogue.html",
        kind=kind,
        title=KIND_TITLES[kind],
        rows=rows,
        locales=rt.settings.locales,
        default_locale=rt.settings.default_locale,
        error=error,
        form=form or {},
    )
    return page, status


@bp.route(f"/{KINDS}")
@roles(Role.ADMIN)
def catalogue_list(kind: str):
    return _catalogue_page(kind)


@bp.route(f"/{KINDS}", methods=["POST"])
@roles(Role.ADMIN)
def catalogue_create(kind: str):
    rt = _rt()
    try:
        slug = catalogue.clean_slug(request.form.get("slug", ""))
        names = _names_from_form()
        with rt.session() as db:
            catalogue.create_entry(
                db, catalogue.KINDS[kind], slug=slug, names=names, actor=current_staff().email
            )
    except catalogue.CatalogueError as error:
        return _catalogue_page(kind, 422, str(error), request.form)
    flash(_("%(slug)s is added.", slug=slug), "info")
    return redirect(url_for("admin.catalogue_list", kind=kind), 303)


def _edit_page(kind: str, slug: str, status: int = 200, error: str = "", form=None):
    rt = _rt()
    with rt.session() as db:
        names = catalogue.names_of(db, catalogue.KINDS[kind], slug)
    if names is None:
        abort(404)
    page = render_template(
        "admin/catalogue_edit.html",
        kind=kind,
        title=KIND_TITLES[kind],
        slug=slug,
        form=form or {f"name_{code}": name for code, name in names.items()},
        locales=rt.settings.locales,
        default_locale=rt.settings.default_locale,
        error=error,
    )
    return page, status


@bp.route(f"/{KINDS}/<slug>")
@roles(Role.ADMIN)
def catalogue_edit(kind: str, slug: str):
    return _edit_page(kind, slug)


@bp.route(f"/{KINDS}/<slug>", methods=["POST"])
@roles(Role.ADMIN)
def catalogue_rename(kind: str, slug: str):
    rt = _rt()
    try:
        names = _names_from_form()
        with rt.session() as db:
            catalogue.rename_entry(
                db, catalogue.KINDS[kind], slug=slug, names=names, actor=current_staff().email
            )
    except catalogue.CatalogueError as error:
        return _edit_page(kind, slug, 422, str(error), request.form)
    flash(_("The names of %(slug)s are saved.", slug=slug), "info")
    return redirect(url_for("admin.catalogue_list", kind=kind), 303)


@bp.route(f"/{KINDS}/<slug>/remove", methods=["POST"])
@roles(Role.ADMIN)
def catalogue_remove(kind: str, slug: str):
    try:
        with _rt().session() as db:
            catalogue.remove_entry(
                db, catalogue.KINDS[kind], slug=slug, actor=current_staff().email
            )
    except catalogue.CatalogueError as error:
        return _edit_page(kind, slug, 422, str(error))
    flash(_("%(slug)s is removed.", slug=slug), "info")
    return redirect(url_for("admin.catalogue_list", kind=kind), 303)
