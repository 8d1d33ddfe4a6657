"""Run a real, single-node Apache Kafka broker (KRaft mode) on 127.0.0.1.

Used for development, the test-suite and the demo.  There is no mock here: the
broker is the official ``kafka.Kafka`` server from the Apache jars, started as a
detached ``java`` process in combined ``broker,controller`` mode.

Where things live
-----------------
* **Jars** - ``~/.cache/motionguard/kafka/<version>/libs``.  On first use a tiny
  ``pom.xml`` depending on ``org.apache.kafka:kafka_2.13:<version>`` (plus a
  logging backend) is written next to it and Maven copies the runtime closure
  into ``libs/`` (about 46 MB for 3.9.1).  The download is guarded by a lock
  file and lands through an atomic rename, so concurrent first uses are safe.
  Alternatively :attr:`LocalKafkaConfig.kafka_home` points at an unpacked Kafka
  distribution and its ``libs/`` is used as is (no Maven needed).
* **Data** - by default ``~/.cache/motionguard/kafka-data`` (outside the repo,
  so it survives ``git clean`` and is the same from every working directory,
  which lets ``stop``/``status`` from another process find the broker).  Inside
  it: ``server.properties``, ``log4j.properties``, ``kraft-logs/`` (the topic
  data and KRaft metadata), ``broker.log`` (stdout/stderr of the JVM; the
  previous run's is kept as ``broker.log.1``), ``kafka.pid`` and
  ``broker.json`` (port, version... of the running broker).

Storage is formatted once; later starts on the same ``data_dir`` keep every
topic and committed offset.

Example::

    with LocalKafka(LocalKafkaConfig(port=find_free_port(), data_dir=tmp)) as kafka:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)

With ``secure=True`` the broker speaks no plaintext: a ``SASL_SSL`` listener
(SCRAM-SHA-512/256) on ``port``, an ``SSL`` listener requiring client
certificates (mTLS) on ``ssl_port``, a TLS controller listener, and the
StandardAuthorizer with ``allow.everyone.if.no.acl.found=false``.  Its
certificate names ``localhost`` only, so clients connect to ``localhost``.  The
CA, keys and passwords live in ``<data_dir>/security``
(:mod:`motionguard_dev.kafka_secure`); :meth:`LocalKafka.client_env` gives the
``MOTIONGUARD_*`` settings of a principal.

Only POSIX systems are supported (process groups, ``fcntl`` locks).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

with warnings.catch_warnings():
    # kafka-python 3.0.12 calls the deprecated importlib.resources.read_text while
    # importing; under ``-W error`` (our pytest config) that would break the import.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        UserScramCredentialUpsertion,
    )
    from kafka.admin import ResourceType as AclResourceType
    from kafka.errors import TopicAlreadyExistsError

from motionguard_dev.kafka_secure import CLIENT_USERS, SCRAM_MECHANISMS, SecurityFiles, secure_listener_properties
from streamer.kafka_acls import AclRule

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "KafkaProvisionError",
    "KafkaStartError",
    "LocalKafka",
    "LocalKafkaCluster",
    "LocalKafkaConfig",
    "LocalKafkaError",
    "default_cache_dir",
    "default_data_dir",
    "find_free_port",
]

DEFAULT_KAFKA_VERSION = "3.9.1"
HOST = "127.0.0.1"
#: The name clients of the secure broker connect to: the only name in its certificate.
SECURE_HOST = "localhost"
NODE_ID = 1

#: Logging backends put next to the Kafka jars (the Maven artifact has none:
#: the binary distribution ships them separately).  3.x logs through SLF4J 1.7
#: -> reload4j, exactly like the official 3.9 tarball.
_LOGGING_DEPS_3X: tuple[tuple[str, str, str], ...] = (
    ("org.slf4j", "slf4j-reload4j", "1.7.36"),
    ("ch.qos.reload4j", "reload4j", "1.2.25"),
)
#: Kafka 4.x moved to log4j2 behind SLF4J.
_LOGGING_DEPS_4X: tuple[tuple[str, str, str], ...] = (
    ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3"),
    ("org.apache.logging.log4j", "log4j-core", "2.24.3"),
)
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_COMPLETE_MARKER = ".complete"
_PID_FILE = "kafka.pid"
_STATE_FILE = "broker.json"
_LOG_FILE = "broker.log"
_LOG_TAIL_LINES = 40
_JAVA_HINT = "Kafka needs a Java 11+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)."


class LocalKafkaError(RuntimeError):
    """Base class for everything :mod:`motionguard_dev.kafka_local` raises on purpose."""


class KafkaProvisionError(LocalKafkaError):
    """The Kafka jars (or Java / Maven to get and run them) cannot be had."""


class KafkaStartError(LocalKafkaError):
    """The broker did not start, or did not become ready in time."""


def default_data_dir() -> Path:
    """``~/.cache/motionguard/kafka-data``."""
    return Path.home() / ".cache" / "motionguard" / "kafka-data"


def default_cache_dir(kafka_version: str) -> Path:
    """``~/.cache/motionguard/kafka/<version>`` (holds ``pom.xml`` and ``libs/``)."""
    return Path.home() / ".cache" / "motionguard" / "kafka" / kafka_version


def find_free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int, host: str = HOST) -> bool:
    """True when a server could listen on ``port`` now.

    SO_REUSEADDR, as the broker's own listener uses, so that connections of a
    just-stopped broker lingering in TIME_WAIT do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class LocalKafkaConfig:
    """How to run the local broker.  Every field has a usable default.

    ``controller_port``: ``None`` means ``port + 1`` when that is free, else any
    free port (only the broker itself talks to it).  ``cache_dir``: ``None``
    means :func:`default_cache_dir` of ``kafka_version``.  ``kafka_home``: an
    unpacked Kafka distribution whose ``libs/`` is used instead of downloading;
    the CLI fills it from ``$KAFKA_HOME`` (this module never reads the
    environment).  ``extra_properties`` are appended to ``server.properties``
    last, so they override the defaults written here.

    One node of a cluster (see :class:`LocalKafkaCluster`): ``node_id``, the
    ``quorum`` of every controller as ``(node_id, controller_port)`` pairs (empty:
    this node alone), the ``cluster_id`` its storage is formatted with (``None``:
    a new one), and the ``replication_factor`` of new and internal topics
    (``min.insync.replicas`` becomes 2 from three replicas on).
    """

    port: int = 9092
    controller_port: int | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    kafka_version: str = DEFAULT_KAFKA_VERSION
    cache_dir: Path | None = None
    kafka_home: Path | None = None
    num_partitions: int = 4
    extra_properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    heap: str = "512m"
    jvm_options: tuple[str, ...] = ()
    java: str = "java"
    mvn: str = "mvn"
    mvn_timeout_seconds: float = 900.0
    node_id: int = NODE_ID
    quorum: tuple[tuple[int, int], ...] = ()
    cluster_id: str | None = None
    replication_factor: int = 1
    secure: bool = False
    ssl_port: int | None = None
    """The mTLS listener of a secure broker; ``None`` = ``port + 2`` when free, else any free port."""
    security_dir: Path | None = None
    """Where a secure broker's CA, keys and passwords live; ``None`` = ``<data_dir>/security``
    (the nodes of a cluster share the cluster's)."""

    def __post_init__(self) -> None:
        # Normalise so that equal configs compare equal and the JVM never sees
        # a relative path whose meaning depends on its working directory.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser().absolute())
        if self.kafka_home is not None:
            object.__setattr__(self, "kafka_home", Path(self.kafka_home).expanduser().absolute())
        if self.security_dir is not None:
            object.__setattr__(self, "security_dir", Path(self.security_dir).expanduser().absolute())
        object.__setattr__(self, "extra_properties", MappingProxyType(dict(self.extra_properties)))
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, got {self.port}")
        if self.controller_port is not None and not 0 < self.controller_port < 65536:
            raise ValueError(f"controller_port must be 1..65535, got {self.controller_port}")
        if self.controller_port == self.port:
            raise ValueError("controller_port must differ from port")
        if self.ssl_port is not None and self.ssl_port in (self.port, self.controller_port):
            raise ValueError("ssl_port must differ from port and controller_port")
        if self.num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {self.num_partitions}")
        if self.quorum:
            voters = dict(self.quorum)
            if voters.get(self.node_id) is None or voters[self.node_id] != self.controller_port:
                raise ValueError("a node of a quorum must be in it, with its own controller_port")
        if not 1 <= self.replication_factor <= max(1, len(self.quorum)):
            raise ValueError(f"replication_factor must be 1..{max(1, len(self.quorum))}, got {self.replication_factor}")

    @property
    def min_insync_replicas(self) -> int:
        return 2 if self.replication_factor >= 3 else 1

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir(self.kafka_version)

    @property
    def advertised_host(self) -> str:
        return SECURE_HOST if self.secure else HOST

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.advertised_host}:{self.port}"


