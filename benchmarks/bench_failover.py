"""The worker while a broker of a three-node Kafka cluster dies.

    .venv/bin/python -m benchmarks.bench_failover [--quick] [--seconds 60] [--rate 2]

For each of two failures - the leader of uploads partition 0 killed (SIGKILL), then the
leader of verdicts partition 0 - on a fresh three-node KRaft cluster
(:class:`motionguard_dev.kafka_local.LocalKafkaCluster`, topics with three replicas and
``min.insync.replicas`` 2) and a real ``motionguard worker`` process:

1. upload events (a 1-second 96x64 H.264 file, distinct ``video_id``s, ``uploaded_at`` = the
   moment each was sent, ``acks=all``) at a steady rate for ``--seconds``;
2. a third of the way in, the chosen leader is killed; it is not restarted during the run;
3. every upload's outcome is awaited on the verdicts topic.

Reported per failure: uploads, verdicts, duplicates, upload-to-verdict p50/p95/p99 over the
run and over the uploads sent in the 20 s after the kill, the longest time without any
verdict after the kill (how long verdicts stop), and the time from the kill to the first
verdict of an upload sent after it.  The model is the tiny random test model, so the
latency is Kafka's and the worker's, not the model's.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient

from benchmarks.common import load_average, log, machine, now_utc, save
from benchmarks.corpus import DEFAULT_CACHE, Corpus, VideoSpec
from motionguard_dev.harness import TopicReader, Topics, WorkerProcess, producer, upload_event
from motionguard_dev.kafka_local import LocalKafkaCluster, LocalKafkaConfig, find_free_port

WORKER_ENV = {"MOTIONGUARD_TOPIC_REPLICATION_FACTOR": "3", "MOTIONGUARD_TOPIC_MIN_INSYNC_REPLICAS": "2"}


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _leader(bootstrap: str, topic: str, partition: int) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        (description,) = admin.describe_topics([topic])
    finally:
        admin.close()
    return next(p["leader_id"] for p in description["partitions"] if p["partition_index"] == partition)


def run_failure(killed: str, video: Path, work: Path, seconds: float, rate: float) -> dict[str, Any]:
    config = LocalKafkaConfig(port=find_free_port(), data_dir=work / f"cluster-{killed}")
    topics = Topics(prefix=f"failover-{killed}-{uuid.uuid4().hex[:6]}")
    with LocalKafkaCluster(config, brokers=3) as cluster:
        bootstrap = cluster.bootstrap_servers
        worker = WorkerProcess(bootstrap, topics, video.parent, work / f"worker-{killed}", extra_env=WORKER_ENV)
        with worker:
            worker.start(wait_ready_seconds=180)
            reader = TopicReader(bootstrap, topics.verdicts)
            prod = producer(bootstrap)
            sent: dict[str, datetime] = {}
            kill_at = seconds / 3
            killed_at: datetime | None = None
            victim = -1
            started = time.monotonic()
            try:
                for i in range(int(seconds * rate)):
                    due = started + i / rate
                    while time.monotonic() < due:
                        reader.poll(timeout_ms=20)
                    if killed_at is None and time.monotonic() - started >= kill_at:
                        victim = _leader(bootstrap, topics.uploads if killed == "uploads" else topics.verdicts, 0)
                        killed_at = datetime.now(UTC)
                        cluster.node(victim).kill()
                        log(f"killed node {victim}, the leader of {killed} partition 0")
                    video_id = f"{killed}-{i:05d}"
                    now = datetime.now(UTC)
                    sent[video_id] = now
                    prod.send(topics.uploads, key=video_id.encode(), value=upload_event(video_id, video.as_uri(),
                              uploaded_at=now.isoformat().replace("+00:00", "Z")))  # fmt: skip
                prod.flush(60)
                records = reader.wait_for(set(sent), timeout_seconds=300, workers=(worker,))
            finally:
                prod.close()
                reader.close()
                worker.terminate()
    assert killed_at is not None
    per_id = Counter(r["video_id"] for r in records)
    first = {r["video_id"]: r for r in reversed(records)}  # the first verdict of each upload
    latencies = [float(r["upload_to_verdict_seconds"]) for r in first.values()]
    window = [
        float(r["upload_to_verdict_seconds"])
        for video_id, r in first.items()
        if 0 <= (sent[video_id] - killed_at).total_seconds() < 20
    ]
    decided = sorted(_parse_time(r["decided_at"]) for r in records)
    after = [t for t in decided if t >= killed_at]
    gaps = [(b - a).total_seconds() for a, b in zip([killed_at, *after[:-1]], after, strict=True)]
    sent_after = [_parse_time(r["decided_at"]) for v, r in first.items() if sent[v] >= killed_at]
    return {
        "killed": f"leader of {killed} partition 0 (node {victim})",
        "uploads": len(sent),
        "verdicts": len(records),
        "duplicates": sum(count - 1 for count in per_id.values()),
        "errors": sum(1 for r in first.values() if r["verdict"] == "error"),
        "p50_seconds": _percentile(latencies, 0.5),
        "p95_seconds": _percentile(latencies, 0.95),
        "p99_seconds": _percentile(latencies, 0.99),
        "after_kill_p50_seconds": _percentile(window, 0.5),
        "after_kill_p95_seconds": _percentile(window, 0.95),
        "after_kill_p99_seconds": _percentile(window, 0.99),
        "longest_pause_seconds": max(gaps) if gaps else None,
        "first_new_verdict_seconds": (min(sent_after) - killed_at).total_seconds() if sent_after else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seconds", type=float, default=60.0, help="How long uploads are sent, per failure.")
    parser.add_argument("--rate", type=float, default=2.0, help="Uploads per second.")
    parser.add_argument("--quick", action="store_true", help="30 s per failure.")
    args = parser.parse_args(argv)
    seconds = 30.0 if args.quick else args.seconds
    started_at, load_start = now_utc(), load_average()
    spec = VideoSpec(name="failover-96x64-1s", width=96, height=64, fps=10, seconds=1.0, bitrate_kbps=None)
    work = Path(tempfile.mkdtemp(prefix="motionguard-failover-"))
    try:
        video = work / "videos" / "a.mp4"
        video.parent.mkdir(parents=True)
        shutil.copy(Corpus(args.cache_dir / "corpus").video(spec), video)
        runs = [run_failure(killed, video, work, seconds, args.rate) for killed in ("uploads", "verdicts")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for run in runs:
        log(f"{run['killed']}: {run}")
    command = " ".join(["python -m benchmarks.bench_failover", *(argv if argv is not None else [])])
    save(
        "failover",
        {
            "started_at": started_at,
            "load_average_start": load_start,
            "machine": machine(),
            "command": command.strip(),
            "seconds": seconds,
            "rate_per_second": args.rate,
            "worker_env": WORKER_ENV,
            "runs": runs,
        },
        args.cache_dir,
    )


if __name__ == "__main__":
    main()
