"""`hub templates create|list|update`: the Notify-style templates /v2 sends with (a staff page
for them comes with the staff console)."""

from __future__ import annotations

from functools import wraps

import click
from flask_babel import gettext as _

from hub.notify.templates import (
    TEMPLATE_TYPES,
    TemplateError,
    create_template,
    list_templates,
    update_template,
)

templates_group = click.Group("templates", help="Templates of the Notify-compatible API (/v2).")
ACTOR = "cli"


def _in_session(function):
    """Run like hub.cli's other commands (in the operator's language, a bad argument exits 2
    with one line), with a database session. hub.cli is looked up when the command runs: it
    imports this module."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        from hub import cli

        def run():
            with cli.bad_input_from(TemplateError), cli.rt().session() as session:
                return function(session, *args, **kwargs)

        return cli.localised(run)()

    return wrapper


def _body(body: str | None, body_file) -> str | None:
    if body is not None and body_file is not None:
        raise TemplateError(_("give --body or --body-file, not both"))
    return body_file.read() if body_file is not None else body


body_options = [
    click.option("--body", help="The text, with ((placeholders)) and ((name??optional text))."),
    click.option(
        "--body-file", type=click.File(encoding="utf-8"), help="Read the text from a file."
    ),
]


def _with_body(command):
    for option in reversed(body_options):
        command = option(command)
    return command


@templates_group.command("create")
@click.option("--name", required=True)
@click.option("--type", "template_type", required=True, type=click.Choice(TEMPLATE_TYPES))
@click.option("--subject", help="An e-mail's subject (may have placeholders).")
@_with_body
@_in_session
def templates_create(session, name: str, template_type: str, subject, body, body_file):
    """Create a template; prints its id and version."""
    text = _body(body, body_file)
    if text is None:
        raise TemplateError(_("give the text with --body or --body-file"))
    template = create_template(
        session, name=name, template_type=template_type, body=text, subject=subject, actor=ACTOR
    )
    click.echo(f"{template.id}\t{template.version}")


@templates_group.command("list")
@click.option("--type", "template_type", type=click.Choice(TEMPLATE_TYPES))
@_in_session
def templates_list(session, template_type: str | None):
    """One template a line: id, version, type, name."""
    for template in list_templates(session, template_type):
        click.echo(f"{template.id}\t{template.version}\t{template.template_type}\t{template.name}")


@templates_group.command("update")
@click.argument("template_id")
@click.option("--name")
@click.option("--subject")
@_with_body
@_in_session
def templates_update(session, template_id: str, name, subject, body, body_file):
    """Make a new version; what is not given stays as it was. Prints the id and new version."""
    template = update_template(
        session,
        template_id,
        actor=ACTOR,
        name=name,
        subject=subject,
        body=_body(body, body_file),
    )
    click.echo(f"{template.id}\t{template.version}")
