"""The Processor: consume → handle → produce → wait for delivery → complete → store.

A facade: construction and validation, lifecycle, :meth:`~Processor.step` /
:meth:`~Processor.run` / :meth:`~Processor.stop` and shutdown. The work is done by
one unit per module (see ``docs/runtime.md``): intake (chunks and ordering slots),
runners (where handlers run), the record flow (the state machine), the sender
(produce and delivery reports), retry timers, the offset keeper (ledger, store,
commit policy), backpressure and rebalance handling.

Threading: the consumer, the producer's callbacks and the ledger are touched only
from the thread calling :meth:`Processor.step` / :meth:`Processor.run`; handlers run
where the runner puts them. :meth:`Processor.stop` may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from offsetledger.core import (
    ConsumerPort,
    Executor,
    OffsetLedger,
    Outbound,
    ProducerPort,
    Record,
)
from offsetledger.core._ports import Clock, ProcessingObserver
from offsetledger.runtime._backpressure import Backpressure
from offsetledger.runtime._clock import SystemClock, ThreadPoolExecutorAdapter
from offsetledger.runtime._config import CommitMode, ProcessorConfig, check_processor_args
from offsetledger.runtime._contract import check_handler, is_batch_handler
from offsetledger.runtime._deadlines import Deadlines
from offsetledger.runtime._flow import RecordFlow
from offsetledger.runtime._intake import Intake
from offsetledger.runtime._lifecycle import LIFECYCLE, ProcessorState, ProcessorStateError
from offsetledger.runtime._loop import Loop
from offsetledger.runtime._metrics import MetricsHook, NullMetrics
from offsetledger.runtime._offsets import OffsetKeeper
from offsetledger.runtime._rebalance import Rebalancer
from offsetledger.runtime._runners import ProcessingTimeoutError, Runner, runner_for
from offsetledger.runtime._sender import Sender
from offsetledger.runtime._slowpath import ATTEMPTS_HEADER, DELIVERY_ATTEMPTS_HEADER
from offsetledger.runtime._timers import RetryTimers
from offsetledger.runtime._txn import (
    ProcessorMustRestartError,
    TransactionalKeeper,
    TransactionalProducer,
    check_transactional_args,
)
from offsetledger.runtime._work import Part

__all__ = [
    "ATTEMPTS_HEADER",
    "DELIVERY_ATTEMPTS_HEADER",
    "Handler",
    "ProcessingTimeoutError",
    "Processor",
    "ProcessorMustRestartError",
    "ProcessorState",
    "ProcessorStateError",
]

if TYPE_CHECKING:
    from offsetledger.health import HealthStatus

log = logging.getLogger("offsetledger.processor")

#: Threads of the pool the Processor builds when it is given no executor.
_DEFAULT_WORKERS = 8

Handler = Callable[[Record], Iterable[Outbound]]
"""Turns one record into the outputs to produce for it (may be empty). Raising
fails the attempt (see :class:`~offsetledger.runtime.RetryPolicy`). A batch handler
(:func:`~offsetledger.runtime.batch_handler`) takes a sequence of records instead."""


class Processor:
    """Runs ``handler`` over the records of ``topics`` with at-least-once delivery.

    A record's offset is stored (``position = offset + 1`` through the ledger's
    watermark) only once its handler returned and every output's delivery report
    succeeded, or its dead-letter write was acknowledged. A crash anywhere means
    redelivery, never loss.

    The records of one poll from one partition form a *chunk*, tracked by the
    ledger as one range; a handler run gets a slice of a chunk (UNORDERED: up to
    the executor's workers slices; inline: the whole chunk) or, under KEY and
    PARTITION ordering, the next record of every ready key or partition. A batch
    handler (:func:`~offsetledger.runtime.batch_handler`) gets a run's records in
    one call.

    Drive it with :meth:`run` (loops until :meth:`stop`) or call :meth:`step`
    repeatedly (one loop iteration; several Processors can share one thread). Use it
    as a context manager to stop and close it on exit.

    Raises :class:`~offsetledger.core.ConfigError` at construction when the consumer
    is not configured for manual offset storage and the chosen commit mode.
    """

    def __init__(
        self,
        consumer: ConsumerPort,
        producer: ProducerPort,
        handler: Handler
        | Callable[[Sequence[Record]], Sequence[Any]]
        | Callable[[Record], Awaitable[Iterable[Outbound]]]
        | Callable[[Sequence[Record]], Awaitable[Sequence[Any]]],
        *,
        topics: Sequence[str],
        executor: Executor | None = None,
        clock: Clock | None = None,
        config: ProcessorConfig | None = None,
        metrics: MetricsHook | None = None,
        observer: ProcessingObserver | None = None,
    ) -> None:
        check_handler(handler, allow_async=True)
        cfg = config if config is not None else ProcessorConfig()
        check_processor_args(consumer, producer, topics, cfg)
        check_transactional_args(consumer, producer, cfg)
        self._consumer = consumer
        self._producer = producer
        self._handler = handler
        self._topics = tuple(topics)
        self._config = cfg
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._owns_executor = executor is None
        self._executor: Executor = (
            executor
            if executor is not None
            else ThreadPoolExecutorAdapter(min(cfg.max_in_flight_total, _DEFAULT_WORKERS))
        )
        self._metrics: MetricsHook = metrics if metrics is not None else NullMetrics()
        self._ledger = OffsetLedger(
            max_unfinished_per_partition=cfg.max_buffered_per_partition,
            max_unfinished_total=cfg.max_buffered_total,
            metadata_budget=cfg.metadata_budget,
            # binds the commit metadata to this group (another group's is ignored)
            group_id=group if isinstance(group := consumer.config.get("group.id"), str) else None,
        )
        attach = getattr(self._metrics, "attach", None)
        if callable(attach):
            attach(self._ledger)  # a HealthMonitor reads per-partition work from the ledger
        self._state = ProcessorState.CREATED
        self._lock = threading.Lock()
        self._stop_calls = 0
        self._abort = False
        self._in_step = False
        self._run_thread: int | None = None
        # the units (one module each), wired here and nowhere else
        batch = is_batch_handler(handler)
        self.batch = batch
        self._parts: dict[tuple[str, int], Part] = {}
        self._runner: Runner = runner_for(
            handler,
            batch=batch,
            executor=self._executor,
            clock=self._clock,
            processing_timeout=cfg.processing_timeout,
        )
        self._intake = Intake(
            self._ledger, cfg, self._clock, self._metrics, self._parts, batch=batch
        )
        self._timers = RetryTimers(self._clock)
        self._keeper: OffsetKeeper
        if cfg.commit_mode is CommitMode.TRANSACTIONAL:
            # every produce (dead letters included) goes through the transaction
            txn = TransactionalProducer(producer)  # type: ignore[arg-type]
            self._sender = Sender(txn)
            self._keeper = TransactionalKeeper(
                self._ledger,
                consumer,  # type: ignore[arg-type]
                txn,
                self._clock,
                cfg,
                metrics=self._metrics,
                parts=self._parts,
            )
        else:
            self._sender = Sender(producer)
            self._keeper = OffsetKeeper(
                self._ledger, consumer, self._clock, cfg, metrics=self._metrics, parts=self._parts
            )
        self._backpressure = Backpressure(consumer, self._ledger, cfg, self._metrics)
        self._flow = RecordFlow(
            config=cfg,
            clock=self._clock,
            metrics=self._metrics,
            observer=observer,
            intake=self._intake,
            runner=self._runner,
            sender=self._sender,
            timers=self._timers,
            keeper=self._keeper,
            flush=self._sender.flush,
            batch=batch,
        )
        self._deadlines = Deadlines(self._runner, self._flow, self._clock, cfg.processing_timeout)
        self._loop = Loop(
            consumer=consumer,
            config=cfg,
            clock=self._clock,
            metrics=self._metrics,
            ledger=self._ledger,
            parts=self._parts,
            intake=self._intake,
            runner=self._runner,
            sender=self._sender,
            timers=self._timers,
            keeper=self._keeper,
            backpressure=self._backpressure,
            flow=self._flow,
            deadlines=self._deadlines,
            state=lambda: self._state,
            aborting=lambda: self._abort,
        )
        self._rebalancer = Rebalancer(
            consumer=consumer,
            ledger=self._ledger,
            config=cfg,
            clock=self._clock,
            metrics=self._metrics,
            parts=self._parts,
            intake=self._intake,
            flow=self._flow,
            keeper=self._keeper,
            backpressure=self._backpressure,
            timers=self._timers,
            pump=self._loop.pump,
            idle=lambda: not self._runner.running() and not self._sender.awaiting,
            aborting=lambda: self._abort,
        )
        if isinstance(self._keeper, TransactionalKeeper):
            self._keeper.settle = self._loop.settle
            self._keeper.rewind = self._rewind
            self._keeper.split_partial = self._flow.split_partial

    def _rewind(self) -> None:
        if self._state in (ProcessorState.RUNNING, ProcessorState.REBALANCING):
            self._rebalancer.rewind()
        elif self._state is ProcessorState.DRAINING:  # shutting down: nothing is kept
            self._rebalancer.rewind(leaving=True)

    # -- public API -------------------------------------------------------------------

    @property
    def state(self) -> ProcessorState:
        """The lifecycle state."""
        return self._state

    @property
    def config(self) -> ProcessorConfig:
        return self._config

    @property
    def ledger(self) -> OffsetLedger:
        """The ledger (read it from the Processor's thread only)."""
        return self._ledger

    @property
    def in_flight(self) -> int:
        """Records handed to handlers and not finished (handler running, retrying, or
        waiting for delivery reports)."""
        return sum(c.in_flight for p in self._parts.values() for c in p.chunks)

    def health(self) -> HealthStatus:
        """The verdict of the :class:`~offsetledger.health.HealthMonitor` passed as
        ``metrics`` (see the Health page); healthy with no reasons when the metrics
        hook is not one. Call it from any thread: the monitor keeps its own lock."""
        check = getattr(self._metrics, "health", None)
        if callable(check):
            status: HealthStatus = check()
            return status
        # imported here: offsetledger.health imports the runtime (a module-level import
        # would be a cycle for a program that imports offsetledger.health first)
        from offsetledger.health import HealthStatus  # noqa: PLC0415

        return HealthStatus(ok=True, reasons=(), partitions={}, checked_at=self._clock.now())

    @property
    def stop_requested(self) -> bool:
        return self._stop_calls > 0

    def start(self) -> None:
        """Subscribe to the topics (CREATED → RUNNING). :meth:`step` and :meth:`run`
        call it when needed."""
        self._transition(ProcessorState.RUNNING)
        self._keeper.start()
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info("processor subscribed to %s", ", ".join(self._topics))

    def run(self) -> None:
        """Loop :meth:`step` until :meth:`stop` is called, then shut down (drain,
        flush, commit, close). Returns once CLOSED.

        :meth:`stop` from a signal handler (on this thread, at any point of the loop)
        only asks: the loop ends and ``run`` returns normally after the shutdown."""
        # set first: a stop() from a signal handler from here on only asks
        self._run_thread = threading.get_ident()
        try:
            if self._state is ProcessorState.CREATED:
                self.start()
            while self._stop_calls == 0 and self._state is ProcessorState.RUNNING:
                self.step()
        except BaseException:
            self._shutdown_after_failure()
            raise
        else:
            self._shutdown()
        finally:
            self._run_thread = None

    def step(self) -> None:
        """One loop iteration: poll a batch (rebalance callbacks run here), hand ready
        records to the runner, collect results, produce outputs, serve delivery
        reports, fire due retries, store moved watermarks, commit when due, pause or
        resume partitions. Waits at most about ``poll_timeout`` when idle.

        If :meth:`stop` was called during the step from the step's own thread (e.g.
        by a handler or a signal handler), the shutdown runs at its end."""
        # set first: a stop() from a signal handler from here on only asks
        self._in_step = True
        try:
            if self._state is ProcessorState.CREATED:
                self.start()
            if self._state is not ProcessorState.RUNNING:
                raise ProcessorStateError(
                    f"step() needs a RUNNING processor, it is {self._state.name}"
                )
            self._loop.step()
        finally:
            self._in_step = False
        if self._stop_calls and self._run_thread is None:
            self._shutdown()

    def stop(self) -> None:
        """Stop gracefully: no new work; in-flight records get up to
        ``shutdown_timeout`` to finish; the producer is flushed; final watermarks are
        stored and committed synchronously; the consumer is closed.

        While :meth:`run` loops (from any thread, a signal handler included) or from
        inside a step, this only asks; the loop shuts down. A second call aborts: no
        more draining, unfinished records are abandoned (they will be redelivered).
        The current watermark is still committed once (it covers finished work only,
        so it is safe)."""
        with self._lock:
            self._stop_calls += 1
            if self._stop_calls > 1:
                self._abort = True
        if self._state is ProcessorState.CLOSED or self._stop_calls > 1:
            return
        if self._in_step or self._run_thread is not None:
            return
        self._shutdown()

    def __enter__(self) -> Processor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state is ProcessorState.CLOSED:
            return
        if exc is not None:
            self._shutdown_after_failure()
        elif self._stop_calls == 0:
            self.stop()
        else:
            self._shutdown()

    def _shutdown_after_failure(self) -> None:
        """The loop raised: shut down without draining (as a second stop() would) and
        without hiding the original error behind a secondary one."""
        self._abort = True
        try:
            self._shutdown()
        except Exception:
            log.exception("shutting down after a failure failed too")

    # -- lifecycle --------------------------------------------------------------------

    def _transition(self, new: ProcessorState) -> None:
        if new not in LIFECYCLE[self._state]:
            allowed = ", ".join(sorted(s.name for s in LIFECYCLE[self._state])) or "none"
            raise ProcessorStateError(
                f"illegal processor transition {self._state.name} -> {new.name} "
                f"(allowed: {allowed})"
            )
        log.debug("processor %s -> %s", self._state.name, new.name)
        self._state = new

    def _shutdown(self) -> None:
        if self._state is ProcessorState.CLOSED or self._state is ProcessorState.DRAINING:
            return
        if self._state is ProcessorState.CREATED:
            self._transition(ProcessorState.CLOSED)
            self._consumer.close()
            self._close_runner()
            return
        self._transition(ProcessorState.DRAINING)
        try:
            parts = list(self._parts.values())
            for part in parts:
                self._rebalancer.cut(part)
            deadline = self._clock.now() + self._config.shutdown_timeout
            if not self._abort:
                self._rebalancer.drain(parts, self._config.shutdown_timeout)
            if not self._abort:
                remaining = max(deadline - self._clock.now(), 0.0)
                left = self._sender.flush(remaining)
                self._loop.settle()
                if left:
                    log.warning("shutdown: %d delivery reports still outstanding after flush", left)
            for part in list(self._parts.values()):
                self._keeper.abandoned(self._flow.abandon(part, list(part.chunks), "shutdown"))
            self._keeper.store_dirty()
            self._keeper.commit_final(list(self._parts.values()), aborting=self._abort)
        finally:
            try:
                self._consumer.close()
            finally:
                self._close_runner()
                self._state = ProcessorState.CLOSED
                log.info("processor closed")

    def _close_runner(self) -> None:
        self._runner.close(cancel_pending=True)
        if self._owns_executor:
            self._executor.shutdown(cancel_pending=True)

    # -- the loop ---------------------------------------------------------------------

    # -- rebalance callbacks (inside consumer.poll / consumer.close) ------------------

    def _enter_rebalance(self) -> bool:
        if self._state is ProcessorState.RUNNING:
            self._transition(ProcessorState.REBALANCING)
            return True
        return False

    def _leave_rebalance(self, entered: bool) -> None:
        if entered and self._state is ProcessorState.REBALANCING:
            self._transition(ProcessorState.RUNNING)

    def _on_assign(self, partitions: Sequence[Any]) -> None:
        entered = self._enter_rebalance()
        try:
            self._rebalancer.on_assign(partitions)
        finally:
            self._leave_rebalance(entered)

    def _on_revoke(self, partitions: Sequence[Any]) -> None:
        entered = self._enter_rebalance()
        try:
            self._rebalancer.on_revoke(partitions)
        finally:
            self._leave_rebalance(entered)

    def _on_lost(self, partitions: Sequence[Any]) -> None:
        entered = self._enter_rebalance()
        try:
            self._rebalancer.on_lost(partitions)
        finally:
            self._leave_rebalance(entered)
