"""Create the worker's four topics where missing, before its consumers subscribe.

Faust ignores a source topic that does not exist when it joins the group and
would not consume it until a later rebalance, so the worker creates them
first (``MOTIONGUARD_CREATE_TOPICS``), through kafka-python's admin client,
with the partitions, replication factor and ``min.insync.replicas`` of its
settings.  A topic that exists is left as it is.
"""

from __future__ import annotations

import logging
import time

from streamer.settings import WorkerSettings

logger = logging.getLogger(__name__)


def ensure_topics(settings: WorkerSettings, timeout_seconds: float = 60.0) -> list[str]:
    """Create the four topics where missing, before the consumer subscribes.

    Faust ignores a source topic that does not exist when it joins the group
    and would not consume it until a later rebalance, so the worker creates
    them first.  Returns the names it created.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            admin = KafkaAdminClient(client_id=f"{settings.app_id}-admin", **settings.kafka_python_options())
            break
        except KafkaError as e:
            if time.monotonic() > deadline:
                raise
            logger.warning("Kafka not reachable yet (%s); retrying", e)
            time.sleep(1.0)
    created = []
    try:
        existing = set(admin.list_topics())
        for name in settings.topics.all():
            if name in existing:
                continue
            try:
                topic = NewTopic(
                    name,
                    settings.topic_partitions,
                    settings.topic_replication_factor,
                    topic_configs={"min.insync.replicas": str(settings.topic_min_insync_replicas)},
                )
                admin.create_topics([topic])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    if created:
        logger.info(
            "created topics %s with %d partitions, %d replicas, min.insync.replicas %d",
            created,
            settings.topic_partitions,
            settings.topic_replication_factor,
            settings.topic_min_insync_replicas,
        )
    return created
