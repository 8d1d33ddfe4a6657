"""``motionguard kafka start|stop|status``: a real local Kafka broker for development.

:mod:`streamer.kafka_commands` (the ``kafka`` group, with the runtime's ``acls``)
loads these commands from ``kafka_app`` when one is called.  ``$KAFKA_HOME``, when
set, names an unpacked Apache Kafka distribution to run instead of the jars
downloaded with Maven into ``~/.cache/motionguard/kafka/<version>``.

``start --secure`` runs it with TLS, SCRAM users, mTLS and least-privilege ACLs
(docs/kafka-security.md); ``motionguard kafka acls`` prints that ACL set for any app id
and topics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from motionguard_dev.kafka_local import (
    DEFAULT_KAFKA_VERSION,
    LocalKafka,
    LocalKafkaCluster,
    LocalKafkaConfig,
    LocalKafkaError,
    default_data_dir,
)
from motionguard_dev.kafka_secure import TlsMaterialError
from streamer.kafka_acls import least_privilege_acls
from streamer.schemas import Topics

kafka_app = typer.Typer(
    help=(
        "Run a real Apache Kafka (KRaft mode) on 127.0.0.1 for development, tests and the demo: "
        "one broker, or a cluster with --brokers 3. Needs Java; the jars come from Maven Central "
        "on first use, or from $KAFKA_HOME."
    ),
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        help="Broker data, config, log and pid file.",
        file_okay=False,
        dir_okay=True,
    ),
]


DEFAULT_DATA_DIR = default_data_dir()


def _kafka_home_from_env() -> Path | None:
    value = os.environ.get("KAFKA_HOME", "").strip()
    return Path(value) if value else None


def _print_status(status: dict[str, Any]) -> None:
    for key, value in status.items():
        typer.echo(f"{key}: {json.dumps(value)}")


def _existing(data_dir: Path) -> LocalKafka | LocalKafkaCluster:
    """The broker or cluster that ``data_dir`` holds."""
    if LocalKafkaCluster.exists(data_dir):
        return LocalKafkaCluster(LocalKafkaConfig(data_dir=data_dir))
    return LocalKafka(LocalKafkaConfig(data_dir=data_dir))


@kafka_app.command()
def start(
    port: Annotated[int, typer.Option("--port", "-p", help="PLAINTEXT listener port.")] = 9092,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    controller_port: Annotated[
        int | None, typer.Option("--controller-port", help="KRaft controller port [default: port+1 or free].")
    ] = None,
    version: Annotated[str, typer.Option("--kafka-version", help="Apache Kafka version to download.")] = (
        DEFAULT_KAFKA_VERSION
    ),
    partitions: Annotated[int, typer.Option("--partitions", help="Default partitions of new topics.")] = 4,
    wait: Annotated[float, typer.Option("--wait", help="Seconds to wait for the broker to be ready.")] = 60.0,
    brokers: Annotated[
        int,
        typer.Option(
            "--brokers",
            min=1,
            max=9,
            help="Nodes (each broker and controller); from 3 on, topics get 3 replicas and min.insync.replicas 2.",
        ),
    ] = 1,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help=(
                "TLS only: SASL_SSL (SCRAM-SHA-512/256) on --port, mTLS on --ssl-port, users admin, worker, "
                "submitter and moderation, ACLs for --app-id and the default topics (created here)."
            ),
        ),
    ] = False,
    ssl_port: Annotated[
        int | None, typer.Option("--ssl-port", help="mTLS listener of --secure [default: port+2 or free].")
    ] = None,
    app_id: Annotated[str, typer.Option("--app-id", help="With --secure: the worker's app id for its ACLs.")] = (
        "motionguard"
    ),
) -> None:
    """Start the broker (or the --brokers cluster) in the background (a no-op when it already runs)."""
    config = LocalKafkaConfig(
        port=port,
        controller_port=controller_port,
        data_dir=data_dir,
        kafka_version=version,
        kafka_home=_kafka_home_from_env(),
        num_partitions=partitions,
        secure=secure,
        ssl_port=ssl_port,
    )
    kafka: LocalKafka | LocalKafkaCluster
    try:
        if brokers > 1 or LocalKafkaCluster.exists(data_dir):
            kafka = LocalKafkaCluster(config, brokers=brokers)
            kafka.start(wait_seconds=max(wait, 120.0))
            first = kafka.nodes[0]
        else:
            kafka = first = LocalKafka(config)
            kafka.start(wait_seconds=wait)
        if secure:
            topics = Topics()
            first.create_topics(topics.all(), partitions)
            first.create_acls(least_privilege_acls(app_id, topics))
    except (LocalKafkaError, TlsMaterialError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"Kafka is ready on {kafka.bootstrap_servers}")
    _print_status(kafka.status())
    if secure:
        _print_client_settings(first)


def _print_client_settings(kafka: LocalKafka) -> None:
    """The settings of each principal: file names only, never a password."""
    typer.echo("\n# Client settings (passwords are in the *.password files, mode 0600):")
    for user in ("worker", "submitter", "moderation"):
        for mtls in (False, True):
            typer.echo(f"# {user} over {'mTLS' if mtls else 'SASL_SSL/SCRAM-SHA-512'}:")
            typer.echo(" ".join(f"{key}={value}" for key, value in kafka.client_env(user, mtls=mtls).items()))


@kafka_app.command()
def stop(
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before SIGTERM becomes SIGKILL.")] = 30.0,
) -> None:
    """Stop the broker (or every node of the cluster) that runs on DATA_DIR (SIGTERM, then SIGKILL)."""
    kafka = _existing(data_dir)
    try:
        stopped = kafka.stop(timeout_seconds=timeout)
    except LocalKafkaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo("Kafka stopped" if stopped else f"Kafka was not running (data dir {kafka.data_dir})")


@kafka_app.command()
def status(data_dir: DataDirOption = DEFAULT_DATA_DIR) -> None:
    """Show the broker's (or each node's) state; exit code 1 when it (or any node) is not running."""
    info = _existing(data_dir).status()
    _print_status(info)
    if not info["running"]:
        raise typer.Exit(code=1)


if __name__ == "__main__":  # pragma: no cover - `python -m motionguard_dev.kafka_cli ...`
    kafka_app()
