"""The local Kafka broker is a real Apache Kafka that both Python clients can use.

Every test here talks to a JVM running ``kafka.Kafka``: nothing is mocked
except, in the download tests, Maven itself (a fake ``mvn`` script), so that the
locking and error paths can be checked without the network.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from motionguard_dev.kafka_local import (
    KafkaProvisionError,
    KafkaStartError,
    LocalKafka,
    LocalKafkaConfig,
    ensure_kafka_libs,
    find_free_port,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def kafka_home_from_env() -> Path | None:
    value = os.environ.get("KAFKA_HOME", "").strip()
    return Path(value) if value else None


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _produce_kafka_python(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=5)
    try:
        metadata = producer.send(topic, key=key, value=value).get(timeout=30)
        assert metadata.topic == topic
        assert metadata.offset >= 0
    finally:
        producer.close()


def _consume_kafka_python(
    bootstrap: str, topic: str, expected: int, timeout: float = 30.0
) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    records: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer:
                records.append((message.key, message.value))
    finally:
        consumer.close()
    return records


def _assert_answers_at_once(bootstrap: str) -> None:
    """start() returned, so the broker must serve metadata now, not after a retry loop."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=3000, request_timeout_ms=3000)
    try:
        brokers = admin.describe_cluster()["brokers"]
    finally:
        admin.close()
    host, port = bootstrap.rsplit(":", 1)
    assert [(b["host"], b["port"]) for b in brokers] == [(host, int(port))]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``motionguard kafka ...`` (``python -m streamer kafka ...``) in a separate process."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "streamer", "kafka", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


# ---------------------------------------------------------------- both clients


@pytest.mark.kafka
def test_kafka_python_produce_and_consume(kafka_broker: LocalKafka) -> None:
    topic = _topic("kp")
    _produce_kafka_python(kafka_broker.bootstrap_servers, topic, b"video-1", b'{"score": 0.93}')
    records = _consume_kafka_python(kafka_broker.bootstrap_servers, topic, expected=1)
    assert records == [(b"video-1", b'{"score": 0.93}')]


@pytest.mark.kafka
def test_aiokafka_produce_and_consume(kafka_broker: LocalKafka) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = _topic("aio")

    async def roundtrip() -> tuple[bytes, bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, value=b"frame-scores", key=b"video-2")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_broker.bootstrap_servers,
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
            await consumer.commit()
        finally:
            await consumer.stop()
        return message.key, message.value

    assert asyncio.run(roundtrip()) == (b"video-2", b"frame-scores")


