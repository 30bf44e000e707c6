"""Check what a real broker holds: read the topics and the group's committed
positions back (through the confluent adapter) and run :func:`check_topics`."""

from __future__ import annotations

from collections.abc import Sequence

from offsetledger.checker._check import check_topics
from offsetledger.checker._report import Report
from offsetledger.core import TopicPartition

__all__ = ["check_broker"]


def check_broker(
    bootstrap: str,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    group: str,
    dead_letter: str | None = None,
    final_drain: bool = True,
    timeout: float = 120.0,
) -> Report:
    """Read every record of the ``inputs``, ``outputs`` and ``dead_letter`` topics and
    ``group``'s committed positions on the input partitions from the broker at
    ``bootstrap``, and check them. Needs the ``kafka`` extra; broker failures raise
    :class:`~offsetledger.core.BrokerError` with Kafka's error name."""
    from offsetledger.adapters.confluent_admin import (  # noqa: PLC0415 - optional extra
        committed_positions,
        read_topic,
    )

    in_records = [r for topic in inputs for r in read_topic(bootstrap, topic, timeout=timeout)]
    out_topics = [*outputs, *([dead_letter] if dead_letter else [])]
    out_records = [r for topic in out_topics for r in read_topic(bootstrap, topic, timeout=timeout)]
    committed: dict[TopicPartition, int] = {}
    for topic in inputs:
        for tp, position in committed_positions(bootstrap, group, topic).items():
            if position.position is not None:
                committed[tp] = position.position
    return check_topics(
        in_records,
        out_records,
        committed,
        dead_letter=dead_letter,
        group=group,
        final_drain=final_drain,
    )
