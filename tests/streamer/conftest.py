"""Fixtures of the streaming tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from motionguard_dev.kafka_local import LocalKafkaCluster, LocalKafkaConfig, find_free_port
from tests.conftest import kafka_home_from_env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    """Each module that uses it gets a cluster of its own: its tests kill the brokers."""
    config = LocalKafkaConfig(
        port=find_free_port(), data_dir=tmp_path_factory.mktemp("kafka-cluster"), kafka_home=kafka_home_from_env()
    )
    with LocalKafkaCluster(config, brokers=3) as running:
        yield running
