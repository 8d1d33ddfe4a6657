"""The ``motionguard`` console command, assembled in one place.

The scoring core's commands come from :func:`detectors.cli.create_app`; this module
adds the streaming ones (broker, worker, event tools) and owns the entry point.
"""

from __future__ import annotations

import typer

__all__ = ["create_app", "main"]


def create_app() -> typer.Typer:
    """Every ``motionguard`` command."""
    from detectors.cli import create_app as create_core_app
    from streamer import events_cli
    from streamer.kafka_cli import kafka_app
    from streamer.review.cli import review_app

    app = create_core_app()
    events_cli.register(app)
    app.add_typer(
        kafka_app, name="kafka", help="Run a local Apache Kafka (KRaft: one broker or a cluster) for development."
    )
    app.add_typer(review_app, name="review")
    return app


def main() -> None:
    create_app()()
