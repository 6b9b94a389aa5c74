"""The `hub` command (also `flask --app hub ...`). Bad arguments exit 2 with a one-line reason."""

from __future__ import annotations

import errno
import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps

import click
import redis
import sqlalchemy.exc
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from flask_babel import force_locale, format_datetime, ngettext
from flask_babel import gettext as _
from sqlalchemy import select

from hub.callbacks_cli import callbacks_group
from hub.config import ConfigError
from hub.i18n import BROADCAST_STATUS_LABELS, DELIVERY_STATUS_LABELS
from hub.models import ApiKeyType, Area, ChannelPolicy, DeliveryStatus, Priority, Role, Topic
from hub.notify.cli import templates_group


class BadInput(click.ClickException):
    """A clear one-line error; exit status 2 like any other usage error."""

    exit_code = 2


@contextmanager
def bad_input_from(*errors: type[Exception]) -> Iterator[None]:
    """Domain errors (bad input, already explained in their message) become BadInput."""
    try:
        yield
    except errors as exc:
        raise BadInput(str(exc)) from None


def localised(command=None, *, needs_schema: bool = True):
    """Run a command in an app context, speaking the operator's language, and refuse with a
    clear message (not a traceback) when the database is not migrated yet."""

    def decorate(function):
        @wraps(function)
        @with_appcontext
        def wrapper(*args, **kwargs):
            with force_locale(_cli_locale()):
                if needs_schema:
                    _require_schema()
                return function(*args, **kwargs)

        return wrapper

    return decorate(command) if command else decorate


def _require_schema() -> None:
    from hub.migrate import is_current

    if not is_current(rt().settings.database_url):
        raise click.ClickException(
            _("the database is not migrated to this version: run `hub db upgrade` first")
        )


def rt():
    return current_app.extensions["hub"]


def _cli_locale() -> str:
    """CLI messages follow the operator's LANG (en_US.UTF-8 -> en), else the hub's default."""
    settings = rt().settings
    lang = os.environ.get("HUB_CLI_LOCALE") or os.environ.get("LANG", "")
    code = lang.split("_")[0].split(".")[0].lower()
    return code if code in settings.locales else settings.default_locale


# -- database and reference data ---------------------------------------------------------------

db_group = click.Group("db", help="Database schema.")


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@localised(needs_schema=False)
def db_upgrade(revision: str):
    """Create or migrate the database schema."""
    from hub.migrate import upgrade

    upgrade(rt().settings.database_url, revision)
    click.echo(_("database at revision %(revision)s", revision=revision))


seed_group = click.Group("seed", help="Reference and demo data.")


@seed_group.command("kranj")
@localised
def seed_kranj_command():
    """Kranj's 26 local communities as areas, and a starter set of topics."""
    from hub.seed import seed_kranj

    with rt().session() as session:
        areas, topics = seed_kranj(session)
    click.echo(
        ngettext("added %(num)d area", "added %(num)d areas", areas)
        + ", "
        + ngettext("%(num)d topic", "%(num)d topics", topics)
    )


@seed_group.command("demo")
@click.option("--residents", default=300, show_default=True, type=click.IntRange(1, 1_000_000))
@localised
def seed_demo_command(residents: int):
    """Demo residents and staff logins (the passwords are printed once)."""
    from hub.providers import demo_push_subscriber
    from hub.seed import seed_demo
    from hub.serve import print_logins

    subscribe = demo_push_subscriber(rt())
    with rt().session() as session:
        logins = seed_demo(session, residents=residents, push_subscription=subscribe)
    print_logins(logins)


def _list_named(model) -> None:
    locale = rt().settings.default_locale
    with rt().session() as session:
        for slug, names in session.execute(select(model.slug, model.names).order_by(model.slug)):
            click.echo(f"{slug}\t{names.get(locale) or next(iter(names.values()), '')}")


areas_group = click.Group("areas", help="Areas (local communities).")
topics_group = click.Group("topics", help="Topics residents follow.")


@areas_group.command("list")
@localised
def areas_list():
    """One `slug<TAB>name` a line."""
    _list_named(Area)


@topics_group.command("list")
@localised
def topics_list():
    """One `slug<TAB>name` a line."""
    _list_named(Topic)


# -- people ----------------------------------------------------------------------------------

users_group = click.Group("users", help="Staff accounts.")


