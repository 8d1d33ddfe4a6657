"""The worker on a three-node cluster: a partition leader dies, then two brokers do.

Topics get three replicas and ``min.insync.replicas`` 2 (the worker creates them from its
settings); verdicts and dead letters are produced with ``acks=all``.  Every upload must get
its outcome (duplicates within the events in flight allowed, nothing lost), and with two
brokers down the worker must say it is not ready until one returns.  This module runs its
own cluster: it kills its brokers.
"""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from motionguard_dev.harness import TopicReader, WorkerProcess, new_topics, send_all, upload_event, wait_for
from motionguard_dev.kafka_local import LocalKafkaCluster
from streamer.schemas import format_time, utc_now
from streamer.settings import WorkerSettings
from tests.streamer.cluster import partition_state
from tests.videofactory import make_video

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BATCH_MAX_EVENTS = WorkerSettings().batch_max_events
DURABLE = {"MOTIONGUARD_TOPIC_REPLICATION_FACTOR": "3", "MOTIONGUARD_TOPIC_MIN_INSYNC_REPLICAS": "2"}


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uploads")
    make_video(root / "a.mp4", codec="h264", seconds=1.0, width=96, height=64, fps=10)
    return root


def restart_all(cluster: LocalKafkaCluster, topic: str) -> None:
    for node in cluster.nodes:
        if not node.is_running():
            node.start(wait_seconds=120)
    wait_for(lambda: all(p["isr"] == [1, 2, 3] for p in partition_state(cluster, topic).values()), 120, "ISRs of 3")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@pytest.mark.parametrize("killed", ["uploads", "verdicts"])
def test_a_killed_partition_leader_costs_no_upload(
    cluster: LocalKafkaCluster, video_root: Path, tmp_path: Path, killed: str
) -> None:
    topics = new_topics(f"leader-{killed}")
    uri = (video_root / "a.mp4").as_uri()
    ids = [f"{killed}-{i:03d}" for i in range(80)]
    reader = TopicReader(cluster.bootstrap_servers, topics.verdicts)
    victim = 0
    with WorkerProcess(cluster.bootstrap_servers, topics, video_root, tmp_path / "w", extra_env=DURABLE) as worker:
        worker.start()

        def verdicts_config() -> dict[str, Any]:
            admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
            try:
                configs = admin.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, topics.verdicts)], config_filter="all"
                )
            finally:
                admin.close()
            return dict(configs.get("topic", {}).get(topics.verdicts, {}))

        config = wait_for(verdicts_config, 30, "the verdicts topic's configuration")
        assert config["min.insync.replicas"]["value"] == "2"
        assert all(p["isr"] == [1, 2, 3] for p in partition_state(cluster, topics.verdicts).values())

        events = [(v, upload_event(v, uri, uploaded_at=format_time(utc_now()))) for v in ids]
        send_all(cluster.bootstrap_servers, topics.uploads, events[:40])
        wait_for(lambda: len({r["video_id"] for r in reader.poll(50)}) >= 10, 120, "the first verdicts")
        target = topics.uploads if killed == "uploads" else topics.verdicts
        victim = partition_state(cluster, target)[0]["leader"]
        killed_at = utc_now()
        assert cluster.node(victim).kill()
        send_all(cluster.bootstrap_servers, topics.uploads, events[40:])  # acks=all: two replicas remain
        try:
            records = reader.wait_for(set(ids), timeout_seconds=240, workers=(worker,))
        finally:
            reader.close()
            worker.terminate()
    restart_all(cluster, topics.verdicts)  # the killed broker rejoins every ISR

    per_id = Counter(r["video_id"] for r in records)
    assert set(per_id) == set(ids)
    assert [r for r in records if r["verdict"] == "error"] == []
    duplicates = sum(count - 1 for count in per_id.values())
    assert duplicates <= BATCH_MAX_EVENTS, per_id.most_common(5)
    latencies = [r["upload_to_verdict_seconds"] for r in records]
    decided = sorted(datetime.fromisoformat(r["decided_at"].replace("Z", "+00:00")) for r in records)
    after_kill = [t for t in decided if t >= killed_at]
    gap = max((b - a).total_seconds() for a, b in zip([killed_at, *after_kill[:-1]], after_kill, strict=True))
    print(
        f"leader kill ({killed} partition 0, node {victim}): {len(ids)} uploads, {len(records)} verdicts, "
        f"{duplicates} duplicates; upload-to-verdict p50 {percentile(latencies, 0.5):.2f} s, "
        f"p95 {percentile(latencies, 0.95):.2f} s, p99 {percentile(latencies, 0.99):.2f} s, "
        f"mean {statistics.mean(latencies):.2f} s; longest pause in verdicts after the kill {gap:.2f} s"
    )


def test_with_two_brokers_down_the_worker_is_not_ready_and_resumes_when_one_returns(
    cluster: LocalKafkaCluster, video_root: Path, tmp_path: Path
) -> None:
    topics = new_topics("two-down")
    uri = (video_root / "a.mp4").as_uri()
    ids = [f"down-{i:03d}" for i in range(30)]
    reader = TopicReader(cluster.bootstrap_servers, topics.verdicts)
    down = cluster.nodes[1:]
    with WorkerProcess(cluster.bootstrap_servers, topics, video_root, tmp_path / "w", extra_env=DURABLE) as worker:
        worker.start()
        try:
            send_all(cluster.bootstrap_servers, topics.uploads, [(v, upload_event(v, uri)) for v in ids[:10]])
            reader.wait_for(set(ids[:10]), timeout_seconds=120, workers=(worker,))
            send_all(cluster.bootstrap_servers, topics.uploads, [(v, upload_event(v, uri)) for v in ids[10:]])
            for node in down:
                node.kill()
            wait_for(lambda: worker.get("/ready")[0] == 503, 150, "/ready to say 503 with two brokers down")
            assert worker.metrics()["motionguard_worker_ready"] == 0
            down[0].start(wait_seconds=120)
            wait_for(lambda: worker.get("/ready")[0] == 200, 180, "/ready to say 200 with two brokers up")
            records = reader.wait_for(set(ids), timeout_seconds=240, workers=(worker,))
        finally:
            reader.close()
            worker.terminate()
    restart_all(cluster, topics.verdicts)
    per_id = Counter(r["video_id"] for r in records)
    assert set(per_id) == set(ids)
    assert sum(count - 1 for count in per_id.values()) <= BATCH_MAX_EVENTS
