"""One real worker and one real console for the review tests (package scope), with a queue of real verdicts.

The worker scores real videos (tiny random model); the console samples every
ai_generated/real verdict for audit (fraction 1.0) so each scored video is
queued.  Hostile verdicts (an XSS video id and source, URIs out of the allowed
root) are written straight to the verdicts topic with their own policy
(``hostile``), as anyone who can write to the topic could.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from motionguard_dev.harness import REPO, TopicReader, WorkerProcess, new_topics, send_all, upload_event
from motionguard_dev.kafka_local import LocalKafka
from streamer.review.auth import add_user
from tests.streamer.review.console_harness import OPEN_CLIENTS, PASSWORD, ConsoleProcess
from tests.videofactory import VideoCache

XSS_ID = "<script>window.__xss=1</script>"
XSS_SOURCE = 'file:///nowhere/"><img src=x onerror="window.__xss=2">.mp4'


@dataclass
class ReviewRig:
    bootstrap: str
    worker: WorkerProcess
    console: ConsoleProcess
    topics: object
    root: Path
    tmp: Path
    scored: list[str]
    hostile: dict[str, str]

    def labels(self) -> list[dict[str, object]]:
        reader = TopicReader(self.bootstrap, self.worker.topics.labels)
        try:
            return list(reader.poll(1000))
        finally:
            reader.close()

    def new_console(self, **options: object) -> ConsoleProcess:
        return ConsoleProcess(
            bootstrap=self.bootstrap,
            topics=self.worker.topics,
            allowed_root=self.root,
            users_file=self.tmp / "users",
            log_dir=self.tmp / "console",
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


def hostile_verdict(video_id: str, source: str) -> bytes:
    return json.dumps(
        {
            "video_id": video_id, "verdict": "needs_review", "score": 0.5, "policy": "hostile", "source": source,
            "segments": [], "frames_scored": 0, "model": {"name": "x", "version": "v0", "untrained": True},
            "provenance": {"present": True, "state": "untrusted", "issuer": '<b onmouseover="x">Evil "issuer"</b>'},
            "error": None,
        }
    ).encode()  # fmt: skip


@pytest.fixture(scope="package")
def review_rig(
    kafka_broker: LocalKafka, videos: VideoCache, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReviewRig]:
    tmp = tmp_path_factory.mktemp("review")
    root = tmp / "videos"
    root.mkdir()
    bootstrap = kafka_broker.bootstrap_servers
    topics = new_topics("review")
    topics.create(bootstrap)
    sources = {
        f"walk-{i}": videos.video(codec="vp9", seconds=3, width=320, height=240, source=src)
        for i, src in enumerate(("testsrc2", "mandelbrot", "smptebars", "rgbtestsrc", "testsrc", "cellauto"))
    }
    uris = {}
    for name, path in sources.items():
        target = root / f"{name}.webm"
        target.write_bytes(path.read_bytes())
        uris[name] = target.as_uri()
    (root / "out-link.webm").symlink_to("/etc/hostname")
    add_user(tmp / "users", "bob", "moderator", PASSWORD)
    add_user(tmp / "users", "vera", "viewer", PASSWORD)
    # ann is added through the command line, as an operator would.
    subprocess.run(
        [sys.executable, "-m", "streamer", "review", "add-user", "ann", "--role", "moderator",
         "--users-file", str(tmp / "users"), "--password-stdin"],
        input=PASSWORD.encode(), cwd=REPO, check=True, capture_output=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MOTIONGUARD_")},
    )  # fmt: skip
    hostile = {
        "xss": XSS_ID,
        "traversal": "hostile-traversal",
        "symlink": "hostile-symlink",
        "private": "hostile-private",
    }
    send_all(
        bootstrap,
        topics.verdicts,
        [
            (None, hostile_verdict(XSS_ID, XSS_SOURCE)),
            ("hostile-traversal", hostile_verdict("hostile-traversal", f"file://{root}/{'../' * 16}etc/hostname")),
            ("hostile-symlink", hostile_verdict("hostile-symlink", (root / "out-link.webm").as_uri())),
            ("hostile-private", hostile_verdict("hostile-private", "http://127.0.0.1:9/video.mp4")),
        ],
    )
    with WorkerProcess(bootstrap, topics, root, tmp / "worker") as worker:
        worker.start()
        send_all(bootstrap, topics.uploads, [(name, upload_event(name, uri)) for name, uri in uris.items()])
        reader = TopicReader(bootstrap, topics.verdicts)
        records = reader.wait_for(set(uris), 120, workers=(worker,))
        reader.close()
        scored = [r["video_id"] for r in records if r.get("video_id") in uris and r.get("verdict") != "error"]
        assert len(scored) == len(uris), records
        console = ConsoleProcess(bootstrap, topics, root, tmp / "users", tmp / "console").start()
        try:
            yield ReviewRig(bootstrap, worker, console, topics, root, tmp, scored, hostile)
        finally:
            console.stop()
