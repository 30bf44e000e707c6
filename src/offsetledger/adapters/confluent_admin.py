"""Admin helpers over confluent-kafka (create topics, read a topic, committed
positions): see :mod:`offsetledger.adapters.confluent._admin`. Kept at this path
for existing imports."""

from offsetledger.adapters.confluent._admin import (
    committed_positions,
    create_topics,
    read_topic,
    topic_partitions,
)

__all__ = ["committed_positions", "create_topics", "read_topic", "topic_partitions"]