@users_group.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(Role.ALL))
@localised
def users_create(email: str, role: str):
    """Create a staff account; its first password is printed once."""
    from hub.contacts import InvalidAddress
    from hub.staff import audit, create_staff_user

    password = secrets.token_urlsafe(12)
    with bad_input_from(ValueError, InvalidAddress), rt().session() as session:
        user = create_staff_user(session, email=email, role=role, password=password)
        audit(session, "cli", "staff.create", f"staff:{user.id}", role=role)
    click.echo(
        _(
            "created %(role)s %(email)s; password (shown once): %(password)s",
            role=role,
            email=user.email,
            password=password,
        )
    )


api_keys_group = click.Group("api-keys", help="Keys for other systems (REST API and Notify API).")


@api_keys_group.command("create")
@click.option("--name", required=True)
@click.option("--role", required=True, type=click.Choice(Role.ALL))
@click.option(
    "--type",
    "key_type",
    default=ApiKeyType.NORMAL,
    type=click.Choice(ApiKeyType.ALL),
    show_default=True,
)
@localised
def api_keys_create(name: str, role: str, key_type: str):
    """Create a key; it is printed once and cannot be shown again."""
    from hub.apikeys import ApiKeyError, create_api_key

    with bad_input_from(ApiKeyError):
        key = create_api_key(rt(), name=name, role=role, key_type=key_type, created_by="cli")
    click.echo(_("API key (shown once, keep it secret):"), err=True)
    click.echo(key)


@api_keys_group.command("list")
@localised
def api_keys_list():
    """One key a line: id, name, role, type, created, revoked."""
    from hub.apikeys import list_api_keys

    with rt().session() as session:
        for key in list_api_keys(session):
            revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
            created = key.created_at.isoformat(timespec="seconds")
            click.echo(f"{key.id}\t{key.name}\t{key.role}\t{key.key_type}\t{created}\t{revoked}")


@api_keys_group.command("revoke")
@click.argument("key_id", type=int)
@localised
def api_keys_revoke(key_id: int):
    """Revoke a key: requests with it are refused from now on."""
    from hub.apikeys import ApiKeyError, revoke_api_key

    with bad_input_from(ApiKeyError):
        revoke_api_key(rt(), key_id, actor="cli")
    click.echo(_("API key %(id)d revoked", id=key_id))


residents_group = click.Group("residents", help="Residents.")


@residents_group.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@localised
def residents_import(csv_file: str):
    """Import residents from a UTF-8 CSV (name,email,phone,locale,area,topics[,channels,
    quiet_hours]). Any bad row: nothing is imported and every bad row is listed."""
    from hub.residents import ImportRejected, import_rows, read_csv

    settings = rt().settings
    with rt().session() as session:
        try:
            with open(csv_file, encoding="utf-8-sig", newline="") as stream:
                rows = read_csv(session, stream, settings.locales, settings.default_locale)
        except UnicodeDecodeError as exc:
            raise BadInput(
                _("%(file)s is not UTF-8 (byte %(at)d)", file=csv_file, at=exc.start)
            ) from None
        except ImportRejected as rejected:
            for error in rejected.errors:
                click.echo(str(error), err=True)
            raise BadInput(
                ngettext(
                    "%(num)d bad row in %(file)s; nothing was imported",
                    "%(num)d bad rows in %(file)s; nothing was imported",
                    len(rejected.errors),
                    file=csv_file,
                )
            ) from None
        with click.progressbar(length=len(rows), label=_("importing"), file=sys.stderr) as bar:
            imported = import_rows(session, rows, progress=bar.update)
    click.echo(ngettext("imported %(num)d resident", "imported %(num)d residents", imported))


# -- notices -----------------------------------------------------------------------------------

broadcast_group = click.Group("broadcast", help="Notices to residents.")


