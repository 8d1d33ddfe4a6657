"""Nothing lost: a worker killed mid-stream, and a broker restarted mid-stream.

Duplicates are allowed (at-least-once); a ``video_id`` without a verdict is not.
The broker-restart test restarts a broker of its own, never the session's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from motionguard_dev.harness import (
    TopicReader,
    WorkerProcess,
    new_topics,
    send_all,
    upload_event,
    wait_caught_up,
    wait_for,
)
from motionguard_dev.kafka_local import LocalKafka
from streamer.settings import WorkerSettings
from tests.conftest import local_kafka
from tests.videofactory import make_video

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BATCH_MAX_EVENTS = WorkerSettings().batch_max_events  # the harness keeps the default


@pytest.fixture(scope="module")
def video_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uploads")
    make_video(root / "a.mp4", codec="h264", seconds=1.0, width=96, height=64, fps=10)
    return root


def test_killed_worker_loses_no_verdict(kafka_broker: Any, video_root: Path, tmp_path: Path) -> None:
    topics = new_topics("kill")
    topics.create(kafka_broker.bootstrap_servers)
    ids = [f"kill-{i:03d}" for i in range(200)]
    uri = (video_root / "a.mp4").as_uri()
    reader = TopicReader(kafka_broker.bootstrap_servers, topics.verdicts)
    with (
        WorkerProcess(kafka_broker.bootstrap_servers, topics, video_root, tmp_path / "w1") as first,
        WorkerProcess(kafka_broker.bootstrap_servers, topics, video_root, tmp_path / "w2") as second,
    ):
        first.start()
        started = time.monotonic()
        send_all(kafka_broker.bootstrap_servers, topics.uploads, [(v, upload_event(v, uri)) for v in ids])
        # Kill the worker with SIGKILL once it is part-way through.
        deadline = time.monotonic() + 120
        while len({r["video_id"] for r in reader.poll(timeout_ms=50)}) < 10 and time.monotonic() < deadline:
            pass
        first.kill()
        before_kill = len({r["video_id"] for r in reader.poll()})
        assert 0 < before_kill < len(ids), "the kill must land mid-stream"
        second.start()
        try:
            records = reader.wait_for(set(ids), timeout_seconds=240, workers=(first, second))
        finally:
            second.terminate()
            reader.close()
    elapsed = time.monotonic() - started
    per_id = Counter(r["video_id"] for r in records)
    assert set(per_id) == set(ids)
    errors = [r["error"] for r in records if r["verdict"] == "error"]
    assert errors == [], errors[:3]
    duplicates = sum(count - 1 for count in per_id.values())
    workers = Counter(r["worker"] for r in records)
    print(
        f"kill test: {len(ids)} events, {len(per_id)} ids with verdicts, {len(records)} verdicts, "
        f"{duplicates} duplicates, {before_kill} answered before SIGKILL, {elapsed:.1f} s, by worker {dict(workers)}"
    )
    assert set(workers) == {"w1", "w2"}, "the restarted worker must have taken over"
    # Only the killed worker's events in flight (taken, not committed) are answered again.
    assert duplicates <= BATCH_MAX_EVENTS, per_id.most_common(10)


def test_scaling_up_and_down_mid_stream_loses_no_verdict(kafka_broker: Any, video_root: Path, tmp_path: Path) -> None:
    """Rebalances while events are in flight: a second worker joins, then the first leaves.

    Each rebalance revokes every partition; events fetched before it are
    skipped by Faust and must be fetched again, never committed unprocessed.
    """
    topics = new_topics("scale")
    topics.create(kafka_broker.bootstrap_servers)
    uri = (video_root / "a.mp4").as_uri()
    batches = [[f"scale-{name}-{i:03d}" for i in range(count)] for name, count in (("a", 60), ("b", 60), ("c", 30))]
    ids = [v for batch in batches for v in batch]

    def submit(batch: list[str]) -> None:
        send_all(kafka_broker.bootstrap_servers, topics.uploads, [(v, upload_event(v, uri)) for v in batch])

    reader = TopicReader(kafka_broker.bootstrap_servers, topics.verdicts)
    with (
        WorkerProcess(kafka_broker.bootstrap_servers, topics, video_root, tmp_path / "w1") as first,
        WorkerProcess(kafka_broker.bootstrap_servers, topics, video_root, tmp_path / "w2") as second,
    ):
        first.start()
        submit(batches[0])
        reader.wait_for(set(batches[0][:1]), timeout_seconds=120, workers=(first,))
        second.start()  # rebalance 1: the partitions are shared out while w1 is busy
        submit(batches[1])
        reader.wait_for(set(batches[1][:1]), timeout_seconds=120, workers=(first, second))
        assert first.terminate() == 0, first.log_tail()  # rebalance 2, with batch b in flight: w2 takes over
        submit(batches[2])
        try:
            records = reader.wait_for(set(ids), timeout_seconds=240, workers=(first, second))
        finally:
            reader.close()
    per_id = Counter(r["video_id"] for r in records)
    assert set(per_id) == set(ids)
    assert [r for r in records if r["verdict"] == "error"] == []
    workers = Counter(r["worker"] for r in records)
    assert set(workers) == {"w1", "w2"}, workers
    print(f"scale test: {len(ids)} events, {len(records)} verdicts, by worker {dict(workers)}")


def test_sigterm_drains_and_a_restart_resumes_from_committed_offsets(
    kafka_broker: Any, video_root: Path, tmp_path: Path
) -> None:
    topics = new_topics("term")
    topics.create(kafka_broker.bootstrap_servers)
    uri = (video_root / "a.mp4").as_uri()
    first_ids = [f"term-a-{i}" for i in range(10)]
    send_all(kafka_broker.bootstrap_servers, topics.uploads, [(v, upload_event(v, uri)) for v in first_ids])
    reader = TopicReader(kafka_broker.bootstrap_servers, topics.verdicts)
    worker = WorkerProcess(kafka_broker.bootstrap_servers, topics, video_root, tmp_path / "w1").start()
    try:
        reader.wait_for(set(first_ids), timeout_seconds=120, workers=(worker,))
        assert worker.terminate() == 0, worker.log_tail()
        second_ids = [f"term-b-{i}" for i in range(5)]
        send_all(kafka_broker.bootstrap_servers, topics.uploads, [(v, upload_event(v, uri)) for v in second_ids])
        restarted = WorkerProcess(kafka_broker.bootstrap_servers, topics, video_root, tmp_path / "w2").start()
        try:
            reader.wait_for(set(second_ids), timeout_seconds=180, workers=(worker, restarted))
            # Once the restarted worker has committed every upload, every verdict it gives is on the
            # topic (an offset is committed only after its outcome): a first_id answered again would be.
            bootstrap, group = kafka_broker.bootstrap_servers, topics.uploads_group
            wait_caught_up(bootstrap, group, topics.uploads, timeout_seconds=60, workers=(restarted,))
            records = reader.read_to_end(timeout_seconds=30)
        finally:
            restarted.terminate()
    finally:
        reader.close()
    per_id = Counter(r["video_id"] for r in records)
    # After a clean stop nothing already answered is answered again.
    assert all(per_id[v] == 1 for v in first_ids), per_id


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A broker for one test that stops and restarts it (the session's broker is shared)."""
    with local_kafka(tmp_path / "kafka") as broker:
        yield broker