@pytest.mark.kafka
def test_clients_interoperate_and_topics_get_configured_partitions(kafka_broker: LocalKafka) -> None:
    """kafka-python writes, aiokafka reads; auto-created topics get num_partitions."""
    from aiokafka import AIOKafkaConsumer

    topic = _topic("mixed")
    _produce_kafka_python(kafka_broker.bootstrap_servers, topic, b"k", b"from-kafka-python")

    async def read() -> tuple[bytes, set[int]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_broker.bootstrap_servers,
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
            partitions = consumer.partitions_for_topic(topic) or set()
        finally:
            await consumer.stop()
        return message.value, set(partitions)

    value, partitions = asyncio.run(read())
    assert value == b"from-kafka-python"
    assert partitions == set(range(kafka_broker.config.num_partitions)) == {0, 1, 2, 3}


# ---------------------------------------------------------------------- status


@pytest.mark.kafka
def test_status_reports_running_broker(kafka_broker: LocalKafka) -> None:
    status = kafka_broker.status()
    assert status["running"] is True
    assert isinstance(status["pid"], int)
    assert status["bootstrap"] == kafka_broker.bootstrap_servers == f"127.0.0.1:{kafka_broker.config.port}"
    assert status["data_dir"] == str(kafka_broker.data_dir)
    if kafka_home_from_env() is None:
        assert status["version"] == "3.9.1"
    # The pid is the real JVM running the Kafka server for this data dir.
    cmdline = Path(f"/proc/{status['pid']}/cmdline").read_bytes().decode()
    assert "kafka.Kafka" in cmdline and str(kafka_broker.server_properties) in cmdline

    # A separate process finds it through the pid file, and exits 0.
    result = _run_cli("status", "--data-dir", str(kafka_broker.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "running: true" in result.stdout
    assert f"pid: {status['pid']}" in result.stdout


def test_status_of_nothing_is_not_running(tmp_path: Path) -> None:
    status = LocalKafka(LocalKafkaConfig(data_dir=tmp_path / "none")).status()
    assert status["running"] is False and status["pid"] is None and status["bootstrap"] is None
    result = _run_cli("status", "--data-dir", str(tmp_path / "none"))
    assert result.returncode == 1
    assert "running: false" in result.stdout


def test_stale_pid_file_is_not_mistaken_for_a_broker(tmp_path: Path) -> None:
    data = tmp_path / "stale"
    data.mkdir()
    (data / "kafka.pid").write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    kafka = LocalKafka(LocalKafkaConfig(data_dir=data))
    assert kafka.status()["running"] is False
    assert kafka.stop() is False  # and it does not signal this (pytest) process


# ------------------------------------------------------------ restart and data


@pytest.mark.kafka
@pytest.mark.slow
def test_restart_on_same_data_dir_keeps_messages(tmp_path: Path) -> None:
    port = find_free_port()
    config = LocalKafkaConfig(port=port, data_dir=tmp_path / "kafka", kafka_home=kafka_home_from_env())
    topic = _topic("persist")

    first = LocalKafka(config)
    first.start(wait_seconds=120)
    try:
        _assert_answers_at_once(first.bootstrap_servers)
        cluster_id = (first.log_dir / "meta.properties").read_text()
        _produce_kafka_python(first.bootstrap_servers, topic, b"before-restart", b"kept")
    finally:
        # Stop from another process, as `motionguard kafka stop` would.
        result = _run_cli("stop", "--data-dir", str(config.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Kafka stopped" in result.stdout
    assert first.status()["running"] is False
    assert not first.pid_file.exists()
    with socket.socket() as sock:  # the listener is really gone
        assert sock.connect_ex(("127.0.0.1", port)) != 0

    with LocalKafka(config) as second:  # same data dir, fresh object
        assert second.status()["running"] is True
        assert (second.log_dir / "meta.properties").read_text() == cluster_id  # not re-formatted
        records = _consume_kafka_python(second.bootstrap_servers, topic, expected=1)
        assert records == [(b"before-restart", b"kept")]
    assert second.status()["running"] is False


# ---------------------------------------------------------------------- errors


def test_kafka_home_without_jars_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "not-kafka"
    (empty / "libs").mkdir(parents=True)
    kafka = LocalKafka(LocalKafkaConfig(port=find_free_port(), data_dir=tmp_path / "d", kafka_home=empty))
    with pytest.raises(KafkaProvisionError, match=r"not a Kafka installation.*kafka_2\.\*") as info:
        kafka.start(wait_seconds=10)
    assert str(empty / "libs") in str(info.value)
    assert kafka.status()["running"] is False


def test_missing_maven_is_a_clear_error(tmp_path: Path) -> None:
    config = LocalKafkaConfig(data_dir=tmp_path / "d", cache_dir=tmp_path / "cache", mvn="no-such-mvn-3f9a")
    with pytest.raises(KafkaProvisionError, match=r"Maven \('no-such-mvn-3f9a'\) was not found"):
        ensure_kafka_libs(config)


def _fake_mvn(tmp_path: Path, *, fail: bool) -> Path:
    """A stand-in for ``mvn`` that records each call and fakes the download."""
    script = tmp_path / "fake-mvn"
    calls = tmp_path / "mvn-calls"
    body = (
        'echo "[ERROR] Could not resolve dependencies: org.apache.kafka:kafka_2.13:jar:9.9.9" >&2; exit 1'
        if fail
        else textwrap.dedent(
            """\
            for arg in "$@"; do
              case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
            done
            sleep 1
            mkdir -p "$out" && touch "$out/kafka_2.13-3.9.1.jar" "$out/kafka-clients-3.9.1.jar"
            """
        )
    )
    script.write_text(f'#!/bin/sh\necho "$$" >> "{calls}"\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_failed_download_shows_maven_output(tmp_path: Path) -> None:
    mvn = _fake_mvn(tmp_path, fail=True)
    config = LocalKafkaConfig(
        data_dir=tmp_path / "d", cache_dir=tmp_path / "cache", mvn=str(mvn), kafka_version="9.9.9"
    )
    with pytest.raises(KafkaProvisionError, match=r"(?s)Could not download Apache Kafka 9\.9\.9.*Could not resolve"):
        ensure_kafka_libs(config)
    assert not (tmp_path / "cache" / "libs").exists()
    assert not (tmp_path / "cache" / ".complete").exists()


def test_concurrent_first_use_downloads_once(tmp_path: Path) -> None:
    mvn = _fake_mvn(tmp_path, fail=False)
    cache = tmp_path / "cache"
    code = textwrap.dedent(
        f"""\
        from pathlib import Path
        from motionguard_dev.kafka_local import LocalKafkaConfig, ensure_kafka_libs
        cfg = LocalKafkaConfig(
            data_dir=Path({str(tmp_path / "d")!r}), cache_dir=Path({str(cache)!r}), mvn={str(mvn)!r}
        )
        print(ensure_kafka_libs(cfg))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert outputs == [str(cache / "libs")] * 3
    assert len((tmp_path / "mvn-calls").read_text().split()) == 1  # one download for all three
    assert sorted(p.name for p in (cache / "libs").iterdir()) == [
        "kafka-clients-3.9.1.jar",
        "kafka_2.13-3.9.1.jar",
    ]
    assert "<artifactId>kafka_2.13</artifactId><version>3.9.1</version>" in (cache / "pom.xml").read_text()
    assert not list(cache.glob("libs.tmp-*"))


@pytest.mark.kafka
def test_broker_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    # Accepted by `kafka-storage format`, fatal when the broker loads it.
    config = LocalKafkaConfig(
        port=find_free_port(),
        data_dir=tmp_path / "bad",
        kafka_home=kafka_home_from_env(),
        extra_properties={"authorizer.class.name": "com.example.NoSuchAuthorizer"},
    )
    kafka = LocalKafka(config)
    with pytest.raises(KafkaStartError, match=r"(?s)exited during start-up.*com\.example\.NoSuchAuthorizer"):
        kafka.start(wait_seconds=90)
    assert kafka.status()["running"] is False
    state = json.dumps(kafka.status())
    assert '"running": false' in state


def test_find_free_port_is_bindable() -> None:
    port = find_free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
