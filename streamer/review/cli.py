"""``motionguard review`` (serve the console) and ``motionguard review add-user``."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from streamer.settings import ReviewSettings, WorkerSettings, review_settings_from_env, settings_from_env

logger = logging.getLogger(__name__)
stderr = Console(stderr=True)

review_app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=False,
    help="The moderator review console: the needs-review queue, evidence, decisions to moderator-labels.",
)


def _settings() -> tuple[ReviewSettings, WorkerSettings]:
    try:
        return review_settings_from_env(), settings_from_env()
    except ValueError as e:
        stderr.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(3) from e


@review_app.callback()
def review(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to listen on; default MOTIONGUARD_REVIEW_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the console; default MOTIONGUARD_REVIEW_PORT.")] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Port of /metrics, /healthz, /ready (0 = off); default MOTIONGUARD_REVIEW_METRICS_PORT."),
    ] = None,
    users_file: Annotated[Path | None, typer.Option(help="Users file; default MOTIONGUARD_REVIEW_USERS_FILE.")] = None,
) -> None:
    """Serve the review console (reads the verdicts and labels topics, writes decisions to the labels topic)."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import replace

    import anyio
    from prometheus_client import CollectorRegistry

    from streamer.review.app import build_console, serve

    settings, worker_settings = _settings()
    changes: dict[str, Any] = {
        "host": host,
        "port": port,
        "metrics_port": metrics_port,
        "users_file": str(users_file) if users_file else None,
    }
    try:
        settings = replace(settings, **{k: v for k, v in changes.items() if v is not None})
        console = build_console(settings, worker_settings, CollectorRegistry())
    except ValueError as e:
        stderr.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(3) from e
    logger.info(
        "review console on http://%s:%d (metrics on %d), topics %s and %s at %s",
        settings.host, settings.port, settings.metrics_port, worker_settings.topic_verdicts,
        worker_settings.topic_labels, ", ".join(worker_settings.bootstrap_servers),
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, console)


@review_app.command("add-user")
def add_user_command(
    name: Annotated[str, typer.Argument(help="User name (letters, digits, '.', '_', '@', '-').")],
    role: Annotated[str, typer.Option(help="moderator (decides) or viewer (reads).")] = "moderator",
    users_file: Annotated[Path | None, typer.Option(help="Users file; default MOTIONGUARD_REVIEW_USERS_FILE.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin (scripts).")
    ] = False,
) -> None:
    """Add a user to the users file, or change an existing user's role and password (argon2id hash)."""
    from streamer.review.auth import UsersFileError, add_user

    settings, _ = _settings()
    path = users_file or (Path(settings.users_file) if settings.users_file else None)
    if path is None:
        stderr.print("[bold red]error:[/] give --users-file or set MOTIONGUARD_REVIEW_USERS_FILE")
        raise typer.Exit(3)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        add_user(path, name, role, password)
    except UsersFileError as e:
        stderr.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(3) from e
    typer.echo(f"{name} ({role}) saved in {path}")