#: What the worker's Kafka clients log once they find the broker gone (aiokafka's messages).
BROKER_LOST = ("Unable connect to node", "marking coordinator dead", "Marking the coordinator dead")


def test_worker_recovers_from_a_broker_restart(own_broker: LocalKafka, video_root: Path, tmp_path: Path) -> None:
    bootstrap = own_broker.bootstrap_servers
    topics = new_topics("broker")
    topics.create(bootstrap)
    uri = (video_root / "a.mp4").as_uri()
    worker = WorkerProcess(bootstrap, topics, video_root, tmp_path / "w").start()
    reader = TopicReader(bootstrap, topics.verdicts)
    try:
        first = [f"broker-a-{i}" for i in range(10)]
        send_all(bootstrap, topics.uploads, [(v, upload_event(v, uri)) for v in first])
        reader.wait_for(set(first[:3]), timeout_seconds=120)
        reader.close()
        logged = len(worker.log_text())
        assert own_broker.stop(), "the broker was not running"
        # The broker stays down until the worker has noticed: its clients fail to reach it.
        wait_for(
            lambda: any(line in worker.log_text()[logged:] for line in BROKER_LOST),
            60,
            "the worker to log that the broker is gone",
            workers=(worker,),
        )
        own_broker.start(wait_seconds=120)
        assert own_broker.bootstrap_servers == bootstrap, "restarted on another port"
        second = [f"broker-b-{i}" for i in range(10)]
        send_all(bootstrap, topics.uploads, [(v, upload_event(v, uri)) for v in second])
        reader = TopicReader(bootstrap, topics.verdicts)
        records = reader.wait_for(set(first) | set(second), timeout_seconds=240, workers=(worker,))
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
    finally:
        reader.close()
        worker.terminate()
    assert {r["video_id"] for r in records} >= set(first) | set(second)
