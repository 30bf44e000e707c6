"""The ports over confluent-kafka (librdkafka): :class:`ConfluentConsumer` and
:class:`ConfluentProducer`, and admin helpers (:mod:`._admin`, also importable as
``offsetledger.adapters.confluent_admin``).

This package is the only place in offsetledger that knows Kafka's offset
conventions: the ports speak *positions* (next offset to read), and so does
``store_offsets(offsets=[TopicPartition(t, p, position)])`` — it stores the
offset exactly as given, whereas ``store_offsets(message=m)`` would add 1. The
adapter therefore only ever uses the ``offsets=`` form, and passes each
position's leader epoch and commit metadata along with it.

confluent-kafka is imported lazily: importing this package works without it, and
constructing a client without it raises :class:`ImportError` naming the extra to
install (``pip install 'offsetledger[kafka]'``).

Decisions, observed on librdkafka 2.16 against Apache Kafka 4.x:

* ``enable.auto.offset.store`` defaults to false here (the port is a
  manual-store consumer); an explicit true is rejected.
* Rebalances: the adapter assigns/unassigns itself (``incremental_*`` for the
  cooperative protocols: ``cooperative-sticky`` and KIP-848
  ``group.protocol=consumer``; ``assign``/``unassign`` for eager ones), so that
  inside ``on_assign`` the partitions are already assigned and inside
  ``on_revoke`` they still are (a final commit works). confluent-kafka would
  otherwise assign after the callback; the Python client has no
  ``rebalance_protocol()``, so the protocol is derived from the configuration.
* ``store``: librdkafka's ``store_offsets`` stores each assigned partition of the
  call and fails (``_STATE`` or ``_UNKNOWN_PARTITION``) only when *every*
  partition is unassigned. The adapter keeps the per-partition storing but never
  stays silent: the assigned partitions are stored, then
  :class:`PartitionNotAssignedError` names the unassigned ones. The check uses
  the assignment the adapter keeps from its own assign calls (``assignment()``
  is a round trip to librdkafka's main thread, too slow for every store); a
  partition missing there is confirmed with librdkafka before it is refused.
* ``commit``: a synchronous commit raises the *first* partition's error for the
  whole call although the other partitions were committed. The adapter then
  commits each partition on its own (same positions, so idempotent) to report
  the exact per-partition outcome.
* The producer defaults ``enable.idempotence`` to true and rejects
  ``acks``/``request.required.acks`` other than all/-1: with ``acks`` 0 or 1 a
  successful delivery report does not mean the write survives a leader change,
  and a stored position would then cover a lost output.
* A ``transactional.id`` belongs to :class:`ConfluentTransactionalProducer`;
  the plain :class:`ConfluentProducer` refuses it (``ConfigError``): librdkafka
  fails every produce of a transactional producer outside a transaction, with
  ``_STATE``, far from the configuration mistake.
* ``ConfluentConsumer.seek``: librdkafka drops the records it prefetched for the
  partition; the adapter drops those it buffered behind an error event, so the
  next poll starts at the seek position (the rewind after an aborted transaction).


Modules: ``_errors`` (error names, hints, the lazy import, loggers), ``_config``
(configuration checks and client creation), ``_convert`` (core <-> client values,
the hot-path constructors), ``_rebalance`` (assign/revoke/lost), ``_consumer``,
``_producer``, ``_txn`` (the transactional producer: error mapping, bounded
calls), ``_admin``.
"""

from offsetledger.adapters.confluent._config import validate_bootstrap_servers
from offsetledger.adapters.confluent._consumer import ConfluentConsumer
from offsetledger.adapters.confluent._errors import (
    _LIBRDKAFKA_LOG as _LIBRDKAFKA_LOG,  # chaos.py routes its admin client here
)
from offsetledger.adapters.confluent._errors import (
    DEFAULT_CONNECT_TIMEOUT,
    ERROR_HINTS,
    broker_error,
    error_info,
    hint_for,
    import_confluent_kafka,
)
from offsetledger.adapters.confluent._producer import ConfluentProducer, ReportCallback
from offsetledger.adapters.confluent._txn import (
    ConfluentTransactionalProducer,
    transaction_error,
    validate_transactional_config,
)
from offsetledger.core._names import reject_raw_client, validate_topic_name

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "ERROR_HINTS",
    "ConfluentConsumer",
    "ConfluentProducer",
    "ConfluentTransactionalProducer",
    "ReportCallback",
    "broker_error",
    "error_info",
    "hint_for",
    "import_confluent_kafka",
    "reject_raw_client",
    "transaction_error",
    "validate_bootstrap_servers",
    "validate_topic_name",
    "validate_transactional_config",
]
