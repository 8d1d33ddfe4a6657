"""Worker settings: the one place that reads environment variables.

Every setting is ``MOTIONGUARD_<NAME>`` in the environment (the Helm chart's
ConfigMap and Secret set them); command-line options override them.  Lists are
comma-separated.  Nothing below the entry point reads the environment.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from detectors.sampling import SEEK_MODES
from streamer.schemas import Topics

PREFIX = "MOTIONGUARD_"


@dataclass(frozen=True)
class WorkerSettings:
    # --- Kafka -------------------------------------------------------------------
    broker: str = "kafka://127.0.0.1:9092"
    """Bootstrap servers, ``kafka://host:port[;kafka://host2:port]``."""
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str = "PLAIN"
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol)."""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    app_id: str = "motionguard"
    """Faust application id: the label join's consumer group; the uploads are consumed as ``<app_id>-uploads``."""
    topic_uploads: str = "video-uploads"
    topic_verdicts: str = "video-verdicts"
    topic_dead_letters: str = "video-uploads-dlq"
    topic_labels: str = "moderator-labels"
    topic_partitions: int = 4
    """Partitions of the topics the worker creates; also caps useful replicas."""
    topic_replication_factor: int = 1
    create_topics: bool = True
    """Create missing topics at start-up (needs the broker's CreateTopics permission)."""
    data_dir: str = "/tmp/motionguard-worker"
    """Faust's local state directory (tables are rebuilt from their changelogs)."""

    # --- model -------------------------------------------------------------------
    bundle: str = ""
    """Model bundle directory; empty means model + pretrained + frame-to-prompt."""
    model: str = "clip-vit-b-32"
    pretrained: str = ""
    """open_clip pretrained tag, ``none`` for random weights; empty = the preset's tag."""
    weights: str = ""
    device: str = "auto"
    frames: int = 0
    """Frames sampled per video; 0 = the bundle's (or 16)."""
    model_batch_frames: int = 64

    # --- provenance (C2PA Content Credentials) ------------------------------------
    trust_anchors: tuple[str, ...] = ()
    """PEM files of C2PA trust anchors; a signer chaining to one is ``trusted``. None by default."""
    trust_allowed_list: tuple[str, ...] = ()
    """PEM files of end-entity signing certificates trusted as they are."""
    capture_claim_clears: bool = False
    """Let a trusted, intact camera-capture claim lower a content flag to ``real`` (default policy)."""
    max_manifest_bytes: int = 8 * 1024**2
    """Larger C2PA manifest stores are not read (state ``unreadable``)."""

    # --- batching and concurrency -----------------------------------------------
    batch_max_events: int = 8
    """At most this many upload events are in flight (taken from Kafka, not yet committed: what a
    killed worker's successor processes again) and share one model batch ..."""
    batch_window_ms: int = 50
    """... gathered for at most this long."""
    decode_workers: int = 2
    """Threads running ffmpeg (each ffmpeg is its own process)."""
    decoder_threads: int = 2
    """Decoding threads inside each ffmpeg; ``decode_workers`` x this is about the cores decoding uses."""
    skip_non_reference: bool = False
    """Decode only H.264/H.265 reference frames when sampling (about a third less decoding with B-frames;
    each sampled frame may then be one to three frames later than its exact time)."""
    frame_seek: str = "nearest_keyframe"
    """Which frame each wanted time gets: ``nearest_keyframe`` (the nearest keyframe within
    ``keyframe_tolerance``, else the exact frame; decodes a fraction of the frames), ``accurate``
    (the frame on screen) or ``keyframe`` (the keyframe at or before)."""
    keyframe_tolerance: float = 0.5
    """For ``nearest_keyframe``: how far a keyframe may be from its wanted time, as a fraction of the
    spacing between wanted times (0 to 0.5; 0.5 = anywhere in the frame's own share of the video)."""

    # --- sources (URIs) ----------------------------------------------------------
    allowed_roots: tuple[str, ...] = ()
    """Directories ``file://`` URIs may point into (after resolving symlinks)."""
    allowed_hosts: tuple[str, ...] = ()
    """Hosts ``http(s)://`` URIs may name; empty means any public host."""
    allow_private_addresses: bool = False
    """Allow http(s) to private, loopback and link-local addresses (tests, on-prem)."""
    allowed_private_addresses: tuple[str, ...] = ()
    """Specific private addresses or networks allowed (e.g. 127.0.0.1/32)."""
    max_download_bytes: int = 2 * 1024**3
    download_timeout_seconds: float = 60.0
    fetch_retries: int = 3
    retry_backoff_seconds: float = 0.5
    download_dir: str = "/tmp/motionguard-downloads"

    # --- decoding limits -------------------------------------------------------------
    max_file_bytes: int = 4 * 1024**3
    max_duration_seconds: float = 4 * 3600.0
    ffmpeg_timeout_seconds: float = 120.0

    # --- web, metrics ------------------------------------------------------------
    web_host: str = "0.0.0.0"
    web_port: int = 6066
    accuracy_window: int = 500
    """Moderator labels in the rolling accuracy ratio."""
    label_join_days: int = 30
    """How long a verdict waits for its moderator label (and a label for its verdict); older ones are forgotten."""
    worker_name: str = field(default_factory=lambda: os.environ.get("HOSTNAME", "motionguard-worker"))

    def __post_init__(self) -> None:
        if self.batch_max_events < 1:
            raise ValueError("batch_max_events must be >= 1")
        if self.batch_window_ms < 0:
            raise ValueError("batch_window_ms must be >= 0")
        if self.decode_workers < 1:
            raise ValueError("decode_workers must be >= 1")
        if self.decoder_threads < 1:
            raise ValueError("decoder_threads must be >= 1")
        if self.frame_seek not in SEEK_MODES:
            raise ValueError(f"frame_seek must be one of {', '.join(SEEK_MODES)}; got {self.frame_seek!r}")
        if not 0.0 <= self.keyframe_tolerance <= 0.5:
            raise ValueError("keyframe_tolerance must be from 0 to 0.5")
        if self.label_join_days < 1:
            raise ValueError("label_join_days must be >= 1")
        if self.security_protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"security_protocol {self.security_protocol!r} is not one Kafka knows")
        if self.topic_partitions < 1:
            raise ValueError("topic_partitions must be >= 1")
        if self.max_manifest_bytes < 1:
            raise ValueError("max_manifest_bytes must be >= 1")

    @property
    def topics(self) -> Topics:
        return Topics(
            uploads=self.topic_uploads,
            verdicts=self.topic_verdicts,
            dead_letters=self.topic_dead_letters,
            labels=self.topic_labels,
        )

    @property
    def uploads_group(self) -> str:
        """The uploads consumer's group (the Helm chart's KEDA trigger names it too)."""
        return f"{self.app_id}-uploads"

    @property
    def bootstrap_servers(self) -> list[str]:
        """``kafka://a:1;kafka://b:2`` -> ``["a:1", "b:2"]`` for kafka-python tools."""
        servers = []
        for part in self.broker.replace(",", ";").split(";"):
            part = part.strip()
            if part:
                servers.append(part.split("://", 1)[-1])
        return servers

    @property
    def faust_broker(self) -> str:
        return ";".join(f"kafka://{server}" for server in self.bootstrap_servers)

    def kafka_python_options(self) -> dict[str, Any]:
        """Connection options for kafka-python clients (the CLI tools, topic creation)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.ssl_cafile:
            options["ssl_cafile"] = self.ssl_cafile
        return options

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every Kafka client of the worker uses (``None`` without TLS)."""
        if self.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        return ssl.create_default_context(cafile=self.ssl_cafile or None)

    def aiokafka_options(self) -> dict[str, Any]:
        """Connection options for aiokafka clients (the uploads consumer, anything not made by Faust)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
        }
        if self.security_protocol.startswith("SASL"):
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options

    def roots(self) -> list[Path]:
        return [Path(root).resolve() for root in self.allowed_roots]

    def with_overrides(self, **changes: Any) -> WorkerSettings:
        """Apply command-line values that were actually given (``None`` = not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def public_dict(self) -> dict[str, Any]:
        """Settings for logs and ``/status``, with the secrets blanked."""
        result = {f.name: getattr(self, f.name) for f in fields(self)}
        if result["sasl_password"]:
            result["sasl_password"] = "***"
        return result


def _convert(raw: str, kind: Any, name: str) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind == tuple[str, ...]:
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        return raw
    except ValueError as e:
        raise ValueError(f"environment variable {PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from e


def settings_from_env(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Build settings from ``MOTIONGUARD_*`` variables; unknown ones are an error."""
    env = os.environ if env is None else env
    hints = get_type_hints(WorkerSettings)
    names = {f.name for f in fields(WorkerSettings)}
    known_other = {"MOTIONGUARD_LOG_LEVEL", "MOTIONGUARD_CACHE_DIR"}
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(PREFIX) or key in known_other:
            continue
        name = key[len(PREFIX) :].lower()
        if name not in names:
            raise ValueError(f"unknown setting {key}; known: {', '.join(sorted(PREFIX + n.upper() for n in names))}")
        values[name] = _convert(raw, hints[name], name)
    return WorkerSettings(**values)
