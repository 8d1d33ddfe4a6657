"""The streaming worker under load, on a real local Apache Kafka.

    .venv/bin/python -m benchmarks.bench_worker [--quick] [--seconds 180] [--rate auto] [--burst 48]

1. Starts a single-node Kafka (:mod:`motionguard_dev.kafka_local`) with a throw-away
   data directory and a real ``motionguard worker`` process
   (``motionguard_dev/harness.py``'s :class:`WorkerProcess`) with ViT-B-32,
   random weights, CPU, 8 frames per video, the worker's default batching
   (``batch_max_events`` 8, ``batch_window_ms`` 50, 2 decode threads).
2. Warm-up and capacity probe: a burst of videos, timed until the last
   verdict; the sustained rate defaults to 70% of that capacity.
3. Sustained phase: upload events (10-second 720p H.264 files, distinct
   ``video_id``s) at a steady rate for ``--seconds``; each event carries
   ``uploaded_at`` = the moment it was sent.
4. Burst phase (the second run): ``--burst`` events at once; the verdict
   count over time shows the backlog draining.

Reported: throughput, p50/p95/p99 of upload-to-verdict latency (the
verdict's ``decided_at`` minus the event's ``uploaded_at``), model batch
sizes (from the worker's own ``/metrics`` histograms), errors and dead
letters, and the worker's resident memory sampled every second (growth is
measured from the end of warm-up to the end of the run).
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import load_average, log, machine, now_utc, relpath, save
from benchmarks.corpus import DEFAULT_CACHE, Corpus, describe, h264_720p_set
from motionguard_dev.harness import TopicReader, Topics, WorkerProcess, producer, upload_event
from motionguard_dev.kafka_local import LocalKafka, LocalKafkaConfig, find_free_port

WORKER_ARGS = ("--model", "ViT-B-32", "--pretrained", "none", "--device", "cpu")
WORKER_ENV = {
    "MOTIONGUARD_FRAMES": "8",
    "MOTIONGUARD_BATCH_WINDOW_MS": "50",
    "MOTIONGUARD_BATCH_MAX_EVENTS": "8",
    "MOTIONGUARD_DECODE_WORKERS": "2",
}


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _children_rss_kib(pid: int) -> int:
    """RSS of the worker's ffmpeg/ffprobe children (a child caught between fork and exec
    would show the parent's shared pages, so only these two are counted)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, _, rest = stat.read_text().rpartition(")")
            fields = rest.split()
        except OSError:
            continue
        if int(fields[1]) == pid and name.rsplit("(", 1)[-1] in ("ffmpeg", "ffprobe"):
            total += _rss_kib(int(stat.parent.name)) or 0
    return total


class MemorySampler(threading.Thread):
    """Samples the worker's RSS (and its ffmpeg children's) every ``interval`` seconds."""

    def __init__(self, pid: int, started: float, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.started, self.interval = pid, started, interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            rss = _rss_kib(self.pid)
            if rss is None:
                return
            self.samples.append((time.monotonic() - self.started, rss, _children_rss_kib(self.pid)))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def _histogram(metrics: dict[str, float], name: str) -> dict[str, Any]:
    buckets = []
    for key, value in metrics.items():
        if key.startswith(f"{name}_bucket{{"):
            bound = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if bound == "+Inf" else float(bound), value))
    buckets.sort()
    count = metrics.get(f"{name}_count", 0.0)
    total = metrics.get(f"{name}_sum", 0.0)
    per_bucket: dict[str, int] = {}
    previous = 0.0
    for upper, cumulative in buckets:
        per_bucket["+Inf" if math.isinf(upper) else f"<={upper:g}"] = int(cumulative - previous)
        previous = cumulative
    return {"count": int(count), "mean": total / count if count else math.nan, "buckets": per_bucket}


