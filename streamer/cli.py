"""The ``motionguard`` console command.

The scoring core's commands come from :mod:`detectors.cli`; this module adds
the streaming ones (broker, worker, event tools) and owns the entry point.
"""

from __future__ import annotations

from detectors.cli import app

__all__ = ["app", "main"]


def _register_streaming_commands() -> None:
    from streamer.kafka_cli import kafka_app

    app.add_typer(kafka_app, name="kafka", help="Run a local single-node Apache Kafka (KRaft) for development.")


def main() -> None:
    _register_streaming_commands()
    app()
