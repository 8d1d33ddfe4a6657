"""The ``motionguard`` console command.

The scoring core's commands come from :mod:`detectors.cli`; this module adds
the streaming ones (broker, worker, event tools) and owns the entry point.
"""

from __future__ import annotations

from detectors.cli import app

__all__ = ["app", "main"]

_registered = False


def register_commands() -> None:
    """Add the streaming commands to the core's app (once)."""
    global _registered
    if _registered:
        return
    from streamer import events_cli
    from streamer.kafka_cli import kafka_app
    from streamer.review.cli import review_app

    events_cli.register(app)
    app.add_typer(kafka_app, name="kafka", help="Run a local single-node Apache Kafka (KRaft) for development.")
    app.add_typer(review_app, name="review")
    _registered = True


def main() -> None:
    register_commands()
    app()
