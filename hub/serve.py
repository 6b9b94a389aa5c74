"""`hub serve` and `hub demo`: the web app, the sandbox stand-ins, and for the demo everything
else (database, embedded Redis, workers, demo data) in one command that Ctrl-C stops whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import click
import waitress
from flask import Flask
from flask_babel import gettext as _
from flask_babel import ngettext

from channels.sandbox.smtp import start_smtp_standin
from hub import providers, runtime


def start_standins(rt: runtime.Runtime) -> list[Callable[[], None]]:
    """Start the stand-ins of every provider that has no credentials; returns their stops."""
    settings = rt.settings
    stops = []
    if settings.sandbox_active:
        server = providers.http_standin(rt).start()
        stops.append(server.stop)
        click.echo(
            _(
                "sandbox Twilio, Telegram and push stand-ins on %(url)s",
                url=settings.sandbox_http_url,
            )
        )
    if settings.email_uses_sandbox:
        controller = start_smtp_standin(settings.sandbox_db_path, settings.sandbox_smtp_port)
        stops.append(controller.stop)
        click.echo(
            _("sandbox SMTP stand-in on 127.0.0.1:%(port)d", port=settings.sandbox_smtp_port)
        )
    return stops


def serve(app: Flask, host: str, port: int) -> None:
    rt = app.extensions["hub"]
    rt.redis.ping()  # with no HUB_REDIS_URL this starts the embedded server workers will join
    stops = start_standins(rt)
    click.echo(_("Mestni glas on %(url)s (Ctrl-C stops it)", url=f"http://{host}:{port}/"))
    if rt.settings.sandbox_active:
        click.echo(_("what residents received: %(url)s", url=f"http://{host}:{port}/sandbox"))
    runtime.freeze_startup_objects()
    try:
        waitress.serve(app, host=host, port=port, threads=16, ident="mestni-glas", _quiet=True)
    finally:
        for stop in stops:
            stop()


def _raise_interrupt(_signum, _frame):
    raise KeyboardInterrupt


def run_demo(app: Flask, *, workers: int, residents: int, port: int) -> None:
    from hub.migrate import upgrade
    from hub.seed import seed_demo, seed_kranj

    rt = app.extensions["hub"]
    settings = rt.settings
    upgrade(settings.database_url)
    subscribe = providers.demo_push_subscriber(rt)
    with rt.session() as session:
        seed_kranj(session)
        logins = seed_demo(session, residents=residents, push_subscription=subscribe)
    rt.redis.ping()
    env = {
        **os.environ,
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_REDIS_URL": settings.redis_url,
        "HUB_INSTANCE_PATH": str(settings.instance_path),
        "HUB_SECRET_KEY": settings.secret_key,
        "HUB_PORT": str(port),
    }
    children = [
        subprocess.Popen([sys.executable, "-m", "hub.cli", "worker"], env=env)
        for _ in range(workers)
    ]
    # Ctrl-C and `kill` both end the demo through the same clean-up (SIGINT explicitly too:
    # a shell starts background jobs with SIGINT ignored).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    _banner(port, logins, workers)
    try:
        serve(app, "127.0.0.1", port)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_children(children)
        runtime.stop_embedded_redis()
        click.echo(_("demo stopped; nothing is left running"))


def print_logins(logins: dict[str, str]) -> None:
    """Staff logins with their roles; the passwords are shown this once."""
    from hub.seed import DEMO_STAFF

    roles = dict(DEMO_STAFF)
    click.echo(_("staff logins (role, e-mail, password):"))
    for email, password in logins.items():
        click.echo(f"  {roles.get(email, ''):<12} {email:<28} {password}")


def _banner(port: int, logins: dict[str, str], workers: int) -> None:
    click.echo("")
    click.echo(
        ngettext(
            "Mestni glas demo: %(url)s (%(num)d worker)",
            "Mestni glas demo: %(url)s (%(num)d workers)",
            workers,
            url=f"http://127.0.0.1:{port}/",
        )
    )
    print_logins(logins)
    click.echo(_("send a notice from another terminal, for example:"))
    click.echo(
        "  .venv/bin/hub broadcast send --topic waste-collection --area center "
        "--title 'Odvoz odpadkov' --body-sl 'Jutri odvoz bioloških odpadkov.' "
        "--body-en 'Organic waste is collected tomorrow.' --wait"
    )
    click.echo("")


def _stop_children(children: list[subprocess.Popen]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
