"""Flask blueprints. Views are thin: parse, authorise, call a domain function, render.

Every view says who may use it: @public, or @roles(...). A view that says neither is refused
to everyone (fail closed), and a test walks the URL map to prove each one says something."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, redirect, request, session, url_for

from hub.models import StaffUser
from hub.portal import can_sign_in

PUBLIC_ATTR = "hub_public"
ROLES_ATTR = "hub_roles"
API_KEY_ATTR = "hub_api_key"  # an /api/v1 view: checks its Bearer key and the key's role itself
RESIDENT_ATTR = "hub_resident"
# The portal keeps its resident under a key of its own: a resident is never staff.
RESIDENT_SESSION_KEY = "resident_id"


def public(view: Callable) -> Callable:
    setattr(view, PUBLIC_ATTR, True)
    return view


def roles(*allowed: str) -> Callable[[Callable], Callable]:
    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            return view(*args, **kwargs)

        setattr(wrapper, ROLES_ATTR, frozenset(allowed))
        return wrapper

    return decorate


def resident(view: Callable) -> Callable:
    """A resident's own page in the portal: needs a signed-in resident (staff are not one)."""
    setattr(view, RESIDENT_ATTR, True)
    return view


def local_path(target: str | None, fallback: str) -> str:
    """`target` if it is a path on this site, else `fallback`: a form's `next` must not send
    anyone to another site (browsers read "/\\evil" and "/\t/evil" as other hosts)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return fallback
    if any(c in target for c in "\\\t\r\n") or urlsplit(target).netloc:
        return fallback
    return target


def access_rule(view: Callable) -> str:
    """'public', 'resident', 'roles', or 'none' (refused to everyone)."""
    if getattr(view, PUBLIC_ATTR, False):
        return "public"
    if getattr(view, RESIDENT_ATTR, False):
        return "resident"
    return "roles" if getattr(view, ROLES_ATTR, None) else "none"


def _head_as_get() -> None:
    """HEAD is a GET without a body (RFC 9110, 9.3.2), but views branch on `GET` versus
    anything else: without this a HEAD (which CSRF protection lets through, like GET) would
    run a form's action, e.g. use up a sign-in link or delete a draft. Werkzeug still drops
    the body, since it looks at the WSGI environ's method, not this one."""
    if request.method == "HEAD":
        request.method = "GET"


def _authorise() -> object | None:
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return None  # 404 / 405 follow
    rule = access_rule(view)
    if rule == "public":
        return None
    if rule == "none":
        abort(403)
    if getattr(view, API_KEY_ATTR, False):
        return None  # hub.web.api_support: 401/403 as problem+json, never a login redirect
    if rule == "resident":
        if current_resident() is None:
            return redirect(url_for("portal.signin", next=request.full_path))
        return None
    user = current_staff()
    if user is None:
        return redirect(url_for("auth.login", next=request.full_path))
    if user.role not in getattr(view, ROLES_ATTR) and user.role != "admin":
        abort(403)
    return None


def current_staff() -> StaffUser | None:
    if "staff" not in g:
        g.staff = None
        staff_id = session.get("staff_id")
        if staff_id is not None:
            rt = current_app.extensions["hub"]
            with rt.session() as db:
                user = db.get(StaffUser, staff_id)
                # A session from before "sign out everywhere" carries an older generation.
                current = user is not None and user.session_generation == session.get("generation")
                if current and user.active:
                    g.staff = user
    return g.staff


def current_resident() -> int | None:
    """The signed-in resident's id, while their account exists."""
    if "resident_id" not in g:
        g.resident_id = None
        resident_id = session.get(RESIDENT_SESSION_KEY)
        if resident_id is not None:
            with current_app.extensions["hub"].session() as db:
                g.resident_id = resident_id if can_sign_in(db, resident_id) else None
    return g.resident_id


def register_blueprints(app: Flask) -> None:
    from hub.web import admin_callbacks, auth, feeds, inbox, public_pages, sandbox, staff, webhooks

    for module in (admin_callbacks, auth, feeds, inbox, public_pages, sandbox, staff, webhooks):
        app.register_blueprint(module.bp)
    from hub.web import notify_v2  # the GOV.UK Notify-compatible API

    app.register_blueprint(notify_v2.bp)
    from hub.web import admin, admin_channels, audit_log, broadcasts  # the staff console

    for console in (admin, admin_channels, audit_log, broadcasts):
        app.register_blueprint(console.bp)
    from hub.web import api_v1  # the REST API

    app.register_blueprint(api_v1.bp)
    from hub.web import portal  # the resident portal

    app.register_blueprint(portal.bp)
    app.view_functions["static"] = public(app.view_functions["static"])
    app.before_request(_head_as_get)
    app.before_request(_authorise)
    app.context_processor(lambda: {"current_staff": current_staff()})
    app.context_processor(lambda: {"current_resident": current_resident()})
