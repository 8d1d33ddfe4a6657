"""``motionguard worker | submit | verdicts | label``: the streaming commands.

``submit``, ``verdicts`` and ``label`` are small kafka-python tools for people
(and the demo) to publish upload events and moderator labels and to read
verdicts.  ``worker`` runs the Faust worker.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from detectors.cli_options import EXIT_USAGE, print_error, warn_untrained
from streamer.schemas import ModeratorLabel, UploadEvent, format_time, utc_now
from streamer.settings import KafkaSettingsError, WorkerSettings, settings_from_env

logger = logging.getLogger(__name__)
stderr = Console(stderr=True)

BrokerOption = Annotated[
    str | None,
    typer.Option("--broker", help="Bootstrap servers (kafka://host:port); default MOTIONGUARD_BROKER."),
]


def _settings(broker: str | None) -> WorkerSettings:
    try:
        settings = settings_from_env()
    except ValueError as e:
        stderr.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(3) from e
    return settings.with_overrides(broker=broker)


def _kafka_failed(settings: WorkerSettings, error: Exception, topic: str, action: str) -> NoReturn:
    """Print why Kafka failed us (asking the broker when the client could not say) and exit 3."""
    from kafka.errors import TopicAuthorizationFailedError

    from streamer.kafka_access import KafkaAccessError, check_kafka_access, describe_principal

    if isinstance(error, KafkaSettingsError):
        message = str(error)
    elif isinstance(error, TopicAuthorizationFailedError):
        message = f"Kafka refused: {describe_principal(settings)} is not authorised to {action} topic {topic!r}"
    else:
        try:
            check_kafka_access(settings, (topic,))
            message = f"Kafka at {', '.join(settings.bootstrap_servers)} failed to {action} {topic!r}: {error}"
        except KafkaAccessError as access:
            message = str(access)
    stderr.print("[bold red]error:[/]", escape(message), soft_wrap=True)
    raise typer.Exit(3) from error


def _producer(settings: WorkerSettings, topic: str) -> Any:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(acks="all", retries=5, linger_ms=5, **settings.kafka_python_options())
    except (KafkaError, KafkaSettingsError) as e:
        _kafka_failed(settings, e, topic, "write")


def _deliver(settings: WorkerSettings, producer: Any, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Send and wait for every record's acknowledgement; a refusal is an error, never a silent loss."""
    from kafka.errors import KafkaError

    try:
        futures = [producer.send(topic, key=key.encode(), value=value) for key, value in records]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    except KafkaError as e:
        producer.close(timeout=5)
        _kafka_failed(settings, e, topic, "write")
    producer.close()


def _as_uri(item: str) -> str:
    if "://" in item:
        return item
    return Path(item).resolve().as_uri()


def submit(
    items: Annotated[list[str], typer.Argument(help="Video files or URIs (file://, http(s)://).")],
    broker: BrokerOption = None,
    policy: Annotated[str | None, typer.Option(help="Policy name for these uploads.")] = None,
    video_id_prefix: Annotated[str, typer.Option(help="Prefix for generated video ids.")] = "upload",
    raw: Annotated[
        bool, typer.Option("--raw", help="Send each ITEM as the event value as-is (to test bad events).")
    ] = False,
) -> None:
    """Publish upload events (one per file or URI) to the uploads topic."""
    settings = _settings(broker)
    topic = settings.topic_uploads
    producer = _producer(settings, topic)
    records = []
    for item in items:
        key = f"{video_id_prefix}-{uuid.uuid4().hex[:12]}"
        if raw:
            value = item.encode()
        else:
            value = UploadEvent(video_id=key, uri=_as_uri(item), uploaded_at=utc_now(), policy=policy).to_json()
        records.append((key, value))
    _deliver(settings, producer, topic, records)
    for key, value in records:
        typer.echo(json.dumps({"video_id": key, "topic": topic, "value": value.decode(errors="replace")}))


def label(
    video_id: Annotated[str, typer.Argument(help="The video the moderator decided on.")],
    decision: Annotated[str, typer.Argument(help="ai_generated or real.")],
    moderator: Annotated[str | None, typer.Option(help="Who decided.")] = None,
    broker: BrokerOption = None,
) -> None:
    """Publish a moderator's decision; the worker joins it with its verdict for accuracy metrics."""
    if decision not in ("ai_generated", "real"):
        stderr.print("[bold red]error:[/] decision must be ai_generated or real")
        raise typer.Exit(3)
    settings = _settings(broker)
    event = ModeratorLabel(video_id=video_id, label=decision, moderator=moderator)  # type: ignore[arg-type]
    producer = _producer(settings, settings.topic_labels)
    _deliver(settings, producer, settings.topic_labels, [(video_id, event.to_json())])
    typer.echo(json.dumps({"video_id": video_id, "label": decision, "at": format_time(utc_now())}))


