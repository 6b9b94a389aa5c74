"""Mestni glas: the city's voice. `create_app()` builds the web app; nothing is built at import."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, has_request_context, request, session
from flask_babel import Babel
from flask_wtf import CSRFProtect

from hub import runtime
from hub.config import Settings

_HERE = Path(__file__).resolve().parent
csrf = CSRFProtect()
babel = Babel()


def data_dir(name: str) -> Path:
    """templates/ and translations/ live at the repository root; a wheel carries them inside."""
    in_checkout = _HERE.parent / name
    return in_checkout if in_checkout.is_dir() else _HERE / "_data" / name


def select_locale() -> str:
    settings: Settings = runtime.current().settings
    if not has_request_context():  # a worker or the CLI: the hub's language
        return settings.default_locale
    chosen = session.get("locale")
    if chosen in settings.locales:
        return chosen
    return request.accept_languages.best_match(settings.locales) or settings.default_locale


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    rt = runtime.build(settings)
    app = Flask(
        __name__,
        template_folder=str(data_dir("templates")),
        static_folder=str(_HERE / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        PERMANENT_SESSION_LIFETIME=settings.session_lifetime_s,
        WTF_CSRF_TIME_LIMIT=None,
        BABEL_DEFAULT_LOCALE=settings.default_locale,
        BABEL_DEFAULT_TIMEZONE=settings.timezone,
        BABEL_TRANSLATION_DIRECTORIES=str(data_dir("translations")),
    )
    app.extensions["hub"] = rt
    babel.init_app(app, locale_selector=select_locale)
    csrf.init_app(app)

    from hub import cli, i18n
    from hub.web import register_blueprints

    i18n.init_app(app)
    register_blueprints(app)
    cli.register(app)
    return app