def _parse_at(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadInput(
            _("--at must be an ISO time like 2026-12-01T08:00+01:00, not %(value)s", value=value)
        ) from None
    if moment.tzinfo is None:
        from zoneinfo import ZoneInfo

        moment = moment.replace(tzinfo=ZoneInfo(rt().settings.timezone))
    return moment.astimezone(UTC).replace(tzinfo=None)


def notice_options(command):
    """The options that describe a notice, shared by `broadcast send` and `broadcast preview`;
    the command gets them as one NoticeDraft, `draft`."""
    options = [
        click.option("--topic", required=True, help="Topic slug (hub topics list)."),
        click.option(
            "--area", "areas", multiple=True, help="Area slug; repeat; none = whole city."
        ),
        click.option(
            "--priority",
            type=click.Choice(Priority.ALL),
            default=Priority.NORMAL,
            show_default=True,
        ),
        click.option(
            "--channels",
            "policy",
            type=click.Choice(ChannelPolicy.ALL),
            default=ChannelPolicy.PREFERRED,
            show_default=True,
        ),
        click.option(
            "--title", required=True, help="Title (in Slovenian, and other languages unless given)."
        ),
        click.option("--title-en", default="", help="Title in English, if it differs."),
        click.option("--body-sl", default="", help="Text in Slovenian (required)."),
        click.option("--body-en", default="", help="Text in English."),
        click.option(
            "--at", "at", default=None, help="Send later: ISO time (local time if no offset)."
        ),
        click.option(
            "--gsm7",
            is_flag=True,
            help="Write the SMS without č, š, ž (c, s, z): up to a third fewer segments.",
        ),
    ]

    @wraps(command)
    def with_draft(
        topic, areas, priority, policy, title, title_en, body_sl, body_en, at, gsm7, **rest
    ):
        from hub.broadcasts import NoticeDraft

        draft = NoticeDraft(
            title=title,
            topic=topic,
            areas=tuple(areas),
            priority=priority,
            channel_policy=policy,
            bodies={"sl": body_sl, "en": body_en},
            titles={"en": title_en} if title_en else {},
            scheduled_at=_parse_at(at),
            sms_transliterate=gsm7,
        )
        return command(draft=draft, **rest)

    for option in reversed(options):
        with_draft = option(with_draft)
    return with_draft


@broadcast_group.command("send")
@click.option("--wait", is_flag=True, help="Show progress until every delivery is final.")
@localised
@notice_options
def broadcast_send(draft, wait):
    """Plan and send a notice; each resident gets it in their own language."""
    from hub.broadcasts import BroadcastError, SavedNotQueued, send_notice

    try:
        with bad_input_from(BroadcastError):
            broadcast_id = send_notice(rt(), draft, actor="cli")
    except SavedNotQueued as exc:
        raise click.ClickException(
            _(
                "notice %(id)d is saved, but Redis cannot be reached: it starts by itself once "
                "Redis is back (do not send it again)",
                id=exc.broadcast_id,
            )
        ) from None
    if draft.scheduled_at:
        at = format_datetime(draft.scheduled_at.replace(tzinfo=UTC))
        click.echo(_("notice %(id)d queued for %(at)s", id=broadcast_id, at=at))
    else:
        click.echo(_("notice %(id)d queued", id=broadcast_id))
    if wait:
        _wait_for(broadcast_id)


@broadcast_group.command("preview")
@localised
@notice_options
def broadcast_preview(draft):
    """Show how the notice reads on each channel, and what its SMS costs; sends nothing."""
    from hub.broadcasts import BroadcastError
    from hub.preview import preview

    settings = rt().settings
    with bad_input_from(BroadcastError), rt().session() as session:
        items = preview(session, draft, settings.default_locale)
    for item in items:
        click.echo(f"== {item.locale} / {item.channel} ==")
        if item.channel == "push":  # the title is apart from the text only there
            click.echo(item.subject)
        click.echo(item.text.strip())
        if item.sms:
            click.echo(_sms_cost(item.sms))
            if item.sms_gsm7.segments < item.sms.segments:
                click.echo(
                    _(
                        "with --gsm7: %(cost)s, %(num)d fewer",
                        cost=_sms_cost(item.sms_gsm7),
                        num=item.sms.segments - item.sms_gsm7.segments,
                    )
                )
        click.echo("")


def _sms_cost(length) -> str:
    return ngettext(
        "%(encoding)s, %(units)d characters, %(num)d segment",
        "%(encoding)s, %(units)d characters, %(num)d segments",
        length.segments,
        encoding=length.encoding,
        units=length.units,
    )


@broadcast_group.command("status")
@click.argument("broadcast_id", type=int)
@localised
def broadcast_status(broadcast_id: int):
    """Counts by status and channel."""
    _print_summary(broadcast_id)


@broadcast_group.command("cancel")
@click.argument("broadcast_id", type=int)
@localised
def broadcast_cancel(broadcast_id: int):
    """Cancel what has not been sent yet."""
    from hub.broadcasts import BroadcastError, cancel_broadcast
    from hub.staff import audit

    with bad_input_from(BroadcastError), rt().session() as session:
        cancelled = cancel_broadcast(session, broadcast_id)
        audit(session, "cli", "broadcast.cancel", f"broadcast:{broadcast_id}")
    click.echo(
        ngettext(
            "cancelled %(num)d delivery of notice %(id)d",
            "cancelled %(num)d deliveries of notice %(id)d",
            cancelled,
            id=broadcast_id,
        )
    )


cap_group = click.Group("cap", help="OASIS CAP 1.2 alerts from other systems.")


@cap_group.command("import")
@click.argument("xml_file", type=click.File("rb"))
@localised
def cap_import(xml_file):
    """Store a CAP 1.2 alert as an emergency draft for an approver to start."""
    from hub.broadcasts import BroadcastError
    from hub.cap import MAX_ALERT_BYTES, CapError, import_alert

    data = xml_file.read(MAX_ALERT_BYTES + 1)
    with bad_input_from(CapError, BroadcastError), rt().session() as session:
        broadcast = import_alert(session, data, actor="cli", settings=rt().settings)
    click.echo(_("emergency draft %(id)d created: an approver starts it", id=broadcast.id))


def _load_progress(broadcast_id: int):
    from hub.broadcasts import deferred_count, progress

    with rt().session() as session:
        return progress(session, broadcast_id), deferred_count(session, broadcast_id)


def _print_fallbacks(broadcast_id: int) -> None:
    from hub.broadcasts import fallbacks

    with rt().session() as session:
        moves = fallbacks(session, broadcast_id)
    if moves:
        click.echo("  " + _("fell back to the next channel (first channel, reason):"))
    for move in moves:
        click.echo(f"    {move.from_channel} -> {move.to_channel}  {move.count:>6}  {move.reason}")


def _wait_for(broadcast_id: int) -> None:
    """A live bar until every delivery is final (or waits for quiet hours to end)."""
    from hub.delivery import finish_if_done

    current, deferred = _load_progress(broadcast_id)
    while current.status in ("scheduled", "planning") or (
        current.total == 0 and current.status not in ("done", "cancelled")
    ):
        time.sleep(0.5)
        current, deferred = _load_progress(broadcast_id)
    with click.progressbar(
        length=max(current.total, 1), label=_("sending"), file=sys.stderr, show_pos=True
    ) as bar:
        done = 0
        while True:
            current, deferred = _load_progress(broadcast_id)
            bar.length = max(current.total, 1)
            bar.update(current.final - done)
            done = current.final
            if current.open == 0 or current.open == deferred:
                break
            time.sleep(0.5)
    if current.open == 0:
        finish_if_done(rt(), broadcast_id)  # the last job may not have marked it done yet
    _print_summary(broadcast_id)


def _print_summary(broadcast_id: int) -> None:
    from hub.broadcasts import BroadcastError

    with bad_input_from(BroadcastError):
        current, deferred = _load_progress(broadcast_id)
    click.echo(
        ngettext(
            "notice %(id)d: %(status)s, %(num)d delivery",
            "notice %(id)d: %(status)s, %(num)d deliveries",
            current.total,
            id=broadcast_id,
            status=BROADCAST_STATUS_LABELS[current.status],
        )
    )
    order = list(DeliveryStatus.OPEN + DeliveryStatus.FINAL)
    for (channel, status), count in sorted(
        current.by_channel_status.items(), key=lambda item: (item[0][0], order.index(item[0][1]))
    ):
        click.echo(f"  {channel:<9} {DELIVERY_STATUS_LABELS[status]!s:<16} {count}")
    if deferred:
        click.echo(
            "  "
            + ngettext(
                "%(num)d delivery waits for quiet hours to end (or for a retry)",
                "%(num)d deliveries wait for quiet hours to end (or for a retry)",
                deferred,
            )
        )
    _print_fallbacks(broadcast_id)


# -- processes ---------------------------------------------------------------------------------


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@click.option("--no-sweeper", is_flag=True, help="Do not run the periodic sweeper here.")
@localised
def worker_command(burst: bool, no_sweeper: bool):
    """Work the queues: emergency, high, default, bulk (in that order)."""
    from hub.worker import run_worker

    run_worker(current_app._get_current_object(), burst=burst, sweeper=not no_sweeper)


@click.command("sweep")
@localised
def sweep_command():
    """Recover lost or stuck work once, and print what was done."""
    from hub.sweeper import sweep

    report = sweep(rt())
    parts = (
        ngettext(
            "released %(num)d stuck delivery", "released %(num)d stuck deliveries", report.released
        ),
        ngettext("re-queued %(num)d chunk", "re-queued %(num)d chunks", report.requeued_chunks),
        ngettext("started %(num)d notice", "started %(num)d notices", len(report.started)),
        ngettext("finished %(num)d notice", "finished %(num)d notices", len(report.finished)),
    )
    click.echo(", ".join(parts))


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Default: HUB_PORT or 5000."
)
@localised
def serve_command(host: str, port: int | None):
    """The web app, plus the sandbox stand-ins while providers have no credentials."""
    from hub.serve import serve

    serve(current_app._get_current_object(), host, port or rt().settings.port)