# --------------------------------------------------------------------------- jars


def _maven_major(version: str) -> int:
    match = re.match(r"(\d+)\.", version)
    if match is None:
        raise ValueError(f"not a Kafka version: {version!r}")
    return int(match.group(1))


def _render_pom(kafka_version: str) -> str:
    logging_deps = _LOGGING_DEPS_4X if _maven_major(kafka_version) >= 4 else _LOGGING_DEPS_3X
    deps = [("org.apache.kafka", "kafka_2.13", kafka_version), *logging_deps]
    rendered = "\n".join(
        "    <dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(
            *dep
        )
        for dep in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by motionguard_dev/kafka_local.py: the runtime jars of an Apache Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.motionguard</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>{kafka_version}</version>
  <packaging>pom</packaging>
  <dependencies>
{rendered}
  </dependencies>
</project>
"""


def _jar_version(libs: Path) -> str | None:
    """The Kafka version of the ``kafka_2.xx-<version>.jar`` in ``libs``."""
    pattern = re.compile(r"^kafka_2\.\d+-(\d+\.\d+\.\d+[^-]*)\.jar$")
    for jar in sorted(libs.glob("kafka_2.*.jar")):
        match = pattern.match(jar.name)
        if match is not None:
            return match.group(1)
    return None


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _tail_file(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return _tail(data, lines) or f"(log {path} is empty)"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _which(program: str, what: str, hint: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise KafkaProvisionError(f"{what} ({program!r}) was not found on PATH. {hint}")
    return found


def ensure_kafka_libs(config: LocalKafkaConfig) -> Path:
    """Directory holding the broker's jars, downloading them on first use.

    With ``kafka_home`` set, that installation's ``libs/`` (it must contain a
    ``kafka_2.*.jar``).  Otherwise ``<cache_dir>/libs``, filled by Maven once.
    Raises :class:`KafkaProvisionError` with a message that says what to do.
    """
    if config.kafka_home is not None:
        libs = config.kafka_home / "libs"
        if not libs.is_dir() or _jar_version(libs) is None:
            raise KafkaProvisionError(
                f"kafka_home={config.kafka_home} is not a Kafka installation: no "
                f"kafka_2.*-<version>.jar in {libs}. Point KAFKA_HOME at an unpacked Apache "
                "Kafka distribution, or unset it to have the jars downloaded with Maven."
            )
        return libs

    cache = config.resolved_cache_dir
    libs = cache / "libs"
    if (cache / _COMPLETE_MARKER).is_file() and libs.is_dir():
        return libs
    with _file_lock(cache / ".lock"):
        # Someone else may have finished while we waited for the lock.
        if (cache / _COMPLETE_MARKER).is_file() and libs.is_dir():
            return libs
        _download_libs(config, cache, libs)
    return libs


def _download_libs(config: LocalKafkaConfig, cache: Path, libs: Path) -> None:
    mvn = _which(
        config.mvn,
        "Maven",
        "It is needed once to download the Apache Kafka jars from Maven Central "
        "(e.g. `apt-get install maven`), or set KAFKA_HOME to an unpacked Kafka distribution.",
    )
    _which(config.java, "Java", _JAVA_HINT)
    pom = cache / "pom.xml"
    pom.write_text(_render_pom(config.kafka_version), encoding="utf-8")
    for leftover in cache.glob("libs.tmp-*"):  # from a download that was killed (we hold the lock)
        shutil.rmtree(leftover, ignore_errors=True)
    staging = cache / f"libs.tmp-{os.getpid()}"
    command = [
        mvn,
        "-B",
        "-q",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        f"{_DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    logger.info("Downloading Apache Kafka %s jars with Maven into %s", config.kafka_version, libs)
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            cwd=cache,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=config.mvn_timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaProvisionError(
            f"Maven did not finish downloading Kafka {config.kafka_version} within "
            f"{config.mvn_timeout_seconds:.0f}s: {' '.join(command)}"
        ) from exc
    output = (result.stdout or "") + (result.stderr or "")
    if result.returncode != 0 or not staging.is_dir() or _jar_version(staging) is None:
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaProvisionError(
            f"Could not download Apache Kafka {config.kafka_version} from Maven Central "
            f"(exit {result.returncode}): {' '.join(command)}\n--- Maven output (tail) ---\n"
            f"{_tail(output) or '(none)'}"
        )
    if libs.exists():  # a stale, incomplete copy from an interrupted earlier run
        shutil.rmtree(libs)
    os.replace(staging, libs)
    (cache / _COMPLETE_MARKER).write_text(f"{config.kafka_version}\n", encoding="utf-8")
    logger.info("Kafka jars ready in %s (%.1fs)", libs, time.monotonic() - started)


# ----------------------------------------------------------------------- process


def _new_cluster_id() -> str:
    """A Kafka ``Uuid`` string, as ``kafka-storage.sh random-uuid`` would make."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):  # Kafka refuses ids that look like options
            return text


