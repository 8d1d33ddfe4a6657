"""``motionguard kafka``: ``acls`` for operators, ``start|stop|status`` for development.

``acls`` prints the least-privilege ACLs of :mod:`streamer.kafka_acls` and ships with
the runtime.  The local broker's commands live in the development package
(:mod:`motionguard_dev.kafka_cli`), which the runtime never imports up front: the
group names them, and imports that module only to run one of them or to list them in
``motionguard kafka --help``.  So ``motionguard worker`` never loads the broker
launcher, and where ``motionguard_dev`` is not installed (the worker image) those
commands fail with a clear error while ``acls`` keeps working.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command

from streamer.kafka_acls import Principals, acl_table, kafka_acls_commands, least_privilege_acls
from streamer.schemas import Topics

__all__ = ["DEV_COMMANDS", "DEV_MODULE", "DEV_PACKAGE", "kafka_app"]

DEV_PACKAGE = "motionguard_dev"
DEV_MODULE = f"{DEV_PACKAGE}.kafka_cli"
DEV_COMMANDS = ("start", "stop", "status")
"""The commands of :data:`DEV_MODULE`'s ``kafka_app``, in the order ``--help`` lists them."""


def _missing_dev_command(name: str) -> TyperCommand:
    """A stand-in for ``kafka <name>`` that says what is missing, whatever its arguments."""
    stand_in = typer.Typer()

    @stand_in.command(
        name,
        help=f"(needs the development package {DEV_PACKAGE})",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def fail() -> None:
        typer.echo(
            f"error: motionguard kafka {name} needs the development package {DEV_PACKAGE}, which this "
            "installation lacks (install MotionGuard from a source checkout: pip install -e .). "
            "`motionguard kafka acls` works without it.",
            err=True,
        )
        raise typer.Exit(code=1)

    command = get_command(stand_in)
    assert isinstance(command, TyperCommand)
    return command


def _dev_command(name: str) -> TyperCommand:
    """``kafka <name>`` from the development package, imported now."""
    try:
        module = importlib.import_module(DEV_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name not in {DEV_PACKAGE, DEV_MODULE}:
            raise  # the package is there but broken: that is a bug to see, not a missing install
        return _missing_dev_command(name)
    group = get_command(module.kafka_app)
    command = group.commands.get(name) if isinstance(group, TyperGroup) else None
    if not isinstance(command, TyperCommand):
        raise RuntimeError(f"{DEV_MODULE}.kafka_app has no command {name!r}")
    return command


class KafkaGroup(TyperGroup):
    """The ``kafka`` group: its own commands, plus :data:`DEV_COMMANDS` loaded on use.

    Typer's click is vendored in a private module, so the context and the command
    base type have no public name here: they are ``Any``.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        return [*DEV_COMMANDS, *(name for name in super().list_commands(ctx) if name not in DEV_COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in DEV_COMMANDS:
            return _dev_command(cmd_name)
        return super().get_command(ctx, cmd_name)


kafka_app = typer.Typer(
    cls=KafkaGroup,
    help=(
        "Kafka ACLs for operators, and a local Apache Kafka for development.\n\n"
        "acls prints the least-privilege ACLs of MotionGuard's principals; start|stop|status run a real "
        f"Apache Kafka in KRaft mode (one broker or a cluster) and come from the development package {DEV_PACKAGE}."
    ),
    no_args_is_help=True,
)


@kafka_app.command()
def acls(
    app_id: Annotated[str, typer.Option("--app-id", help="The worker's app id (MOTIONGUARD_APP_ID).")] = "motionguard",
    uploads: Annotated[str, typer.Option("--uploads", help="Uploads topic.")] = Topics.uploads,
    verdicts: Annotated[str, typer.Option("--verdicts", help="Verdicts topic.")] = Topics.verdicts,
    dead_letters: Annotated[str, typer.Option("--dead-letters", help="Dead-letter topic.")] = Topics.dead_letters,
    labels: Annotated[str, typer.Option("--labels", help="Moderator labels topic.")] = Topics.labels,
    worker: Annotated[str, typer.Option("--worker-principal")] = Principals.worker,
    submitter: Annotated[str, typer.Option("--submitter-principal")] = Principals.submitter,
    moderation: Annotated[str, typer.Option("--moderation-principal")] = Principals.moderation,
    commands: Annotated[
        bool, typer.Option("--commands", help="Print kafka-acls.sh commands instead of a table.")
    ] = False,
    bootstrap: Annotated[str, typer.Option("--bootstrap-server", help="For --commands.")] = "BROKER:9093",
    command_config: Annotated[
        str, typer.Option("--command-config", help="For --commands: the admin's client properties file.")
    ] = "admin.properties",
) -> None:
    """Print the least-privilege ACLs of the worker, the submitter and the moderation side."""
    try:
        rules = least_privilege_acls(
            app_id,
            Topics(uploads=uploads, verdicts=verdicts, dead_letters=dead_letters, labels=labels),
            Principals(worker=worker, submitter=submitter, moderation=moderation),
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    if commands:
        typer.echo("\n".join(kafka_acls_commands(rules, bootstrap, command_config)))
    else:
        typer.echo(acl_table(rules))