@click.command("mail-in")
@click.option("--host", default=None, help="Default: HUB_MAIL_IN_HOST or 127.0.0.1.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Default: HUB_MAIL_IN_PORT or 2526."
)
@localised
def mail_in_command(host: str | None, port: int | None):
    """Receive residents' e-mail replies and bounce reports (SMTP) until Ctrl-C."""
    import threading

    from hub.mailin import start_mail_in

    settings = rt().settings
    host, port = host or settings.mail_in_host, port or settings.mail_in_port
    controller = start_mail_in(rt(), host, port)
    click.echo(_("receiving e-mail replies on %(host)s:%(port)d", host=host, port=port))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


@click.group("telegram")
def telegram_group():
    """The Telegram bot's webhook."""


@telegram_group.command("set-webhook")
@localised
def telegram_set_webhook():
    """Register HUB_BASE_URL/webhooks/telegram, with the secret, and check it took."""
    from hub.telegram_admin import set_webhook

    _print_webhook(set_webhook(rt()))


@telegram_group.command("webhook-info")
@localised
def telegram_webhook_info():
    """Whether the webhook is really registered: URL, pending updates, last error."""
    from hub.telegram_admin import webhook_info

    _print_webhook(webhook_info(rt()))


def _print_webhook(info) -> None:
    click.echo(_("webhook: %(url)s", url=info.url or _("(none)")))
    click.echo(_("expected: %(url)s", url=info.expected_url))
    click.echo(
        ngettext("%(num)d update waiting", "%(num)d updates waiting", info.pending_update_count)
    )
    if info.last_error_message:
        click.echo(_("last error: %(error)s", error=info.last_error_message))
    if not info.registered:
        raise click.ClickException(_("the webhook is not registered at the expected URL"))


