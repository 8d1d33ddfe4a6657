"""Run a real ``motionguard worker`` process against a local broker, and talk to it.

Used by the worker tests and the benchmarks (``benchmarks/bench_worker.py``,
``benchmarks/bench_failover.py``).  Each test module gets its own topics and
consumer group (a unique prefix), so tests sharing the session's broker never see
each other's events.  The worker runs as ``python -m streamer`` from the
repository root (:data:`REPO`), so a source checkout is needed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import CoordinatorNotAvailableError

from streamer.settings import uploads_group

REPO = Path(__file__).resolve().parents[1]


T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout_seconds: float,
    what: str,
    workers: tuple[WorkerProcess, ...] = (),
    interval_seconds: float = 0.3,
) -> T:
    """Poll ``condition()`` until it returns something truthy, and return that.

    After ``timeout_seconds`` fail with ``what`` (say what was awaited), the last
    value seen, and the log tails of ``workers``.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- worker {w.data_dir.name} log:\n{w.log_tail(80)}" for w in workers)
            raise AssertionError(f"timed out after {timeout_seconds:.0f} s waiting for {what} (last: {value!r}){logs}")
        time.sleep(interval_seconds)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Topics:
    prefix: str
    partitions: int = 4

    @property
    def uploads(self) -> str:
        return f"{self.prefix}-uploads"

    @property
    def verdicts(self) -> str:
        return f"{self.prefix}-verdicts"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}-dlq"

    @property
    def labels(self) -> str:
        return f"{self.prefix}-labels"

    @property
    def uploads_group(self) -> str:
        """The worker's uploads consumer group (the label join's group is the prefix itself)."""
        return uploads_group(self.prefix)

    def env(self) -> dict[str, str]:
        return {
            "MOTIONGUARD_APP_ID": self.prefix,
            "MOTIONGUARD_TOPIC_UPLOADS": self.uploads,
            "MOTIONGUARD_TOPIC_VERDICTS": self.verdicts,
            "MOTIONGUARD_TOPIC_DEAD_LETTERS": self.dead_letters,
            "MOTIONGUARD_TOPIC_LABELS": self.labels,
            "MOTIONGUARD_TOPIC_PARTITIONS": str(self.partitions),
        }

    def create(self, bootstrap: str) -> None:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="motionguard-tests")
        try:
            admin.create_topics(
                [
                    NewTopic(name, num_partitions=self.partitions, replication_factor=1)
                    for name in (self.uploads, self.verdicts, self.dead_letters, self.labels)
                ]
            )
        finally:
            admin.close()


def new_topics(name: str) -> Topics:
    return Topics(prefix=f"t-{name}-{uuid.uuid4().hex[:8]}")


