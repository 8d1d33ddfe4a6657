"""The ``motionguard`` console command, assembled in one place.

The scoring core's commands come from :func:`detectors.cli.create_app`; this module
adds the streaming ones (worker, event tools, review console, the ``kafka`` group)
and owns the entry point.  The ``kafka`` group's broker launcher comes from the
development package ``motionguard_dev`` only when it is called
(:mod:`streamer.kafka_commands`).
"""

from __future__ import annotations

import typer

from detectors.cli_options import share_cores_with_decoders

__all__ = ["create_app", "main"]


def create_app() -> typer.Typer:
    """Every ``motionguard`` command."""
    from detectors.cli import create_app as create_core_app
    from streamer import events_cli
    from streamer.kafka_commands import kafka_app
    from streamer.review.cli import review_app

    app = create_core_app()
    events_cli.register(app)
    app.add_typer(kafka_app, name="kafka")
    app.add_typer(review_app, name="review")
    return app


def main() -> None:
    share_cores_with_decoders()  # before anything imports torch
    create_app()()
