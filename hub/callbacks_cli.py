"""`hub callbacks ...`: register, list and remove the city systems that hear back from the hub,
and see what became of the last callbacks sent to them."""

from __future__ import annotations

from functools import wraps

import click
from flask_babel import gettext as _
from flask_babel import ngettext

from hub.callbacks import (
    CallbackError,
    add_endpoint,
    iso,
    list_endpoints,
    parse_events,
    recent_attempts,
    remove_endpoint,
)

callbacks_group = click.Group("callbacks", help="Callbacks to other city systems.")


def localised(function):
    """hub.cli's `localised`, looked up when the command runs: hub.cli imports this module,
    so this module cannot import hub.cli while it loads."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        from hub.cli import localised as hub_localised

        return hub_localised(function)(*args, **kwargs)

    return wrapper


def rt():
    from hub.cli import rt as hub_rt

    return hub_rt()


def bad_input_from(*errors: type[Exception]):
    from hub.cli import bad_input_from as hub_bad_input_from

    return hub_bad_input_from(*errors)


@callbacks_group.command("add")
@click.option("--name", required=True, help="Which system this is, e.g. waste-collection.")
@click.option("--url", required=True, help="Where to POST: an https:// (or http://) URL.")
@click.option("--events", required=True, help="Comma-separated: delivery-status, inbound-message.")
@localised
def callbacks_add(name: str, url: str, events: str):
    """Register an endpoint; its signing secret is printed once."""
    runtime = rt()
    with bad_input_from(CallbackError), runtime.session() as session:
        endpoint, secret = add_endpoint(
            session,
            name=name,
            url=url,
            events=parse_events(events),
            actor="cli",
            secret_key=runtime.settings.secret_key,
        )
    click.echo(_("callback endpoint %(id)d added", id=endpoint.id), err=True)
    click.echo(_("signing secret (shown once, keep it secret):"), err=True)
    click.echo(secret)


@callbacks_group.command("list")
@localised
def callbacks_list():
    """One endpoint a line: id, name, URL, events, active."""
    with rt().session() as session:
        for endpoint in list_endpoints(session):
            active = _("active") if endpoint.active else _("removed")
            events = ",".join(endpoint.events)
            click.echo(f"{endpoint.id}\t{endpoint.name}\t{endpoint.url}\t{events}\t{active}")


@callbacks_group.command("remove")
@click.argument("endpoint_id", type=int)
@localised
def callbacks_remove(endpoint_id: int):
    """Stop sending to an endpoint; what still waits for it is dropped."""
    with bad_input_from(CallbackError), rt().session() as session:
        dropped = remove_endpoint(session, endpoint_id, actor="cli")
    click.echo(
        _("callback endpoint %(id)d removed", id=endpoint_id)
        + "; "
        + ngettext("%(num)d waiting event dropped", "%(num)d waiting events dropped", dropped)
    )


@callbacks_group.command("attempts")
@click.option("--endpoint", "endpoint_id", type=int, default=None, help="Only this endpoint.")
@click.option("--failed", is_flag=True, help="Only attempts that got no 2xx.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@localised
def callbacks_attempts(endpoint_id: int | None, failed: bool, limit: int):
    """The last attempts, newest first: time, endpoint, event, delivery id, HTTP status,
    milliseconds, and the error if any."""
    with rt().session() as session:
        attempts = recent_attempts(
            session, endpoint_id=endpoint_id, failed_only=failed, limit=limit
        )
    for a in attempts:
        fields = (
            iso(a.at),
            f"{a.endpoint_id}:{a.endpoint_name}",
            a.event,
            a.public_id,
            str(a.status_code or "-"),
            f"{a.duration_ms}ms",
            a.error or "",
        )
        click.echo("\t".join(fields))