@dataclass
class WorkerProcess:
    bootstrap: str
    topics: Topics
    allowed_root: Path
    data_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ("--model", "tiny-test", "--pretrained", "none")
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, wait_ready_seconds: float | None = 90.0) -> WorkerProcess:
        """Spawn the worker and wait until ``/ready`` says 200 (``None``: do not wait)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOTIONGUARD_")}
        env.update(self.topics.env())
        env.update(
            {
                "MOTIONGUARD_BROKER": f"kafka://{self.bootstrap}",
                "MOTIONGUARD_WEB_PORT": str(self.web_port),
                "MOTIONGUARD_WEB_HOST": "127.0.0.1",
                "MOTIONGUARD_ALLOWED_ROOTS": str(self.allowed_root),
                "MOTIONGUARD_DATA_DIR": str(self.data_dir / "faust"),
                "MOTIONGUARD_DOWNLOAD_DIR": str(self.data_dir / "downloads"),
                "MOTIONGUARD_BATCH_WINDOW_MS": "30",
                "MOTIONGUARD_RETRY_BACKOFF_SECONDS": "0.05",
                "MOTIONGUARD_FRAMES": "4",
                "MOTIONGUARD_DEVICE": "cpu",
                "MOTIONGUARD_WORKER_NAME": self.data_dir.name,
            }
        )
        env.update(self.extra_env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"worker-{int(time.time() * 1000)}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamer", "--log-level", "info", "worker", *self.args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        if wait_ready_seconds is not None:
            self.wait_ready(wait_ready_seconds)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read()

    def wait_ready(self, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, _ = self.get("/ready")
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {timeout_seconds} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def metrics(self) -> dict[str, float]:
        """Parse /metrics into ``{'name{labels}': value}``."""
        status, body = self.get("/metrics")
        assert status == 200
        values: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def terminate(self, timeout_seconds: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)


def upload_event(video_id: str, uri: str, **extra: Any) -> bytes:
    return json.dumps({"video_id": video_id, "uri": uri, **extra}).encode()


def send_all(
    bootstrap: str, topic: str, events: Iterable[tuple[str | None, bytes]], timestamp_ms: int | None = None
) -> None:
    """Publish and flush; ``timestamp_ms`` sets the records' time (default: now)."""
    prod = producer(bootstrap)
    try:
        for key, value in events:
            prod.send(topic, key=key.encode() if key else None, value=value, timestamp_ms=timestamp_ms)
        prod.flush(30)
    finally:
        prod.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> the offset the next record will get."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        consumer.close()
    return {tp.partition: int(offset) for tp, offset in ends.items()}


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """partition -> the offset ``group`` committed on ``topic`` (partitions it never committed are absent)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="motionguard-tests")
    try:
        offsets = admin.list_group_offsets({group: None}).get(group) or {}
    except CoordinatorNotAvailableError:  # nobody ever committed on this broker: no offsets topic yet
        return {}
    finally:
        admin.close()
    return {tp.partition: int(meta.offset) for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


def group_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """partition -> records on ``topic`` that ``group`` has not committed yet (only partitions behind)."""
    committed = committed_offsets(bootstrap, group, topic)
    lag = {partition: end - committed.get(partition, 0) for partition, end in end_offsets(bootstrap, topic).items()}
    return {partition: behind for partition, behind in lag.items() if behind > 0}


def wait_caught_up(
    bootstrap: str, group: str, topic: str, timeout_seconds: float, workers: tuple[WorkerProcess, ...] = ()
) -> None:
    """Wait until ``group`` has committed every record ``topic`` holds now: it has processed them all."""
    behind: dict[int, int] = {}

    def caught_up() -> bool:
        behind.clear()
        behind.update(group_lag(bootstrap, group, topic))
        return not behind

    try:
        wait_for(caught_up, timeout_seconds, f"group {group} to commit the end of {topic}", workers=workers)
    except AssertionError as e:
        raise AssertionError(f"{e}\nstill behind (partition: records): {behind}") from None


class TopicReader:
    """Reads every record of a topic from the beginning, keeping them all."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.next_offsets: dict[int, int] = {}  # partition -> offset after the last record read
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=500,
        )
        self.records: list[dict[str, Any]] = []

    def poll(self, timeout_ms: int = 300) -> list[dict[str, Any]]:
        """Fetch what has arrived (waiting at most ``timeout_ms``); return every record so far."""
        for messages in self.consumer.poll(timeout_ms=timeout_ms).values():
            for message in messages:
                self.records.append(json.loads(message.value))
                self.next_offsets[message.partition] = message.offset + 1
        return self.records

    def read_to_end(self, timeout_seconds: float) -> list[dict[str, Any]]:
        """Read every record the topic holds now (up to its end offsets); return every record so far."""
        ends = {p: end for p, end in end_offsets(self.bootstrap, self.topic).items() if end > 0}

        def at_end() -> bool:
            self.poll()
            return all(self.next_offsets.get(p, 0) >= end for p, end in ends.items())

        wait_for(at_end, timeout_seconds, f"the records of {self.topic} up to offsets {ends}", interval_seconds=0)
        return self.records

    def wait_for(
        self,
        video_ids: set[str],
        timeout_seconds: float,
        key: str = "video_id",
        workers: tuple[WorkerProcess, ...] = (),
    ) -> list[dict[str, Any]]:
        """Wait until every id has a record; on timeout, say which are missing and what the workers logged."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            seen = {record.get(key) for record in self.poll()}
            if video_ids <= seen:
                return self.records
        missing = video_ids - {record.get(key) for record in self.records}
        logs = "\n".join(f"--- worker {w.data_dir.name} log:\n{w.log_tail(80)}" for w in workers)
        raise AssertionError(
            f"no record for {len(missing)} ids after {timeout_seconds} s: {sorted(missing)[:10]}\n{logs}"
        )

    def close(self) -> None:
        self.consumer.close()
