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

from detectors.sampling import HW_DECODERS, SEEK_MODES, SamplingConfig
from streamer.schemas import Topics

PREFIX = "MOTIONGUARD_"


def uploads_group(app_id: str) -> str:
    """The uploads consumer's group for an app id (the Faust app's group is the app id itself)."""
    return f"{app_id}-uploads"


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def setting_name(name: str) -> str:
    """The environment variable of a setting (``ssl_cafile`` -> ``MOTIONGUARD_SSL_CAFILE``), for messages."""
    return PREFIX + name.upper()


class KafkaSettingsError(ValueError):
    """A Kafka connection setting names a file that cannot be used; the message names the setting."""


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
    """Prefer ``sasl_password_file``: a value here sits in the environment of the process."""
    sasl_password_file: str = ""
    """File holding the SASL password (a mounted Secret); read at each connection, trailing newline dropped."""
    ssl_cafile: str = ""
    """PEM file of the CA(s) that signed the brokers' certificates; empty = the system's CAs."""
    ssl_certfile: str = ""
    """PEM client certificate for mTLS (``SSL``; with ``SASL_SSL`` it is presented too)."""
    ssl_keyfile: str = ""
    """PEM private key of ``ssl_certfile`` (unencrypted); empty = the key is inside ``ssl_certfile``."""
    ssl_check_hostname: bool = True
    """Check that the broker's certificate names the host connected to; turn off only for a broker
    whose certificate cannot name its address, knowing that it lets anyone with a certificate from
    the same CA pose as the broker."""
    app_id: str = "motionguard"
    """Faust application id: the label join's consumer group; the uploads are consumed as ``<app_id>-uploads``."""
    topic_uploads: str = "video-uploads"
    topic_verdicts: str = "video-verdicts"
    topic_dead_letters: str = "video-uploads-dlq"
    topic_labels: str = "moderator-labels"
    topic_partitions: int = 4
    """Partitions of the topics the worker creates; also caps useful replicas."""
    topic_replication_factor: int = 1
    topic_min_insync_replicas: int = 1
    """``min.insync.replicas`` of the topics the worker creates: 2 with 3 replicas, so that an
    acknowledged verdict survives the loss of a broker (the producers use ``acks=all``)."""
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
    ``keyframe_tolerance``, else the frame within it cheapest to decode; decodes a fraction of the frames), ``accurate``
    (the frame on screen) or ``keyframe`` (the keyframe at or before)."""
    keyframe_tolerance: float = 0.5
    """For ``nearest_keyframe``: how far a keyframe may be from its wanted time, as a fraction of the
    spacing between wanted times (0 to 0.5; 0.5 = anywhere in the frame's own share of the video)."""
    hw_decode: str = "none"
    """``cuda`` decodes on the GPU's NVDEC where the host can (checked at start, else the CPU, with a warning)."""

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
    ffmpeg_binary: str = "ffmpeg"
    """The ffmpeg that decodes: a name on PATH or a path, e.g. the lean static build that
    scripts/build-ffmpeg.sh makes (a fraction of the start-up cost of a distribution's ffmpeg)."""
    ffprobe_binary: str = "ffprobe"
    """The ffprobe that reads a file's streams and packet index (from the same build as ffmpeg_binary)."""

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
        if self.hw_decode not in HW_DECODERS:
            raise ValueError(f"hw_decode must be one of {', '.join(HW_DECODERS)}; got {self.hw_decode!r}")
        if not 0.0 <= self.keyframe_tolerance <= 0.5:
            raise ValueError("keyframe_tolerance must be from 0 to 0.5")
        if self.label_join_days < 1:
            raise ValueError("label_join_days must be >= 1")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"{setting_name('security_protocol')}={self.security_protocol!r} is not one of "
                f"{', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(
                f"{setting_name('sasl_mechanism')}={self.sasl_mechanism!r} is not one of {', '.join(SASL_MECHANISMS)}"
            )
        if self.sasl_password and self.sasl_password_file:
            raise ValueError(f"set {setting_name('sasl_password')} or {setting_name('sasl_password_file')}, not both")
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError(f"{setting_name('ssl_keyfile')} needs {setting_name('ssl_certfile')}")
        if self.topic_partitions < 1:
            raise ValueError("topic_partitions must be >= 1")
        if not 1 <= self.topic_min_insync_replicas <= self.topic_replication_factor:
            raise ValueError("topic_min_insync_replicas must be from 1 to topic_replication_factor")
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
        return uploads_group(self.app_id)

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

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    def sasl_secret(self) -> str:
        """The SASL password: ``sasl_password_file``'s content (read now), else ``sasl_password``."""
        if not self.sasl_password_file:
            return self.sasl_password
        try:
            text = Path(self.sasl_password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
            raise KafkaSettingsError(
                f"{setting_name('sasl_password_file')}={self.sasl_password_file}: cannot read the password ({reason})"
            ) from e
        password = text.rstrip("\r\n")
        if not password:
            raise KafkaSettingsError(f"{setting_name('sasl_password_file')}={self.sasl_password_file} is empty")
        return password

    def _sasl_options(self) -> dict[str, Any]:
        # aiokafka and kafka-python both take the SCRAM credentials as sasl_plain_*.
        if not self.uses_sasl:
            return {}
        return {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_secret(),
        }

    def kafka_python_options(self) -> dict[str, Any]:
        """Connection options for kafka-python clients (the CLI tools, topic creation)."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
            **self._sasl_options(),
        }

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every Kafka client uses (``None`` without TLS).

        Verifies the broker's certificate against ``ssl_cafile`` (or the system's CAs)
        and, unless ``ssl_check_hostname`` is off, that it names the host; presents
        ``ssl_certfile`` when set.  A file that cannot be used raises
        :class:`KafkaSettingsError` naming its setting.
        """
        if not self.uses_tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile or None)
        except (OSError, ssl.SSLError) as e:
            raise _file_error("ssl_cafile", self.ssl_cafile, "not a readable PEM file of CA certificates", e) from e
        context.check_hostname = self.ssl_check_hostname
        if self.ssl_certfile:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile or None)
            except (OSError, ssl.SSLError) as e:
                names = "ssl_certfile" if not self.ssl_keyfile else "ssl_certfile/ssl_keyfile"
                what = f"{self.ssl_certfile}" + (f", {self.ssl_keyfile}" if self.ssl_keyfile else "")
                raise _file_error(names, what, "not a readable PEM certificate and matching private key", e) from e
        return context

    def aiokafka_options(self) -> dict[str, Any]:
        """Connection options for aiokafka clients (the uploads consumer, anything not made by Faust)."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
            **self._sasl_options(),
        }

    def roots(self) -> list[Path]:
        return [Path(root).resolve() for root in self.allowed_roots]

    def with_overrides(self, **changes: Any) -> WorkerSettings:
        """Apply command-line values that were actually given (``None`` = not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def sampling_config(self, **overrides: Any) -> SamplingConfig:
        """How the worker samples frames (the review console overrides ``frames``)."""
        options: dict[str, Any] = {
            "max_file_bytes": self.max_file_bytes,
            "max_duration_seconds": self.max_duration_seconds,
            "timeout_seconds": self.ffmpeg_timeout_seconds,
            "decoder_threads": self.decoder_threads,
            "skip_non_reference": self.skip_non_reference,
            "seek": self.frame_seek,
            "keyframe_tolerance": self.keyframe_tolerance,
            "hw_decode": self.hw_decode,
            "ffmpeg_binary": self.ffmpeg_binary,
            "ffprobe_binary": self.ffprobe_binary,
        }
        return SamplingConfig(**{**options, **overrides})

    def public_dict(self) -> dict[str, Any]:
        """Settings for logs and ``/status``, with the secrets blanked."""
        result = {f.name: getattr(self, f.name) for f in fields(self)}
        if result["sasl_password"]:
            result["sasl_password"] = "***"
        return result


def _file_error(names: str, value: str, what: str, error: Exception) -> KafkaSettingsError:
    settings = "/".join(setting_name(name) for name in names.split("/"))
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or type(error).__name__
    return KafkaSettingsError(f"{settings}={value}: {what} ({reason})")


def _convert(raw: str, kind: Any, name: str, prefix: str = PREFIX) -> Any:
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
        raise ValueError(f"environment variable {prefix}{name.upper()}={raw!r} is not a valid {kind}") from e


def settings_from_env(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Build settings from ``MOTIONGUARD_*`` variables; unknown ones are an error."""
    env = os.environ if env is None else env
    hints = get_type_hints(WorkerSettings)
    names = {f.name for f in fields(WorkerSettings)}
    known_other = {"MOTIONGUARD_LOG_LEVEL", "MOTIONGUARD_CACHE_DIR"}
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(PREFIX) or key in known_other or key.startswith(REVIEW_PREFIX):
            continue
        name = key[len(PREFIX) :].lower()
        if name not in names:
            raise ValueError(f"unknown setting {key}; known: {', '.join(sorted(PREFIX + n.upper() for n in names))}")
        values[name] = _convert(raw, hints[name], name)
    return WorkerSettings(**values)


# --- the moderator review console (``motionguard review``) ------------------------------------

REVIEW_PREFIX = PREFIX + "REVIEW_"


@dataclass(frozen=True)
class ReviewSettings:
    """The review console's own settings, ``MOTIONGUARD_REVIEW_<NAME>``.

    The Kafka connection, the topic names and the URI guards are the worker's
    (:class:`WorkerSettings`, the ``MOTIONGUARD_*`` variables), so the console
    reads the same topics and the same files the worker does.
    """

    host: str = "0.0.0.0"
    port: int = 8080
    metrics_port: int = 9108
    """Port of ``/metrics``, ``/healthz`` and ``/ready`` (no sign-in, no video data); 0 = off."""
    users_file: str = ""
    """Local users (``name:role:argon2-hash`` lines, made by ``motionguard review add-user``)."""
    session_secret: str = ""
    """Key that signs session cookies (at least 32 characters); required."""
    session_hours: float = 12.0
    cookie_secure: bool = True
    """Send the session cookie over HTTPS only; turn off only for a local http demo."""
    proxy_user_header: str = ""
    """Trust this request header as the signed-in user (e.g. X-Forwarded-User) ..."""
    trusted_proxies: tuple[str, ...] = ()
    """... only on connections from these addresses or networks (the authenticating proxy)."""
    proxy_groups_header: str = "X-Forwarded-Groups"
    """Comma-separated groups of a proxy-authenticated user."""
    proxy_moderator_group: str = "motionguard-moderators"
    """Proxy users in this group are moderators; everyone else is a viewer."""
    login_rate_limit: str = "5/minute"
    """Sign-in attempts allowed per user name and per client address (``limits`` notation)."""
    claim_seconds: float = 300.0
    """How long opening an item holds it for one moderator."""
    audit_fraction: float = 0.01
    """Share of ai_generated and real verdicts sampled for audit (by a hash of the video id)."""
    thumbnail_pixels: int = 160

    def __post_init__(self) -> None:
        if not 0.0 <= self.audit_fraction <= 1.0:
            raise ValueError("review audit_fraction must be from 0 to 1")
        if self.claim_seconds <= 0:
            raise ValueError("review claim_seconds must be > 0")
        if self.session_hours <= 0:
            raise ValueError("review session_hours must be > 0")
        if self.proxy_user_header and not self.trusted_proxies:
            raise ValueError("review proxy_user_header needs trusted_proxies (the proxy's addresses)")
        if not 16 <= self.thumbnail_pixels <= 512:
            raise ValueError("review thumbnail_pixels must be from 16 to 512")


def review_settings_from_env(env: Mapping[str, str] | None = None) -> ReviewSettings:
    """Build the console's settings from ``MOTIONGUARD_REVIEW_*`` variables; unknown ones are an error."""
    env = os.environ if env is None else env
    hints = get_type_hints(ReviewSettings)
    names = {f.name for f in fields(ReviewSettings)}
    values: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(REVIEW_PREFIX):
            continue
        name = key[len(REVIEW_PREFIX) :].lower()
        if name not in names:
            known = ", ".join(sorted(REVIEW_PREFIX + n.upper() for n in names))
            raise ValueError(f"unknown setting {key}; known: {known}")
        values[name] = _convert(raw, hints[name], name, REVIEW_PREFIX)
    return ReviewSettings(**values)
