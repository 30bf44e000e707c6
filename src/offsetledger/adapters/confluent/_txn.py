"""ConfluentTransactionalProducer: the TransactionalProducerPort over confluent_kafka.Producer.

Decisions, from librdkafka's transactional API (rdkafka.h, INTRODUCTION.md):

* Errors: a ``KafkaException`` whose ``KafkaError`` says ``fatal()`` becomes a
  fatal :class:`TransactionError` (fenced, or an unrecoverable client state: close
  and restart), ``txn_requires_abort()`` an abortable one, ``retriable()`` a
  retriable one (repeat the same call), anything else a fatal one (unknown client
  state: restarting is the safe answer).
* Every blocking call is bounded. ``send_offsets_to_transaction`` can block well
  past its timeout while the group coordinator is unavailable (librdkafka#5456):
  it runs on a worker thread and, when it has not returned after ``timeout``
  (plus a small grace), a retriable ``_TIMED_OUT`` is raised. The worker may still
  finish later; the caller must abort (or retry) before committing: the adapter
  refuses :meth:`commit_transaction` while an abandoned call is still running.
* Configuration: ``transactional.id`` is required (a non-empty string);
  ``enable.idempotence`` may not be false (librdkafka implies it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from offsetledger.adapters.confluent._errors import (
    DEFAULT_CONNECT_TIMEOUT,
    _kafka_error,
    import_confluent_kafka,
)
from offsetledger.adapters.confluent._offsets import client_positions
from offsetledger.adapters.confluent._producer import ConfluentProducer
from offsetledger.core import StoredPosition, TransactionError
from offsetledger.core._errors import ConfigError

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["ConfluentTransactionalProducer", "transaction_error", "validate_transactional_config"]

_GRACE = 1.0  # seconds past a call's timeout before the worker is given up


def validate_transactional_config(config: Mapping[str, object]) -> None:
    """Raise :class:`ConfigError` for a configuration no transactional producer can use."""
    tid = config.get("transactional.id")
    if tid is None:
        raise ConfigError("transactional.id", "required for a transactional producer")
    if not isinstance(tid, str) or not tid.strip():
        raise ConfigError("transactional.id", f"must be a non-empty string, got {tid!r}")
    idem = config.get("enable.idempotence", True)
    if idem in (False, "false", "False", 0, "0"):
        raise ConfigError(
            "enable.idempotence", "a transactional producer is idempotent; do not set it to false"
        )


def transaction_error(exc: BaseException, what: str) -> TransactionError:
    """A librdkafka error of a transactional call as a :class:`TransactionError`."""
    err = _kafka_error(exc)
    if err is None:
        return TransactionError(type(exc).__name__, f"{what}: {exc}", fatal=True)
    name = err.name()
    text = f"{what}: {err.str()}"
    if err.fatal():
        return TransactionError(name, text, fatal=True)
    if err.txn_requires_abort():
        return TransactionError(name, text, abortable=True)
    if err.retriable():
        return TransactionError(name, text, retriable=True)
    return TransactionError(name, text, fatal=True)


class ConfluentTransactionalProducer(ConfluentProducer):
    """:class:`~offsetledger.core.TransactionalProducerPort` over
    ``confluent_kafka.Producer`` with a ``transactional.id`` (see the module)."""

    _TRANSACTIONAL = True

    def __init__(
        self,
        config: Mapping[str, object],
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        queue_full_timeout: float = 30.0,
    ) -> None:
        validate_transactional_config(config)
        super().__init__(
            config, connect_timeout=connect_timeout, queue_full_timeout=queue_full_timeout
        )
        self._tp_class = _tp_class()
        self._abandoned: threading.Thread | None = None

    def _call(self, what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except self._kafka_exception as exc:
            raise transaction_error(exc, what) from exc

    def init_transactions(self, timeout: float) -> None:
        self._call("init_transactions", lambda: self._producer.init_transactions(timeout))

    def begin_transaction(self) -> None:
        self._call("begin_transaction", self._producer.begin_transaction)

    def send_offsets_to_transaction(
        self, positions: Sequence[StoredPosition], group_metadata: object, timeout: float
    ) -> None:
        parts = client_positions(self._tp_class, positions)
        outcome: list[BaseException | None] = []

        def work() -> None:
            try:
                self._producer.send_offsets_to_transaction(parts, group_metadata, timeout)
                outcome.append(None)
            except BaseException as exc:  # handed to the caller's thread
                outcome.append(exc)

        worker = threading.Thread(target=work, name="offsetledger-send-offsets", daemon=True)
        worker.start()
        worker.join(timeout + _GRACE)
        if worker.is_alive():
            self._abandoned = worker
            raise TransactionError(
                "_TIMED_OUT",
                f"send_offsets_to_transaction did not return within {timeout} s (the group "
                "coordinator may be unavailable, librdkafka#5456); abort the transaction",
                retriable=True,
            )
        if outcome and outcome[0] is not None:
            raise transaction_error(outcome[0], "send_offsets_to_transaction") from outcome[0]

    def _no_abandoned(self, what: str) -> None:
        worker = self._abandoned
        if worker is not None and worker.is_alive():
            raise TransactionError(
                "_STATE",
                f"{what}: an earlier send_offsets_to_transaction is still running; abort",
                abortable=True,
            )
        self._abandoned = None

    def commit_transaction(self, timeout: float) -> None:
        self._no_abandoned("commit_transaction")
        self._call("commit_transaction", lambda: self._producer.commit_transaction(timeout))
        self._serve_local()

    def abort_transaction(self, timeout: float) -> None:
        worker = self._abandoned
        if worker is not None:
            worker.join(timeout)
            if worker.is_alive():
                raise TransactionError(
                    "_TIMED_OUT",
                    "abort_transaction: send_offsets_to_transaction still running",
                    retriable=True,
                )
            self._abandoned = None
        self._call("abort_transaction", lambda: self._producer.abort_transaction(timeout))
        self._serve_local()


def _tp_class() -> type[confluent_kafka.TopicPartition]:
    return import_confluent_kafka().TopicPartition  # type: ignore[no-any-return]
