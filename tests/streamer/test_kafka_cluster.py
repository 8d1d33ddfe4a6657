"""``motionguard kafka start --brokers 3``: a real three-node KRaft cluster, and its failures.

The cluster here is this module's own (a test that kills brokers must not share them).
Topics get three replicas and ``min.insync.replicas`` 2, so with one node down every
partition keeps a leader and ``acks=all`` writes go on; with two down they stop, and
resume when one comes back.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AioKafkaError
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from motionguard_dev.harness import wait_for
from motionguard_dev.kafka_local import LocalKafka, LocalKafkaCluster, LocalKafkaConfig, find_free_port
from streamer.settings import settings_from_env
from tests.streamer.cluster import partition_state

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def admin(cluster: LocalKafkaCluster) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers, request_timeout_ms=10_000)


def new_topic(cluster: LocalKafkaCluster, partitions: int = 2) -> str:
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    client = admin(cluster)
    try:
        client.create_topics([NewTopic(name, partitions, replication_factor=-1)])  # the cluster's default
    finally:
        client.close()
    wait_for(lambda: len(partition_state(cluster, name)) == partitions, 30, f"{name}'s partitions")
    return name


def produce(cluster: LocalKafkaCluster, topic: str, count: int, timeout_seconds: float = 30.0) -> None:
    """Send ``count`` records with ``acks=all``; raises a ``KafkaError`` when they are not acknowledged in time.

    aiokafka rather than kafka-python: its producer is closed for certain when the call returns,
    while kafka-python's sender thread can outlive a failed close and keep dialling dead nodes."""

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=cluster.bootstrap_servers, acks="all", request_timeout_ms=int(timeout_seconds * 1000)
        )
        await producer.start()
        try:
            async with asyncio.timeout(timeout_seconds + 15):
                for i in range(count):
                    await producer.send_and_wait(topic, key=str(i).encode(), value=b"x")
        except TimeoutError as e:
            raise AioKafkaError(f"not acknowledged within {timeout_seconds + 15:.0f} s") from e
        finally:
            await producer.stop()

    asyncio.run(send())


def test_three_nodes_run_and_topics_get_three_replicas_and_two_in_sync(cluster: LocalKafkaCluster) -> None:
    status = cluster.status()
    assert status["running"] and status["brokers_running"] == 3
    assert [node["node_id"] for node in status["nodes"]] == [1, 2, 3]
    assert len({node["port"] for node in status["nodes"]}) == 3
    topic = new_topic(cluster)
    for state in partition_state(cluster, topic).values():
        assert state["isr"] == [1, 2, 3]

    def topic_config() -> dict[str, str]:
        """The topic's configuration (empty until the broker asked knows the topic)."""
        client = admin(cluster)
        try:
            configs = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
        finally:
            client.close()
        return {name: entry["value"] for name, entry in configs.get("topic", {}).get(topic, {}).items()}

    values = wait_for(topic_config, 30, f"{topic}'s configuration")
    assert values["min.insync.replicas"] == "2"
    produce(cluster, topic, 10)


def test_a_killed_leader_hands_over_and_rejoins_when_restarted(cluster: LocalKafkaCluster) -> None:
    topic = new_topic(cluster)
    produce(cluster, topic, 5)
    leader_id = partition_state(cluster, topic)[0]["leader"]
    leader: LocalKafka = cluster.node(leader_id)
    try:
        assert leader.kill()
        moved = wait_for(
            lambda: (s := partition_state(cluster, topic)) and s[0]["leader"] not in (leader_id, -1) and s,
            60,
            "a new leader",
        )
        assert leader_id not in moved[0]["isr"]
        produce(cluster, topic, 5)  # two in-sync replicas left: acks=all still succeeds
    finally:
        leader.start(wait_seconds=90)
    wait_for(lambda: partition_state(cluster, topic).get(0, {}).get("isr") == [1, 2, 3], 90, "the ISR back to 3")


def test_with_two_nodes_down_writes_stop_and_resume_when_one_returns(cluster: LocalKafkaCluster) -> None:
    topic = new_topic(cluster, partitions=1)
    down = [node for node in cluster.nodes if node.config.port != cluster.nodes[0].config.port][:2]
    try:
        for node in down:
            node.kill()
        with pytest.raises(AioKafkaError):
            produce(cluster, topic, 1, timeout_seconds=15)
        down[0].start(wait_seconds=90)
        produce(cluster, topic, 3, timeout_seconds=60)
    finally:
        for node in down:
            if not node.is_running():
                node.start(wait_seconds=90)
    wait_for(lambda: all(n.is_running() for n in cluster.nodes), 30, "every node running")


def test_the_command_line_reports_and_stops_every_node(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli-cluster"
    command = [sys.executable, "-m", "streamer", "kafka"]
    started = subprocess.run(
        [*command, "start", "--brokers", "3", "--port", str(find_free_port()), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        assert started.returncode == 0, started.stderr
        assert "brokers_running: 3" in started.stdout
        status = subprocess.run(
            [*command, "status", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0 and "brokers_running: 3" in status.stdout
    finally:
        stopped = subprocess.run(
            [*command, "stop", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120
        )
    assert stopped.returncode == 0 and "Kafka stopped" in stopped.stdout
    after = subprocess.run(
        [*command, "status", "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60
    )
    assert after.returncode == 1 and "brokers_running: 0" in after.stdout


def test_a_secure_cluster_takes_scram_clients_and_keeps_writing_with_a_node_down(tmp_path: Path) -> None:
    """``--secure --brokers 3``: TLS between the nodes too, the users and ACLs of one broker, three replicas."""
    data_dir = tmp_path / "secure-cluster"
    command = [sys.executable, "-m", "streamer", "kafka"]
    started = subprocess.run(
        [*command, "start", "--secure", "--brokers", "3", "--port", str(find_free_port()), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    cluster = LocalKafkaCluster(LocalKafkaConfig(data_dir=data_dir))
    try:
        assert started.returncode == 0, started.stderr
        assert cluster.secure and cluster.status()["brokers_running"] == 3
        first = cluster.nodes[0]
        submitter = {**os.environ, **first.client_env("submitter")}
        worker = settings_from_env(first.client_env("worker"))

        def submit(name: str) -> None:
            done = subprocess.run(
                [sys.executable, "-m", "streamer", "submit", f"file:///videos/{name}.mp4"],
                env=submitter,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr

        submit("before")
        client = first.admin()
        try:
            (uploads,) = client.describe_topics([worker.topic_uploads])
        finally:
            client.close()
        assert all(len(p["replica_nodes"]) == 3 for p in uploads["partitions"])

        cluster.node(3).kill()
        submit("with-a-node-down")
        consumer = KafkaConsumer(
            worker.topic_uploads,
            group_id=worker.app_id,  # the worker's ACLs cover its own group only
            auto_offset_reset="earliest",
            consumer_timeout_ms=20_000,
            **worker.kafka_python_options(),
        )
        try:
            uris = {json.loads(record.value)["uri"] for record in consumer}
        finally:
            consumer.close()
        assert {"file:///videos/before.mp4", "file:///videos/with-a-node-down.mp4"} <= uris
    finally:
        cluster.stop()
