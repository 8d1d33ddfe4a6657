"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from motionguard_dev.kafka_local import LocalKafka, LocalKafkaConfig, find_free_port
from tests.videofactory import VideoCache, ffmpeg_available


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> VideoCache:
    """Synthetic videos made with the real ffmpeg, each built once per session.

    ``videos.video(codec="vp9", seconds=1)`` takes
    :func:`tests.videofactory.make_video`'s keyword arguments;
    ``videos.file("name.ext", build)`` caches any other generated file.
    """
    if not ffmpeg_available():
        pytest.fail("ffmpeg and ffprobe must be installed to build the test videos")
    return VideoCache(tmp_path_factory.mktemp("videos"))


# --- a real Apache Kafka broker, shared by the streaming and deployment tests --------------
#
# ``kafka_broker`` is a running :class:`motionguard_dev.kafka_local.LocalKafka` (Apache Kafka 3.9.1,
# KRaft, single node) on a free port of 127.0.0.1 with a throw-away data dir; use
# ``kafka_broker.bootstrap_servers``.  Its jars come from ``~/.cache/motionguard/kafka/<version>``
# (downloaded with Maven on first use) or from ``$KAFKA_HOME`` when that is set.  Java is
# required: a missing Java/Maven makes these tests fail with a message that says so.


def kafka_home_from_env() -> Path | None:
    value = os.environ.get("KAFKA_HOME", "").strip()
    return Path(value) if value else None


@contextmanager
def local_kafka(data_dir: Path) -> Iterator[LocalKafka]:
    """A running single-node broker on a free port, its data in ``data_dir``; stopped on exit."""
    config = LocalKafkaConfig(port=find_free_port(), data_dir=data_dir, kafka_home=kafka_home_from_env())
    broker = LocalKafka(config)
    broker.start(wait_seconds=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real Kafka broker for the whole session, stopped at the end.

    Never stopped or restarted by a test: a test that does that gets a broker of
    its own from :func:`local_kafka`.
    """
    with local_kafka(tmp_path_factory.mktemp("kafka-broker") / "data") as broker:
        yield broker
