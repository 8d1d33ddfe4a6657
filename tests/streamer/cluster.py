"""What the tests that kill brokers ask of a three-node cluster (the ``cluster`` fixture is in conftest.py)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from motionguard_dev.kafka_local import LocalKafkaCluster


def partition_state(cluster: LocalKafkaCluster, topic: str) -> dict[int, dict[str, Any]]:
    """partition -> {"leader": node id, "isr": [node ids]}; empty while the metadata is unavailable."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers, request_timeout_ms=10_000)
    except KafkaError:
        return {}
    try:
        (description,) = admin.describe_topics([topic])
    except KafkaError:
        return {}
    finally:
        admin.close()
    return {
        p["partition_index"]: {"leader": p["leader_id"], "isr": sorted(p["isr_nodes"])}
        for p in description["partitions"]
    }