def _read_cmdline(pid: int) -> str | None:
    """The command line of ``pid``; ``None`` when there is no such live process."""
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            # Field 3, after the parenthesised command name, is the state.
            if stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}:
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            return None
    try:  # no /proc (macOS): ask ps
        result = subprocess.run(
            ["ps", "-o", "stat=,command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    line = result.stdout.strip()
    if result.returncode != 0 or not line or line.startswith("Z"):
        return None
    return line.split(None, 1)[1] if " " in line else ""


_LOG4J_PROPERTIES = """\
# Written by motionguard_dev/kafka_local.py - everything goes to stdout (-> broker.log).
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaConfig=WARN
log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN
"""

_LOG4J2_PROPERTIES = """\
# Written by motionguard_dev/kafka_local.py (used by Kafka 4.x, which logs with log4j2).
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
"""


class LocalKafka:
    """One single-node KRaft broker whose files all live in ``config.data_dir``.

    ``start``/``stop``/``status`` work across processes: the broker runs
    detached and is found again through ``<data_dir>/kafka.pid``.
    """

    def __init__(self, config: LocalKafkaConfig | None = None) -> None:
        self.config = config if config is not None else LocalKafkaConfig()
        self._process: subprocess.Popen[bytes] | None = None

    # -- paths ---------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def log_dir(self) -> Path:
        """Kafka's ``log.dirs``: the topic data and the KRaft metadata log."""
        return self.data_dir / "kraft-logs"

    @property
    def log_file(self) -> Path:
        """The broker's own log (JVM stdout and stderr)."""
        return self.data_dir / _LOG_FILE

    @property
    def pid_file(self) -> Path:
        return self.data_dir / _PID_FILE

    @property
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def security(self) -> SecurityFiles:
        """The CA, keystore, client certificates and passwords of a secure broker."""
        return SecurityFiles(self.config.security_dir or self.data_dir / "security")

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` of the running broker (of the config when none runs)."""
        state = self._read_state()
        if state is not None and self._live_pid() is not None:
            return str(state["bootstrap"])
        return self.config.bootstrap_servers

    # -- state ---------------------------------------------------------------

    def _read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.data_dir / _STATE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _live_pid(self) -> int | None:
        """The pid of *our* broker for this data_dir, if it is running."""
        if self._process is not None and self._process.poll() is not None:
            self._process = None  # reaped: it exited
        try:
            pid = int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        if self._process is not None and self._process.pid == pid:
            return pid  # our own child, still running (maybe not yet exec'd into java)
        cmdline = _read_cmdline(pid)
        if cmdline is None:
            return None
        # Guard against pid reuse: it must be the Kafka JVM started for this data_dir.
        if "kafka.Kafka" not in cmdline or str(self.server_properties) not in cmdline:
            return None
        return pid

    def is_running(self) -> bool:
        return self._live_pid() is not None

    def status(self) -> dict[str, Any]:
        """``running``, ``pid``, ``bootstrap``, ``port``, ``data_dir``, ``version``... ."""
        pid = self._live_pid()
        state = self._read_state() if pid is not None else None
        return {
            "running": pid is not None,
            "pid": pid,
            "bootstrap": str(state["bootstrap"]) if state else None,
            "port": int(state["port"]) if state else None,
            "controller_port": int(state["controller_port"]) if state else None,
            "data_dir": str(self.data_dir),
            "version": str(state["version"]) if state else self.config.kafka_version,
            "libs": str(state["libs"]) if state else None,
            "log_file": str(self.log_file),
            "secure": bool(state.get("secure")) if state else self.config.secure,
            "ssl_port": state.get("ssl_port") if state else None,
        }

    # -- start ---------------------------------------------------------------

    def start(self, wait_seconds: float = 60, *, wait: bool = True) -> LocalKafka:
        """Start the broker (formatting storage on first use) and wait until ready.

        ``wait=False`` returns once the JVM is launched (a node of a cluster is
        ready only when a majority of its quorum runs: start them all, then wait).

        A no-op when our broker is already running on this ``data_dir`` and
        port.  Raises :class:`KafkaProvisionError` when the jars or Java cannot
        be had and :class:`KafkaStartError` (with the tail of the broker log)
        when the broker fails or is not ready within ``wait_seconds``.
        """
        config = self.config
        running = self._live_pid()
        if running is not None:
            state = self._read_state() or {}
            if state.get("port") == config.port:
                logger.info("Kafka already running (pid %d) on %s", running, self.bootstrap_servers)
                self.wait_until_ready(wait_seconds)
                return self
            raise KafkaStartError(
                f"A Kafka broker (pid {running}) already runs on data_dir {self.data_dir} "
                f"with port {state.get('port')}; stop it first to use port {config.port}."
            )

        java = _which(config.java, "Java", _JAVA_HINT)
        libs = ensure_kafka_libs(config)
        version = _jar_version(libs) or config.kafka_version

        if not _port_is_free(config.port):
            raise KafkaStartError(
                f"Port {HOST}:{config.port} is already in use by another process; choose another port (e.g. `--port`)."
            )
        controller_port = self._pick_controller_port()
        ssl_port = self._pick_ssl_port(controller_port) if config.secure else None

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if config.secure:
            self.security.ensure(hostnames=(SECURE_HOST,), node_ids=(config.node_id,))
        self._write_configs(config.node_id, controller_port, ssl_port)
        classpath = f"{libs}{os.sep}*"
        self._format_storage(java, classpath)

        if self.log_file.exists():
            os.replace(self.log_file, self.log_file.with_name(_LOG_FILE + ".1"))
        command = [
            java,
            *self._jvm_options(),
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.server_properties),
        ]
        logger.info("Starting Kafka %s on %s (data in %s)", version, config.bootstrap_servers, self.data_dir)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: no Ctrl-C from our terminal
                close_fds=True,
            )
        pid = self._process.pid
        self.pid_file.write_text(f"{pid}\n", encoding="ascii")
        state = {
            "pid": pid,
            "bootstrap": config.bootstrap_servers,
            "port": config.port,
            "controller_port": controller_port,
            "secure": config.secure,
            "ssl_port": ssl_port,
            "version": version,
            "libs": str(libs),
            "started_at": time.time(),
        }
        (self.data_dir / _STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

        if not wait:
            return self
        try:
            self.wait_until_ready(wait_seconds)
            if config.secure:
                self.create_scram_users(CLIENT_USERS)
        except BaseException:
            self.stop(timeout_seconds=10)
            raise
        return self

    def _pick_controller_port(self) -> int:
        wanted = self.config.controller_port
        if wanted is not None:
            if not _port_is_free(wanted):
                raise KafkaStartError(f"Controller port {HOST}:{wanted} is already in use.")
            return wanted
        candidate = self.config.port + 1
        if candidate < 65536 and _port_is_free(candidate):
            return candidate
        return find_free_port()

    def _pick_ssl_port(self, controller_port: int) -> int:
        wanted = self.config.ssl_port
        if wanted is not None:
            if not _port_is_free(wanted):
                raise KafkaStartError(f"mTLS port {HOST}:{wanted} is already in use.")
            return wanted
        candidate = self.config.port + 2
        if candidate < 65536 and candidate != controller_port and _port_is_free(candidate):
            return candidate
        while True:
            port = find_free_port()
            if port not in (controller_port, self.config.port):
                return port

    def _jvm_options(self) -> list[str]:
        return [
            f"-Xmx{self.config.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            # C1 only: about half the start-up time on a busy 2-core box; a dev/test
            # broker never needs C2's peak throughput.  `-XX:TieredStopAtLevel=4`
            # in jvm_options undoes it.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.data_dir}",
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            *self.config.jvm_options,
        ]

    def _write_configs(self, node_id: int, controller_port: int, ssl_port: int | None) -> None:
        config = self.config
        properties: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": str(node_id),
            "controller.quorum.voters": ",".join(
                f"{node}@{HOST}:{port}" for node, port in (config.quorum or ((node_id, controller_port),))
            ),
            "listeners": f"PLAINTEXT://{HOST}:{config.port},CONTROLLER://{HOST}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{config.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": str(config.num_partitions),
            "default.replication.factor": str(config.replication_factor),
            "min.insync.replicas": str(config.min_insync_replicas),
            "offsets.topic.replication.factor": str(config.replication_factor),
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": str(config.replication_factor),
            "transaction.state.log.min.isr": str(config.min_insync_replicas),
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            # Modest footprint beside other work (defaults: 3/8 threads, 128 MB buffer).
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        }
        if config.secure:
            assert ssl_port is not None
            properties.update(
                secure_listener_properties(
                    self.security, node_id, HOST, SECURE_HOST, config.port, ssl_port, controller_port
                )
            )
        if config.quorum:
            # The quorum's addresses must match the names in the nodes' certificates when secure.
            voter_host = SECURE_HOST if config.secure else HOST
            properties["controller.quorum.voters"] = ",".join(f"{n}@{voter_host}:{p}" for n, p in config.quorum)
        properties.update(config.extra_properties)
        body = "".join(f"{key}={value}\n" for key, value in properties.items())
        self.server_properties.write_text(
            "# Written by motionguard_dev/kafka_local.py on every start; edit LocalKafkaConfig instead.\n" + body,
            encoding="utf-8",
        )
        (self.data_dir / "log4j.properties").write_text(_LOG4J_PROPERTIES, encoding="utf-8")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES, encoding="utf-8")

    def _format_storage(self, java: str, classpath: str) -> None:
        """``kafka-storage format`` once; a formatted log dir (and its data) is kept."""
        if (self.log_dir / "meta.properties").is_file():
            logger.debug("Storage in %s already formatted; keeping its data", self.log_dir)
            return
        command = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            self.config.cluster_id or _new_cluster_id(),
            "-c",
            str(self.server_properties),
        ]
        logger.info("Formatting KRaft storage in %s", self.log_dir)
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaStartError(f"Formatting Kafka storage in {self.log_dir} timed out") from exc
        if result.returncode != 0 or not (self.log_dir / "meta.properties").is_file():
            output = _tail((result.stdout or "") + (result.stderr or ""))
            raise KafkaStartError(
                f"Formatting Kafka storage in {self.log_dir} failed (exit {result.returncode}).\n"
                f"--- kafka-storage output (tail) ---\n{output}"
            )

    # -- readiness -----------------------------------------------------------

    def wait_until_ready(self, timeout_seconds: float = 60) -> None:
        """Block until the broker answers a real metadata request and lists itself.

        Raises :class:`KafkaStartError` (with the broker log tail) when the JVM
        exits or the deadline passes.
        """
        deadline = time.monotonic() + timeout_seconds
        state = self._read_state() or {}
        # A secure broker is probed as the ``admin`` super user over its mTLS listener.
        port = int(state["ssl_port"] if state.get("ssl_port") else state.get("port", self.config.port))
        last_error = "the port never accepted a connection"
        while True:
            if self._live_pid() is None:
                code = self._process.poll() if self._process is not None else None
                raise KafkaStartError(
                    f"The Kafka broker exited during start-up (exit code {code}). "
                    f"Tail of {self.log_file}:\n{_tail_file(self.log_file)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaStartError(
                    f"Kafka on {HOST}:{port} was not ready within {timeout_seconds:.0f}s "
                    f"({last_error}). Tail of {self.log_file}:\n{_tail_file(self.log_file)}"
                )
            # Cheap gate first: each failed client construction costs a thread.
            if _port_accepts(port):
                try:
                    self._probe(self._admin_options(port), timeout_ms=int(max(1.0, min(remaining, 10.0)) * 1000))
                    return
                except Exception as exc:  # any client failure means "not yet"
                    last_error = f"last probe: {exc!r}"
            time.sleep(0.2)

    def _probe(self, options: Mapping[str, Any], timeout_ms: int) -> None:
        admin = KafkaAdminClient(
            **options,
            client_id="motionguard-kafka-local-probe",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
        try:
            admin.list_topics()
            cluster = admin.describe_cluster()
        finally:
            admin.close()
        brokers = cluster.get("brokers") or []
        node = self.config.node_id
        if not any(int(b.get("broker_id", b.get("node_id", -1))) == node for b in brokers):
            raise KafkaStartError(f"broker {node} not yet registered (brokers: {brokers})")

    # -- secure broker: clients, users, ACLs, topics ---------------------------

    def _admin_options(self, port: int | None = None) -> dict[str, Any]:
        """kafka-python options of the ``admin`` super user (mTLS); plaintext for an insecure broker."""
        state = self._read_state() or {}
        if not (state.get("secure") if state else self.config.secure):
            return {"bootstrap_servers": f"{HOST}:{port or state.get('port', self.config.port)}"}
        from streamer.settings import settings_from_env

        settings = settings_from_env(self.client_env("admin", mtls=True))
        if port is not None:
            settings = settings.with_overrides(broker=f"kafka://{SECURE_HOST}:{port}")
        return settings.kafka_python_options()

    def client_env(self, user: str, mtls: bool = False, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """The ``MOTIONGUARD_*`` settings with which ``user`` connects to this secure broker.

        SASL_SSL with ``user``'s SCRAM password file, or (``mtls``) SSL with its
        client certificate.  The password itself is never part of the result.
        """
        state = self._read_state() or {}
        files = self.security
        env = {"MOTIONGUARD_SSL_CAFILE": str(files.ca_cert)}
        if mtls:
            port = state.get("ssl_port") or self.config.ssl_port
            env.update(
                MOTIONGUARD_BROKER=f"kafka://{SECURE_HOST}:{port}",
                MOTIONGUARD_SECURITY_PROTOCOL="SSL",
                MOTIONGUARD_SSL_CERTFILE=str(files.cert(user)),
                MOTIONGUARD_SSL_KEYFILE=str(files.key(user)),
            )
        else:
            env.update(
                MOTIONGUARD_BROKER=f"kafka://{SECURE_HOST}:{state.get('port', self.config.port)}",
                MOTIONGUARD_SECURITY_PROTOCOL="SASL_SSL",
                MOTIONGUARD_SASL_MECHANISM=mechanism,
                MOTIONGUARD_SASL_USERNAME=user,
                MOTIONGUARD_SASL_PASSWORD_FILE=str(files.password_file(user)),
            )
        return env

    def admin(self) -> KafkaAdminClient:
        """A kafka-python admin client of the ``admin`` super user (the caller closes it)."""
        return KafkaAdminClient(client_id="motionguard-kafka-local-admin", **self._admin_options())

    def create_scram_users(self, users: tuple[str, ...]) -> None:
        """Create (or reset) each user's SCRAM credentials from its password file, via the admin API."""
        admin = self.admin()
        errors: dict[str, str] = {}
        try:
            for mechanism in SCRAM_MECHANISMS:  # one credential per user and request
                upserts = [
                    UserScramCredentialUpsertion(user, mechanism, self.security.password(user)) for user in users
                ]
                result = admin.alter_user_scram_credentials(upserts)
                errors.update({user: error for user, error in result.items() if error})
        finally:
            admin.close()
        if errors:
            raise KafkaStartError(f"Could not create the SCRAM users: {errors}")
        logger.info("SCRAM users ready: %s", ", ".join(users))

    def create_acls(self, rules: list[AclRule]) -> None:
        """Create ``rules`` (ALLOW from any host) through the admin API; existing ones are left as they are."""
        acls = [
            ACL(
                principal=rule.principal,
                host="*",
                operation=ACLOperation[operation],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(
                    AclResourceType[rule.resource_type],
                    rule.resource_name,
                    ACLResourcePatternType[rule.pattern_type],
                ),
            )
            for rule in rules
            for operation in rule.operations
        ]
        admin = self.admin()
        try:
            result = admin.create_acls(acls)
        finally:
            admin.close()
        failed = result.get("failed") or []
        if failed:
            raise LocalKafkaError(f"Could not create {len(failed)} ACLs: {failed[:3]}")

    def create_topics(self, names: tuple[str, ...], partitions: int) -> list[str]:
        """Create the missing ones of ``names`` as the admin (the worker may not); returns those created."""
        admin = self.admin()
        created = []
        try:
            existing = set(admin.list_topics())
            for name in names:
                if name in existing:
                    continue
                try:
                    admin.create_topics(
                        {name: {"num_partitions": partitions, "replication_factor": self.config.replication_factor}}
                    )
                    created.append(name)
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()
        return created

    # -- stop ----------------------------------------------------------------

    def stop(self, timeout_seconds: float = 30) -> bool:
        """Stop our broker: SIGTERM (clean shutdown), SIGKILL after the timeout.

        Returns ``True`` when a broker was running.  Works from any process.
        """
        pid = self._live_pid()
        if pid is None and self._process is not None and self._process.poll() is None:
            pid = self._process.pid  # our child, even if its pid file went missing
        if pid is None:
            self._cleanup_pid_file()
            logger.info("No Kafka broker running for %s", self.data_dir)
            return False
        logger.info("Stopping Kafka (pid %d)", pid)
        self._signal(pid, signal.SIGTERM)
        if not self._wait_gone(pid, timeout_seconds):
            logger.warning("Kafka (pid %d) ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout_seconds)
            self._signal(pid, signal.SIGKILL)
            if not self._wait_gone(pid, 10):
                raise LocalKafkaError(f"Kafka (pid {pid}) survived SIGKILL")
        self._cleanup_pid_file()
        return True

    def kill(self) -> bool:
        """SIGKILL the broker, as a crash would (tests of broker failures); ``True`` when one ran."""
        pid = self._live_pid()
        if pid is None:
            return False
        logger.info("Killing Kafka node %d (pid %d)", self.config.node_id, pid)
        self._signal(pid, signal.SIGKILL)
        if not self._wait_gone(pid, 10):
            raise LocalKafkaError(f"Kafka (pid {pid}) survived SIGKILL")
        self._cleanup_pid_file()
        return True

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        try:
            if os.getpgid(pid) == pid:  # leader of its own group: take any children too
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _wait_gone(self, pid: int, timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=0.1)
            if _read_cmdline(pid) is None:
                if self._process is not None and self._process.pid == pid:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._process.wait(timeout=1)
                    self._process = None
                return True
            time.sleep(0.1)
        return False

    def _cleanup_pid_file(self) -> None:
        for name in (_PID_FILE, _STATE_FILE):
            try:
                (self.data_dir / name).unlink()
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    # -- context manager -----------------------------------------------------

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafka(bootstrap={self.config.bootstrap_servers!r}, data_dir={str(self.data_dir)!r})"


# --------------------------------------------------------------------------- cluster

_CLUSTER_FILE = "cluster.json"


class LocalKafkaCluster:
    """``brokers`` KRaft nodes (each broker and controller) from the same jars, on 127.0.0.1.

    Node ``N`` lives in ``<config.data_dir>/node-N`` (its own data, log and pid
    file); ``<config.data_dir>/cluster.json`` keeps the cluster id and every
    node's ports, so ``start``, ``status`` and ``stop`` find the same cluster
    from any process, and a killed node restarts on its own ports.  The first
    node listens on ``config.port``, the others on free ports.  New and
    internal topics get three replicas (or as many as there are nodes) and
    ``min.insync.replicas`` 2: with one node down everything still works, with
    two down writes with ``acks=all`` stop.
    """

    def __init__(self, config: LocalKafkaConfig | None = None, brokers: int | None = None) -> None:
        """``brokers``: how many nodes a new cluster gets (default 3); ``None`` takes an existing one as it is."""
        self.config = config if config is not None else LocalKafkaConfig()
        layout = self._read_layout()
        if layout is None:
            brokers = 3 if brokers is None else brokers
            if brokers < 1:
                raise ValueError(f"brokers must be >= 1, got {brokers}")
            layout = self._new_layout(brokers)
        elif brokers is not None and len(layout["nodes"]) != brokers:
            raise LocalKafkaError(
                f"{self.data_dir} holds a cluster of {len(layout['nodes'])} brokers, not {brokers}; "
                "stop it and use another --data-dir"
            )
        self.cluster_id: str = layout["cluster_id"]
        self._layout = layout
        quorum = tuple((int(n["node_id"]), int(n["controller_port"])) for n in layout["nodes"])
        self.nodes = [
            LocalKafka(
                replace(
                    self.config,
                    data_dir=self.data_dir / f"node-{n['node_id']}",
                    port=int(n["port"]),
                    controller_port=int(n["controller_port"]),
                    node_id=int(n["node_id"]),
                    quorum=quorum,
                    secure=bool(layout.get("secure")),
                    ssl_port=n.get("ssl_port"),
                    security_dir=self.data_dir / "security",
                    cluster_id=self.cluster_id,
                    replication_factor=min(3, len(quorum)),
                )
            )
            for n in layout["nodes"]
        ]

    @staticmethod
    def exists(data_dir: Path) -> bool:
        """Whether ``data_dir`` holds a cluster (rather than a single broker)."""
        return (Path(data_dir) / _CLUSTER_FILE).is_file()

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    @property
    def secure(self) -> bool:
        return bool(self._layout.get("secure"))

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:P1,127.0.0.1:P2,...``: every node's client listener."""
        return ",".join(f"{HOST}:{node.config.port}" for node in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        for node in self.nodes:
            if node.config.node_id == node_id:
                return node
        raise KeyError(f"no node {node_id} in this cluster")

    def _read_layout(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.data_dir / _CLUSTER_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("nodes") else None

    def _new_layout(self, brokers: int) -> dict[str, Any]:
        ports = [self.config.port]
        while len(ports) < 2 * brokers:
            port = find_free_port()
            if port not in ports:
                ports.append(port)
        nodes: list[dict[str, Any]] = [
            {"node_id": i + 1, "port": ports[i], "controller_port": ports[brokers + i]} for i in range(brokers)
        ]
        if self.config.secure:
            for node in nodes:
                node["ssl_port"] = find_free_port()
        return {"cluster_id": _new_cluster_id(), "secure": self.config.secure, "nodes": nodes}

    def start(self, wait_seconds: float = 120) -> LocalKafkaCluster:
        """Start every node that is not running, then wait until each is ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / _CLUSTER_FILE).write_text(json.dumps(self._layout, indent=2) + "\n", encoding="utf-8")
        deadline = time.monotonic() + wait_seconds
        try:
            for node in self.nodes:
                if not node.is_running():
                    node.start(wait=False)
            for node in self.nodes:
                node.wait_until_ready(max(1.0, deadline - time.monotonic()))
            if self.secure:
                self.nodes[0].create_scram_users(CLIENT_USERS)
        except BaseException:
            self.stop(timeout_seconds=10)
            raise
        return self

    def stop(self, timeout_seconds: float = 30) -> bool:
        """Stop every node at once; ``True`` when any was running.

        At once, because the last node of a KRaft quorum cannot shut down cleanly on
        its own once the others are gone: it would wait for them until SIGKILL."""
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix="kafka-stop") as pool:
            stopped = list(pool.map(lambda node: node.stop(timeout_seconds), self.nodes))
        return any(stopped)

    def status(self) -> dict[str, Any]:
        nodes = [node.status() for node in self.nodes]
        return {
            "running": all(n["running"] for n in nodes),
            "brokers": len(nodes),
            "brokers_running": sum(n["running"] for n in nodes),
            "bootstrap": self.bootstrap_servers,
            "cluster_id": self.cluster_id,
            "data_dir": str(self.data_dir),
            "nodes": [
                {key: n[key] for key in ("running", "pid", "port", "controller_port", "data_dir", "log_file")}
                | {"node_id": node.config.node_id, "port": node.config.port}
                for node, n in zip(self.nodes, nodes, strict=True)
            ],
        }

    def __enter__(self) -> LocalKafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafkaCluster(bootstrap={self.bootstrap_servers!r}, data_dir={str(self.data_dir)!r})"