def verdicts(
    broker: BrokerOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new verdicts.")] = False,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest verdict.")] = True,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many verdicts.")] = None,
    idle_seconds: Annotated[float, typer.Option(help="Without --follow, stop after this long without news.")] = 5.0,
    dead_letters: Annotated[bool, typer.Option("--dead-letters", help="Read the dead-letter topic instead.")] = False,
    table: Annotated[
        bool, typer.Option("--table", help="One short readable line per verdict instead of JSON.")
    ] = False,
) -> None:
    """Print verdicts (one JSON object per line) from the verdicts topic."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from streamer.kafka_access import KafkaAccessError, check_kafka_access

    settings = _settings(broker)
    topic = settings.topic_dead_letters if dead_letters else settings.topic_verdicts
    try:
        # kafka-python's consumer only logs a refused topic and then reads nothing: ask first.
        check_kafka_access(settings, (topic,))
    except KafkaAccessError as e:
        stderr.print("[bold red]error:[/]", escape(str(e)), soft_wrap=True)
        raise typer.Exit(3) from e
    try:
        consumer = KafkaConsumer(
            topic,
            group_id=None,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=False,
            consumer_timeout_ms=int(idle_seconds * 1000) if not follow else 1000,
            **settings.kafka_python_options(),
        )
    except (KafkaError, KafkaSettingsError) as e:
        _kafka_failed(settings, e, topic, "read")
    seen = 0
    try:
        while True:
            for message in consumer:
                text = message.value.decode(errors="replace")
                sys.stdout.write((_table_line(text, dead_letters) if table else text) + "\n")
                sys.stdout.flush()
                seen += 1
                if count is not None and seen >= count:
                    return
            if not follow:
                return
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    except KafkaError as e:
        _kafka_failed(settings, e, topic, "read")
    finally:
        consumer.close()


def _table_line(text: str, dead_letter: bool) -> str:
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return text
    if dead_letter:
        return f"{record.get('video_id') or '?':<24} {record.get('reason', ''):<18} {record.get('message', '')}"
    error = record.get("error") or {}
    score = record.get("score")
    detail = f"{error.get('code')}: {error.get('message')}" if error else ", ".join(record.get("warnings") or [])
    provenance = record.get("provenance")
    if isinstance(provenance, dict) and provenance.get("present"):
        from detectors.cli import provenance_summary

        by = " (decided by provenance)" if record.get("decided_by") == "provenance" else ""
        detail = "; ".join(part for part in (f"C2PA {provenance_summary(provenance)}{by}", detail) if part)
    return (
        f"{record.get('video_id') or '?':<24} {record.get('verdict', ''):<13} "
        f"{'' if score is None else format(score, '.3f'):>6} {record.get('frames_scored', 0):>4}  {detail}"
    )


def worker(
    broker: BrokerOption = None,
    bundle: Annotated[Path | None, typer.Option("--bundle", "-b", help="Model bundle directory.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Preset or open_clip architecture.")] = None,
    pretrained: Annotated[str | None, typer.Option(help="Pretrained tag, or 'none' for random weights.")] = None,
    weights: Annotated[Path | None, typer.Option(help="FT-CLIP .safetensors weights.")] = None,
    web_port: Annotated[int | None, typer.Option(help="Port for /metrics, /healthz and /ready.")] = None,
    allowed_root: Annotated[
        list[Path] | None,
        typer.Option("--allowed-root", help="Directory file:// URIs may read (repeatable)."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
) -> None:
    """Run the streaming worker: upload events in, verdicts out, metrics on the web port."""
    from detectors.errors import MotionGuardError
    from detectors.loading import DetectorOptions, build_detector
    from detectors.provenance import ProvenanceConfig
    from streamer.worker import MotionGuardWorker, run_worker

    settings = _settings(broker).with_overrides(
        bundle=str(bundle) if bundle else None,
        model=model,
        pretrained=pretrained,
        weights=str(weights) if weights else None,
        web_port=web_port,
        device=device,
        allowed_roots=tuple(str(p) for p in allowed_root) if allowed_root else None,
    )
    try:
        detector = build_detector(
            DetectorOptions(
                bundle=settings.bundle or None,
                model=settings.model,
                pretrained=settings.pretrained or None,
                weights=settings.weights or None,
                device=settings.device,  # type: ignore[arg-type]
                batch_size=settings.model_batch_frames,
                frames=settings.frames or None,
                provenance=ProvenanceConfig(
                    trust_anchor_paths=settings.trust_anchors,
                    allowed_list_paths=settings.trust_allowed_list,
                    max_manifest_bytes=settings.max_manifest_bytes,
                ),
                capture_claim_clears=settings.capture_claim_clears or None,
                sampling=settings.sampling_config(),
            )
        )
    except (MotionGuardError, ValueError) as e:
        print_error(e, stderr)
        raise typer.Exit(EXIT_USAGE) from e
    if detector.model.untrained:
        warn_untrained()
    logger.info("worker settings: %s", settings.public_dict())
    _wait_for_kafka(settings)
    run_worker(MotionGuardWorker(settings, detector), log_level=logging.getLevelName(logging.getLogger().level))


def _wait_for_kafka(settings: WorkerSettings) -> None:
    """Stay alive and not ready (``/ready`` 503, the reason in its body) until Kafka accepts the worker."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from streamer.kafka_access import wait_for_kafka_access
    from streamer.metrics import WorkerMetrics

    registry = CollectorRegistry()
    WorkerMetrics(registry, settings.accuracy_window)  # all zero, ready 0: the dashboards show a worker waiting
    wait_for_kafka_access(settings, lambda: (generate_latest(registry), CONTENT_TYPE_LATEST))


def register(app: typer.Typer) -> None:
    app.command()(worker)
    app.command()(submit)
    app.command()(verdicts)
    app.command()(label)