def _diff_histograms(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    count = after["count"] - before["count"]
    total = after["mean"] * after["count"] - (before["mean"] * before["count"] if before["count"] else 0.0)
    return {
        "count": count,
        "mean": total / count if count else math.nan,
        "buckets": {k: v - before["buckets"].get(k, 0) for k, v in after["buckets"].items()},
    }


class Load:
    """Sends upload events and collects their verdicts."""

    def __init__(self, bootstrap: str, topics: Topics, videos: list[Path]) -> None:
        self.bootstrap, self.topics, self.videos = bootstrap, topics, videos
        self.producer = producer(bootstrap)
        self.reader = TopicReader(bootstrap, topics.verdicts)
        self.dead_letters = TopicReader(bootstrap, topics.dead_letters)
        self.sent: dict[str, float] = {}
        self.counter = 0

    def send(self, prefix: str) -> str:
        video = self.videos[self.counter % len(self.videos)]
        self.counter += 1
        video_id = f"{prefix}-{self.counter:05d}"
        uploaded_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.producer.send(
            self.topics.uploads,
            key=video_id.encode(),
            value=upload_event(video_id, video.resolve().as_uri(), uploaded_at=uploaded_at),
        )
        self.sent[video_id] = time.monotonic()
        return video_id

    def wait(self, ids: set[str], timeout_seconds: float) -> list[tuple[float, dict[str, Any]]]:
        """Poll until every id has a verdict; returns (arrival monotonic time, verdict) for those ids."""
        arrivals: dict[str, tuple[float, dict[str, Any]]] = {}
        seen = 0
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline and not ids <= arrivals.keys():
            records = self.reader.poll(200)
            now = time.monotonic()
            for record in records[seen:]:
                video_id = record.get("video_id")
                if video_id in ids and video_id not in arrivals:
                    arrivals[video_id] = (now, record)
            seen = len(records)
        missing = ids - arrivals.keys()
        if missing:
            raise RuntimeError(f"no verdict for {len(missing)} uploads after {timeout_seconds} s")
        return sorted(arrivals.values(), key=lambda item: item[0])

    def close(self) -> None:
        self.producer.close()
        self.reader.close()
        self.dead_letters.close()


def _latency_stats(verdicts: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    latencies = [
        (_parse_time(v["decided_at"]) - _parse_time(v["uploaded_at"])).total_seconds()
        for _, v in verdicts
        if v.get("uploaded_at") and v.get("decided_at")
    ]
    processing = [float(v["processing_seconds"]) for _, v in verdicts if v.get("processing_seconds") is not None]
    return {
        "count": len(latencies),
        "p50_seconds": _percentile(latencies, 50),
        "p95_seconds": _percentile(latencies, 95),
        "p99_seconds": _percentile(latencies, 99),
        "max_seconds": max(latencies, default=math.nan),
        "mean_processing_seconds": statistics.fmean(processing) if processing else math.nan,
        "errors": sum(1 for _, v in verdicts if v.get("verdict") == "error"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    corpus = Corpus(args.cache_dir / "corpus")
    videos = h264_720p_set(corpus, 12 if args.quick else 22)
    work = args.cache_dir / "worker-run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    kafka = LocalKafka(
        LocalKafkaConfig(
            port=find_free_port(),
            data_dir=work / "kafka",
            extra_properties={"group.initial.rebalance.delay.ms": "0"},
        )
    )
    log("starting Kafka")
    kafka.start(wait_seconds=180)
    topics = Topics(prefix=f"bench-{uuid.uuid4().hex[:8]}", partitions=4)
    topics.create(kafka.bootstrap_servers)
    worker = WorkerProcess(
        bootstrap=kafka.bootstrap_servers,
        topics=topics,
        allowed_root=corpus.root.resolve(),
        data_dir=work / "worker",
        extra_env=WORKER_ENV,
        args=WORKER_ARGS,
    )
    load: Load | None = None
    memory: MemorySampler | None = None
    try:
        log("starting the worker")
        worker.start(wait_ready_seconds=180)
        assert worker.process is not None
        t0 = time.monotonic()
        memory = MemorySampler(worker.process.pid, t0)
        memory.start()
        load = Load(kafka.bootstrap_servers, topics, videos)

        # -- warm-up and capacity probe --------------------------------------------------
        probe_count = 8 if args.quick else 16
        log(f"warm-up: {probe_count} uploads at once")
        started = time.monotonic()
        ids = {load.send("warmup") for _ in range(probe_count)}
        load.producer.flush(30)
        warm = load.wait(ids, 600)
        capacity = probe_count / (warm[-1][0] - started)
        rate = capacity * args.load_fraction if args.rate == "auto" else float(args.rate)
        warm_end = time.monotonic() - t0
        metrics_before = worker.metrics()
        log(f"capacity probe: {capacity:.2f} videos/s; sustained rate {rate:.2f}/s for {args.seconds} s")

        # -- sustained -------------------------------------------------------------------
        ids = set()
        sustained_start = time.monotonic()
        next_send = sustained_start
        while time.monotonic() - sustained_start < args.seconds:
            ids.add(load.send("steady"))
            next_send += 1.0 / rate
            load.producer.flush(10)
            time.sleep(max(0.0, next_send - time.monotonic()))
        sent_seconds = time.monotonic() - sustained_start
        steady = load.wait(ids, 900)
        steady_end = steady[-1][0]
        metrics_after = worker.metrics()
        sustained_rss_end = time.monotonic() - t0
        sustained = {
            "seconds": sent_seconds,
            "uploads": len(ids),
            "offered_rate_per_second": len(ids) / sent_seconds,
            "throughput_per_second": len(ids) / (steady_end - sustained_start),
            "drain_after_last_send_seconds": steady_end - (sustained_start + sent_seconds),
            **_latency_stats(steady),
            "batch_videos": _diff_histograms(
                _histogram(metrics_after, "motionguard_model_batch_videos"),
                _histogram(metrics_before, "motionguard_model_batch_videos"),
            ),
            "batch_frames": _diff_histograms(
                _histogram(metrics_after, "motionguard_model_batch_frames"),
                _histogram(metrics_before, "motionguard_model_batch_frames"),
            ),
        }
        log(f"sustained: {sustained['throughput_per_second']:.2f}/s, p50 {sustained['p50_seconds']:.2f} s, "
            f"p95 {sustained['p95_seconds']:.2f} s, p99 {sustained['p99_seconds']:.2f} s")  # fmt: skip

        # -- burst -----------------------------------------------------------------------
        time.sleep(3)
        log(f"burst: {args.burst} uploads at once")
        burst_start = time.monotonic()
        ids = {load.send("burst") for _ in range(args.burst)}
        load.producer.flush(30)
        burst_verdicts = load.wait(ids, 1800)
        metrics_end = worker.metrics()
        drain = burst_verdicts[-1][0] - burst_start
        timeline = [
            (round(at - burst_start, 2), i + 1) for i, (at, _) in enumerate(burst_verdicts)
        ]  # (seconds since the burst, verdicts so far)
        burst = {
            "uploads": args.burst,
            "drain_seconds": drain,
            "throughput_per_second": args.burst / drain,
            **_latency_stats(burst_verdicts),
            "timeline": timeline,
            "batch_videos": _diff_histograms(
                _histogram(metrics_end, "motionguard_model_batch_videos"),
                _histogram(metrics_after, "motionguard_model_batch_videos"),
            ),
            "batch_frames": _diff_histograms(
                _histogram(metrics_end, "motionguard_model_batch_frames"),
                _histogram(metrics_after, "motionguard_model_batch_frames"),
            ),
        }
        log(f"burst drained in {drain:.1f} s ({burst['throughput_per_second']:.2f}/s), {burst['errors']} errors")
        dead = load.dead_letters.poll(1000)
        memory.stop()
        samples = memory.samples
        after_warm = [rss for t, rss, _ in samples if warm_end <= t <= warm_end + 30]
        at_end = [rss for t, rss, _ in samples if sustained_rss_end - 30 <= t <= sustained_rss_end]
        rss: dict[str, Any] = {
            "interval_seconds": memory.interval,
            "after_warmup_mib": statistics.median(after_warm) / 1024 if after_warm else math.nan,
            "end_of_sustained_mib": statistics.median(at_end) / 1024 if at_end else math.nan,
            "end_of_burst_mib": samples[-1][1] / 1024 if samples else math.nan,
            "max_mib": max(rss for _, rss, _ in samples) / 1024,
            "max_children_mib": max(child for _, _, child in samples) / 1024,
            "samples": [(round(t, 1), round(r / 1024, 1), round(c / 1024, 1)) for t, r, c in samples],
        }
        rss["growth_sustained"] = rss["end_of_sustained_mib"] / rss["after_warmup_mib"] - 1
        rss["growth_including_burst"] = rss["end_of_burst_mib"] / rss["after_warmup_mib"] - 1
        processed = {k: v for k, v in metrics_end.items() if k.startswith("motionguard_videos_processed_total")}
        return {
            "worker_command": f"python -m streamer --log-level info worker {' '.join(WORKER_ARGS)}",
            "worker_env": WORKER_ENV,
            "capacity_probe_per_second": capacity,
            "warmup_uploads": probe_count,
            "sustained": sustained,
            "burst": burst,
            "rss": rss,
            "dead_letters": len(dead),
            "videos_processed_total": processed,
            "errors_total": {k: v for k, v in metrics_end.items() if k.startswith("motionguard_errors_total")},
            "video": describe(videos[0]),
            "videos": [relpath(p) for p in videos],
        }
    finally:
        if memory is not None:
            memory.stop()
        if load is not None:
            load.close()
        if worker.process is not None:
            code = worker.terminate()
            log(f"worker exited with {code}")
        kafka.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="Length of the sustained phase.")
    parser.add_argument("--rate", default="auto", help="Uploads per second, or 'auto' (a fraction of capacity).")
    parser.add_argument("--load-fraction", type=float, default=0.7)
    parser.add_argument("--burst", type=int, default=None)
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (60.0 if args.quick else 180.0)
    args.burst = args.burst or (16 if args.quick else 48)
    started_at, load_start = now_utc(), load_average()
    result = run(args)
    save(
        "worker",
        {
            "started_at": started_at,
            "load_average_start": load_start,
            "machine": machine(),
            "command": "python -m benchmarks.bench_worker" + (" --quick" if args.quick else ""),
            **result,
        },
        args.cache_dir,
    )


if __name__ == "__main__":
    main()
