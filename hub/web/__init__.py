"""Flask blueprints. Views are thin: parse, authorise, call a domain function, render.

Every view says who may use it: @public, or @roles(...). A view that says neither is refused
to everyone (fail closed), and a test walks the URL map to prove each one says something."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, g, redirect, request, session, url_for

from hub.models import StaffUser

PUBLIC_ATTR = "hub_public"
ROLES_ATTR = "hub_roles"


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


def local_path(target: str | None, fallback: str) -> str:
    """`target` if it is a path on this site, else `fallback`: a form's `next` must not send
    anyone to another site (browsers read "/\\evil" and "/\t/evil" as other hosts)."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return fallback
    if any(c in target for c in "\\\t\r\n") or urlsplit(target).netloc:
        return fallback
    return target


def access_rule(view: Callable) -> str:
    """'public', 'roles', or 'none' (refused to everyone)."""
    if getattr(view, PUBLIC_ATTR, False):
        return "public"
    return "roles" if getattr(view, ROLES_ATTR, None) else "none"


def _authorise() -> object | None:
    view = current_app.view_functions.get(request.endpoint or "")
    if view is None:
        return None  # 404 / 405 follow
    rule = access_rule(view)
    if rule == "public":
        return None
    if rule == "none":
        abort(403)
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
                if user is not None and user.active:
                    g.staff = user
    return g.staff


def register_blueprints(app: Flask) -> None:
    from hub.web import auth, inbox, public_pages, sandbox, staff, webhooks

    for module in (auth, inbox, public_pages, sandbox, staff, webhooks):
        app.register_blueprint(module.bp)
    app.view_functions["static"] = public(app.view_functions["static"])
    app.before_request(_authorise)
    app.context_processor(lambda: {"current_staff": current_staff()})