@click.command("demo")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16))
@click.option("--residents", default=300, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--port", type=click.IntRange(1, 65535), default=None)
@localised(needs_schema=False)
def demo_command(workers: int, residents: int, port: int | None):
    """Everything in one command: database, Redis, workers, stand-ins, web, demo data."""
    from hub.serve import run_demo

    run_demo(
        current_app._get_current_object(),
        workers=workers,
        residents=residents,
        port=port or rt().settings.port,
    )


COMMANDS = (
    db_group,
    seed_group,
    areas_group,
    topics_group,
    users_group,
    api_keys_group,
    residents_group,
    broadcast_group,
    cap_group,
    telegram_group,
    mail_in_command,
    worker_command,
    sweep_command,
    serve_command,
    demo_command,
    callbacks_group,
    templates_group,
)


def register(app) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)


def _create_app():
    from hub import create_app

    return create_app()


class HubGroup(FlaskGroup):
    """Turns the failures an operator can fix (a database or Redis that cannot be reached, a
    port in use, a bad setting) into one clear line instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        except sqlalchemy.exc.OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            raise click.ClickException(
                _("cannot use the database: %(reason)s", reason=reason)
            ) from None
        except redis.ConnectionError as exc:
            raise click.ClickException(_("cannot reach Redis: %(reason)s", reason=exc)) from None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise click.ClickException(
                _("a port is already in use (%(reason)s): choose another", reason=exc.strerror)
            ) from None


main = HubGroup(
    name="hub",
    create_app=_create_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    help="Mestni glas: the city's voice.",
)
for _command in COMMANDS:
    main.add_command(_command)

if __name__ == "__main__":
    main()
