"""A deterministic in-process Kafka: logs, a group coordinator and clients on a virtual clock."""
