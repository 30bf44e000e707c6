"""The Processor: consume → handle → produce → wait for delivery → complete → store.

Threading: the consumer, the producer's callbacks and the ledger are touched only
from the thread calling :meth:`Processor.step` / :meth:`Processor.run`; handlers run
on the Executor and come back through Futures. :meth:`Processor.stop` may be called
from any thread.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import heapq
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from types import TracebackType

import attrs

from offsetledger.core import (
    BrokerErrorInfo,
    CommitResult,
    Completion,
    ConfigError,
    ConsumerPort,
    DeliveryReport,
    Executor,
    OffsetLedger,
    OffsetLedgerError,
    OffsetOrderError,
    Outbound,
    ProducerPort,
    Record,
    RecordState,
    RecordTracker,
    StoredPosition,
    TopicPartition,
)
from offsetledger.core._names import reject_raw_client, validate_topic_name
from offsetledger.core._ports import Clock, ProcessingObserver
from offsetledger.history import ERROR_HEADER, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from offsetledger.runtime._clock import InlineExecutor, SystemClock, ThreadPoolExecutorAdapter
from offsetledger.runtime._config import (
    CommitMode,
    OrderingMode,
    ProcessorConfig,
    check_consumer_config,
)
from offsetledger.runtime._contract import check_handler, coerce_outputs
from offsetledger.runtime._metrics import MetricsHook, NullMetrics

__all__ = [
    "ATTEMPTS_HEADER",
    "DELIVERY_ATTEMPTS_HEADER",
    "Handler",
    "ProcessingTimeoutError",
    "Processor",
    "ProcessorState",
    "ProcessorStateError",
]

log = logging.getLogger("offsetledger.processor")

#: Header on dead-letter records: how many times the handler ran.
ATTEMPTS_HEADER = "offsetledger.attempts"
#: Header on dead-letter records whose outputs failed to deliver: produce rounds tried.
DELIVERY_ATTEMPTS_HEADER = "offsetledger.delivery_attempts"

#: Timers due within this many seconds count as due (float sums vs. clock resolution).
_TIME_EPSILON = 1e-6

#: Bound on the collect rounds of one pump (each round takes at least one completion).
_MAX_COLLECT_ROUNDS = 64

#: Threads of the pool the Processor builds when it is given no executor.
_DEFAULT_WORKERS = 8

Handler = Callable[[Record], Iterable[Outbound]]
"""Turns one record into the outputs to produce for it (may be empty). Runs on the
Executor; raising fails the attempt (see :class:`~offsetledger.runtime.RetryPolicy`)."""


class ProcessorState(enum.Enum):
    """The Processor's lifecycle."""

    CREATED = "created"  #: constructed; not subscribed yet
    RUNNING = "running"  #: subscribed and processing
    REBALANCING = "rebalancing"  #: inside an assign/revoke/lost callback
    DRAINING = "draining"  #: stop() is finishing in-flight work
    CLOSED = "closed"  #: the consumer is closed; nothing more happens


_P = ProcessorState
_LIFECYCLE: dict[ProcessorState, frozenset[ProcessorState]] = {
    _P.CREATED: frozenset({_P.RUNNING, _P.CLOSED}),
    _P.RUNNING: frozenset({_P.REBALANCING, _P.DRAINING, _P.CLOSED}),
    _P.REBALANCING: frozenset({_P.RUNNING, _P.DRAINING, _P.CLOSED}),
    _P.DRAINING: frozenset({_P.CLOSED}),
    _P.CLOSED: frozenset(),
}


class ProcessorStateError(OffsetLedgerError, RuntimeError):
    """The Processor was asked to do something its lifecycle state does not allow."""


class ProcessingTimeoutError(OffsetLedgerError, TimeoutError):
    """A handler attempt ran longer than ``processing_timeout``."""


class _Ran:
    """The outcome of a handler attempt run inline (see ``Processor._submit``): stands
    in for an already-done Future, without its condition variable, lock and
    done-callback machinery. ``result`` returns the outputs or raises the handler's
    exception, as ``Future.result`` would."""

    __slots__ = ("error", "outputs")

    def __init__(self, outputs: list[Outbound] | None, error: Exception | None) -> None:
        self.outputs = outputs
        self.error = error

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> list[Outbound]:
        if self.error is not None:
            raise self.error
        assert self.outputs is not None
        return self.outputs


#: A handler task in flight: a Future from the Executor, or an inline outcome.
_Task = Future[list[Outbound]] | _Ran


class _Next(enum.Enum):
    HANDLER = "handler"
    PRODUCE = "produce"


@attrs.define(slots=True, eq=False)
class _Attempt:
    """Shared between the loop thread and the task: when the handler ran."""

    token: int
    started: float | None = None
    finished: float | None = None


@attrs.define(slots=True, eq=False)
class _Work:
    """One record being processed: its state machine plus what it waits for."""

    record: Record
    tracker: RecordTracker
    part: _Part = attrs.field(repr=False)
    slot: Hashable | None
    token: int = 0  # bumped for every new async step; older callbacks are ignored
    dispatched: bool = False
    outputs_pending: int = 0
    failed: list[DeliveryReport] = attrs.field(factory=list)
    retry_messages: list[Outbound] = attrs.field(factory=list)
    delivery_attempts: int = 0
    dlq_attempts: int = 0
    next: _Next = _Next.HANDLER
    error: str = ""
    stalled: bool = False
    dlq_message: Outbound | None = None
    running: bool = False  # a handler attempt is running (counts against max_in_flight)
    isolate: bool = False  # a non-retriable delivery error: re-produce in a batch of its own
    outputs: int = 0  # how many the handler returned (reported at DONE)


@attrs.define(slots=True, eq=False)
class _Part:
    """The Processor's view of one assigned partition."""

    tp: TopicPartition
    ready: deque[_Work] = attrs.field(factory=deque, repr=False)
    queues: dict[Hashable, deque[_Work]] = attrs.field(factory=dict, repr=False)
    live: dict[int, _Work] = attrs.field(factory=dict, repr=False)  # offset -> unfinished work
    in_flight: int = 0  # dispatched and unfinished (running, retrying, producing)
    running: int = 0  # handler attempts running (bounded by max_in_flight_per_partition)
    revoking: bool = False
    paused: bool = False
    # (position, metadata) last stored / committed: only changes are sent again
    last_stored: tuple[int, str | None] | None = None
    last_committed: tuple[int, str | None] | None = None
    stored: StoredPosition | None = None  # the last position stored (with its epoch)
    highest_polled: int | None = None
    # the lineage headers naming this partition (the offset's is added per record)
    lineage: tuple[tuple[str, bytes | None], ...] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.lineage = (
            (SOURCE_TOPIC, self.tp.topic.encode()),
            (SOURCE_PARTITION, str(self.tp.partition).encode()),
        )


class Processor:
    """Runs ``handler`` over the records of ``topics`` with at-least-once delivery.

    A record's offset is stored (``position = offset + 1`` through the ledger's
    watermark) only once its handler returned and every output's delivery report
    succeeded, or its dead-letter write was acknowledged. A crash anywhere means
    redelivery, never loss.

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
        handler: Handler,
        *,
        topics: Sequence[str],
        executor: Executor | None = None,
        clock: Clock | None = None,
        config: ProcessorConfig | None = None,
        metrics: MetricsHook | None = None,
        observer: ProcessingObserver | None = None,
    ) -> None:
        check_handler(handler)
        self._observer = observer
        cfg = config if config is not None else ProcessorConfig()
        if (
            isinstance(topics, str)
            or not topics
            or not all(isinstance(t, str) and t for t in topics)
        ):
            raise ConfigError(
                "topics", f"must be a non-empty sequence of topic names, got {topics!r}"
            )
        if cfg.dead_letter_topic is not None and cfg.dead_letter_topic in topics:
            raise ConfigError(
                "dead_letter_topic",
                f"{cfg.dead_letter_topic!r} is also an input topic: "
                "dead letters would be consumed again",
            )
        if cfg.dead_letter_topic is not None:
            try:
                validate_topic_name(cfg.dead_letter_topic, "dead-letter topic")
            except ValueError as exc:
                raise ConfigError("dead_letter_topic", str(exc)) from None
        reject_raw_client(consumer, "consumer")
        reject_raw_client(producer, "producer")
        check_consumer_config(consumer.config, cfg.commit_mode)
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
        self._state = ProcessorState.CREATED
        self._parts: dict[tuple[str, int], _Part] = {}
        self._running: dict[_Task, tuple[_Work, _Attempt]] = {}
        self._completed: deque[_Task] = deque()
        # InlineExecutor (exactly: a subclass may override submit) runs each task in
        # submit and returns a done Future; the Processor then calls the handler
        # itself and skips the Future (see _submit)
        self._inline = type(self._executor) is InlineExecutor
        self._next_timeout_check = 0.0
        self._timers: list[tuple[float, int, _Work, int]] = []
        self._timer_seq = 0
        self._settled: list[_Work] = []
        self._dirty: dict[_Part, None] = {}  # insertion-ordered: deterministic
        self._in_flight = 0  # dispatched, unfinished records
        self._handlers_running = 0  # handler attempts running: bounded by max_in_flight_total
        self._ready_count = 0
        self._awaiting_reports = 0
        self._paused_count = 0  # partitions paused by backpressure
        self._done_since_commit = 0
        self._last_commit_at = self._clock.now()
        self._lock = threading.Lock()
        self._stop_calls = 0
        self._abort = False
        self._in_step = False
        self._run_thread: int | None = None
        self._max_in_flight_total = cfg.max_in_flight_total
        self._auto_commit_interval = (
            cfg.auto_commit_interval if cfg.commit_mode is CommitMode.AUTO else None
        )
        self._max_in_flight_partition = (
            1 if cfg.ordering is OrderingMode.PARTITION else cfg.max_in_flight_per_partition
        )

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
        return self._in_flight

    @property
    def stop_requested(self) -> bool:
        return self._stop_calls > 0

    def start(self) -> None:
        """Subscribe to the topics (CREATED → RUNNING). :meth:`step` and :meth:`run`
        call it when needed."""
        self._transition(ProcessorState.RUNNING)
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
        """One loop iteration: poll a batch (rebalance callbacks run here), dispatch
        ready records, collect handler completions, produce outputs, serve delivery
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
            self._step()
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
        if new not in _LIFECYCLE[self._state]:
            allowed = ", ".join(sorted(s.name for s in _LIFECYCLE[self._state])) or "none"
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
            self._close_executor()
            return
        self._transition(ProcessorState.DRAINING)
        try:
            for part in list(self._parts.values()):
                self._abandon_undispatched(part)
            deadline = self._clock.now() + self._config.shutdown_timeout
            while self._in_flight and not self._abort:
                remaining = deadline - self._clock.now()
                if remaining <= _TIME_EPSILON:  # below the clock resolution: due
                    break
                self._pump(min(remaining, self._config.poll_timeout))
            if not self._abort:
                remaining = max(deadline - self._clock.now(), 0.0)
                left = self._producer.flush(remaining)
                self._settle()
                if left:
                    log.warning("shutdown: %d delivery reports still outstanding after flush", left)
            for part in list(self._parts.values()):
                self._abandon_all(part, "shutdown")
            self._store_dirty()
            positions = self._final_positions(list(self._parts.values()))
            if positions:
                # stored too, or close()'s auto-commit of the older stored position
                # would move the commit backwards (swarm seed 41: a gap below)
                with contextlib.suppress(OffsetLedgerError):
                    self._consumer.store(positions)
                self._commit_sync(positions, attempts=1 if self._abort else None)
        finally:
            try:
                self._consumer.close()
            finally:
                self._close_executor()
                self._state = ProcessorState.CLOSED
                log.info("processor closed")

    def _close_executor(self) -> None:
        if self._owns_executor:
            self._executor.shutdown(cancel_pending=True)

    # -- the loop ---------------------------------------------------------------------

    def _step(self) -> None:
        now = self._clock.now()
        wait = self._config.poll_timeout
        if self._timers:
            wait = min(wait, max(self._timers[0][0] - now, 0.0))
        self._dispatch()
        # busy: something can progress without waiting for time to pass (ready records
        # held back by in-flight limits are not: they wait for a completion)
        busy = self._running or self._awaiting_reports or self._settled
        records = self._consumer.poll(self._config.batch_size, 0.0 if busy else wait)
        if self._state is not ProcessorState.RUNNING:
            return  # stop() was called inside a callback
        if records:
            self._intake(records)
            wait = 0.0
        self._dispatch()
        self._metrics.gauge("in_flight", self._handlers_running)
        self._pump(wait)
        self._store_dirty()
        if self._config.commit_mode is CommitMode.PERIODIC:
            self._maybe_commit()
        elif self._auto_commit_interval is not None:
            self._maybe_commit_stored()
        self._backpressure()
        self._metrics.gauge("awaiting_delivery", self._awaiting_reports)
        self._metrics.gauge("buffered", self._ledger.unfinished())

    def _pump(self, wait: float) -> None:
        """Advance in-flight work: wait (up to ``wait``) for and collect handler results,
        serve delivery reports, fire due timers, dispatch what became ready, then
        collect what the executor can finish without waiting."""
        if self._running:
            self._await_completions(0.0 if self._settled else wait)
        elif self._awaiting_reports:
            self._producer.poll(wait)
        elif wait > 0 and self._timers and self._state is not ProcessorState.RUNNING:
            # draining with only backoffs pending: let (virtual) time pass
            self._clock.sleep(min(wait, max(self._timers[0][0] - self._clock.now(), 0.0)))
        if self._awaiting_reports:
            self._producer.poll(0.0)
        self._settle()
        self._fire_timers()
        self._dispatch()
        if self._running and self._state is ProcessorState.RUNNING:
            self._await_completions(0.0)

    def _await_completions(self, wait: float) -> None:
        """Collect completed handler tasks: the first round waits up to ``wait`` for
        one; further rounds (without waiting) take whatever else finished, so a
        deterministic executor runs every task it can in one pump. While draining
        (revoke, shutdown) only one round: the drain checks its deadline between."""
        max_rounds = _MAX_COLLECT_ROUNDS if self._state is ProcessorState.RUNNING else 1
        for rounds in range(max_rounds):
            if not self._completed:
                # (inline outcomes are queued in _completed when created, so only
                # Futures can be waited for here)
                self._executor.wait(
                    self._running.keys(),  # type: ignore[arg-type]
                    wait if rounds == 0 else 0.0,
                )
                if not self._completed and rounds:
                    break
            self._collect()
            if not self._running:
                break

    def _intake(self, records: list[Record]) -> None:
        self._metrics.increment("records_in", len(records))
        ordering = self._config.ordering
        keep_epoch = self._config.keep_leader_epoch
        track = self._ledger.track
        parts = self._parts
        skipped = 0
        for rec in records:
            part = parts.get((rec.topic, rec.partition))
            if part is None or part.revoking:
                log.warning(
                    "ignoring record %s[%d]@%d: partition not assigned to this processor",
                    rec.topic,
                    rec.partition,
                    rec.offset,
                )
                continue
            epoch = rec.leader_epoch if keep_epoch else None
            try:
                ticket = track(part.tp, rec.offset, epoch)
            except OffsetOrderError:
                if part.highest_polled is not None:
                    raise  # the consumer went backwards within an assignment: a client bug
                # first record of the assignment below the committed position (the
                # client reset its position, e.g. the committed one was out of range):
                # start the ledger from what the client actually delivers
                log.warning(
                    "%s: first record at offset %d is below the committed position %s; "
                    "tracking from the delivered offset",
                    part.tp,
                    rec.offset,
                    self._ledger.watermark(part.tp),
                )
                self._ledger.assign(part.tp, None)
                ticket = track(part.tp, rec.offset, epoch)
            part.highest_polled = rec.offset
            if ticket.restored:
                skipped += 1
                self._dirty[part] = None
                continue
            if ordering is OrderingMode.UNORDERED:
                slot: Hashable | None = None
            elif ordering is OrderingMode.KEY:
                slot = rec.key
            else:
                slot = 0
            work = _Work(rec, RecordTracker(ticket), part, slot)
            part.live[rec.offset] = work
            if slot is None:
                part.ready.append(work)
                self._ready_count += 1
            else:
                queue = part.queues.get(slot)
                if queue is None:
                    part.queues[slot] = deque((work,))
                    part.ready.append(work)
                    self._ready_count += 1
                else:
                    queue.append(work)
        if skipped:
            self._metrics.increment("skipped_duplicates", skipped)
            log.info("skipped %d records already finished before a restart", skipped)

    def _dispatch(self) -> None:
        """Hand ready records to the executor, round-robin over partitions (one record
        per partition per pass), within the in-flight limits."""
        if (
            not self._ready_count
            or self._handlers_running >= self._max_in_flight_total
            or self._state is ProcessorState.CLOSED
            or self._state is ProcessorState.DRAINING
        ):
            return
        limit_total = self._max_in_flight_total
        limit_part = self._max_in_flight_partition
        candidates = [p for p in self._parts.values() if p.ready and not p.revoking]
        while candidates and self._handlers_running < limit_total:
            still = []
            for part in candidates:
                if part.running >= limit_part:
                    continue
                work = part.ready.popleft()
                self._ready_count -= 1
                work.dispatched = True
                part.in_flight += 1
                self._in_flight += 1
                work.tracker.to(RecordState.PROCESSING)
                self._submit(work)
                if self._handlers_running >= limit_total:
                    return
                if part.ready:
                    still.append(part)
            candidates = still

    def _submit(self, work: _Work) -> None:
        work.token += 1
        work.running = True
        work.part.running += 1
        self._handlers_running += 1
        attempt = _Attempt(work.token)
        if self._inline:
            # What InlineExecutor.submit would do (run the task now, catch Exception
            # into the outcome), minus the Future: the outcome is queued exactly
            # where the Future's done-callback would queue it, so _collect handles
            # it in the same order, with the same state transitions. The attempt is
            # timed only when a processing_timeout can use it.
            ran: _Ran
            try:
                if self._config.processing_timeout is None:
                    ran = _Ran(coerce_outputs(self._handler(work.record), work.record), None)
                else:
                    ran = _Ran(_run_handler(self._handler, work.record, attempt, self._clock), None)
            except Exception as exc:  # the handler's failure, as the Future would carry it
                ran = _Ran(None, exc)
            # the handler has returned: its slot is free at once, so one dispatch pass
            # can run a whole poll batch inline (the outcome is collected as usual)
            self._handler_returned(work)
            self._running[ran] = (work, attempt)
            self._completed.append(ran)
            return
        future = self._executor.submit(
            functools.partial(_run_handler, self._handler, work.record, attempt, self._clock)
        )
        self._running[future] = (work, attempt)
        future.add_done_callback(self._completed.append)  # deque.append: thread-safe

    def _collect(self) -> None:
        """Handle the handler tasks that completed (their futures' done-callbacks queued
        them) and, every tenth of ``processing_timeout``, give up on attempts running
        longer than it."""
        timeout = self._config.processing_timeout
        now = 0.0
        finished: list[_Task] = []
        completed = self._completed
        while completed:
            finished.append(completed.popleft())
        if timeout is not None and self._running:
            now = self._clock.now()
            if now >= self._next_timeout_check:
                self._next_timeout_check = now + min(timeout / 10, 1.0)
                for future, (work, attempt) in self._running.items():
                    if not future.done() and (
                        attempt.token != work.token
                        or (attempt.started is not None and now - attempt.started > timeout)
                    ):
                        finished.append(future)  # timed out (or superseded): give up on it
        for future in finished:
            entry = self._running.pop(future, None)
            if entry is None:  # already given up on (timed out); its late result is ignored
                continue
            work, attempt = entry
            if attempt.token != work.token or work.tracker.state is not RecordState.PROCESSING:
                self._metrics.increment("stale_completions", tp=work.part.tp)
                continue
            if attempt.finished is None and not future.done():
                self._handler_returned(work)
                self._timed_out(work, now - (attempt.started or now))
                continue
            try:
                outputs = future.result(0)
            except FuturesTimeoutError:  # finished flag set, result not yet: next round
                self._running[future] = entry
                self._completed.append(future)
                continue
            except CancelledError:
                self._handler_returned(work)
                self._attempt_failed(work, RuntimeError("handler task was cancelled"))
                continue
            except Exception as exc:
                self._handler_returned(work)
                self._attempt_failed(work, exc)
                continue
            self._handler_returned(work)
            if (
                timeout is not None
                and attempt.started is not None
                and attempt.finished is not None
                and attempt.finished - attempt.started > timeout
            ):
                self._timed_out(work, attempt.finished - attempt.started)
                continue
            if outputs:
                self._produce_outputs(work, outputs)
            else:
                self._finish(work)

    def _handler_returned(self, work: _Work) -> None:
        """The attempt no longer occupies a handler slot (it returned, failed, timed
        out, or its record was abandoned)."""
        if work.running:
            work.running = False
            work.part.running -= 1
            self._handlers_running -= 1

    def _timed_out(self, work: _Work, elapsed: float) -> None:
        work.token += 1  # a late result of this attempt is ignored
        self._metrics.increment("timeouts", tp=work.part.tp)
        log.warning(
            "%s offset %d: handler attempt %d ran %.3fs, over processing_timeout %.3fs",
            work.part.tp,
            work.record.offset,
            work.tracker.attempts,
            elapsed,
            self._config.processing_timeout,
        )
        self._attempt_failed(
            work,
            ProcessingTimeoutError(
                f"handler ran {elapsed:.3f}s, over processing_timeout "
                f"{self._config.processing_timeout}s"
            ),
        )

    def _attempt_failed(self, work: _Work, exc: BaseException) -> None:
        policy = self._config.retry
        work.error = f"{type(exc).__name__}: {exc}"
        tp = work.part.tp
        if policy.is_fatal(exc):
            # logged once: a stalled record (no dead-letter topic) fails the same way
            # at every retry
            (log.debug if work.stalled else log.error)(
                "%s offset %d: fatal handler error (not retried) %s",
                tp,
                work.record.offset,
                work.error,
            )
            self._exhausted(work, _Next.HANDLER)
            return
        attempts = work.tracker.attempts
        if attempts >= policy.max_attempts:
            log.error(
                "%s offset %d: handler failed %d times, last: %s",
                tp,
                work.record.offset,
                attempts,
                work.error,
            )
            self._exhausted(work, _Next.HANDLER)
            return
        log.info(
            "%s offset %d: attempt %d failed (%s), retrying",
            tp,
            work.record.offset,
            attempts,
            work.error,
        )
        self._metrics.increment("retries", tp=tp)
        work.tracker.to(RecordState.RETRY_WAIT)
        work.next = _Next.HANDLER
        self._schedule(work, policy.delay(attempts))

    def _exhausted(self, work: _Work, what: _Next) -> None:
        """Attempts are used up (or the error is fatal): dead-letter, or stall."""
        if self._config.dead_letter_topic is not None:
            self._dead_letter(work)
            return
        if not work.stalled:
            work.stalled = True
            self._metrics.increment("stalls", tp=work.part.tp)
            log.error(
                "%s offset %d: no dead_letter_topic; the record is retried every %.3fs and "
                "its partition's watermark stalls until it succeeds (last error: %s)",
                work.part.tp,
                work.record.offset,
                self._config.retry.backoff_max,
                work.error,
            )
        if work.tracker.state is not RecordState.RETRY_WAIT:
            work.tracker.to(RecordState.RETRY_WAIT)
        work.next = what
        self._schedule(work, self._config.retry.backoff_max)

    def _schedule(self, work: _Work, delay: float) -> None:
        work.token += 1
        self._timer_seq += 1
        heapq.heappush(self._timers, (self._clock.now() + delay, self._timer_seq, work, work.token))

    def _fire_timers(self) -> None:
        timers = self._timers
        if not timers:
            return
        now = self._clock.now() + _TIME_EPSILON
        while timers and timers[0][0] <= now:
            _, _, work, token = heapq.heappop(timers)
            if token != work.token or work.tracker.state.terminal:
                continue
            state = work.tracker.state
            if state is RecordState.DEAD_LETTERING:
                self._send_dead_letter(work)
            elif work.next is _Next.HANDLER:
                work.tracker.to(RecordState.PROCESSING)
                self._submit(work)
            else:
                work.tracker.to(RecordState.PRODUCING)
                work.delivery_attempts += 1
                if work.isolate:
                    self._send_alone(work)
                else:
                    self._send(work, work.retry_messages)

    def _send_alone(self, work: _Work) -> None:
        """Re-produce ``work``'s failed outputs in a producer batch of their own.

        A non-retriable delivery error (e.g. MSG_SIZE_TOO_LARGE) may belong to a
        batch-mate: the broker fails a whole batch for one bad message, and healthy
        records retried in lockstep would fail with it again, into the dead-letter
        topic. So: flush what is outstanding, produce only these outputs, flush them
        (each flush bounded by ``poll_timeout``; if it does not drain, the send still
        happens, only less isolated)."""
        self._producer.flush(self._config.poll_timeout)
        self._send(work, work.retry_messages)
        self._producer.flush(self._config.poll_timeout)

    # -- producing --------------------------------------------------------------------

    def _lineage(self, record: Record) -> tuple[tuple[str, bytes | None], ...]:
        return (
            (SOURCE_TOPIC, record.topic.encode()),
            (SOURCE_PARTITION, str(record.partition).encode()),
            (SOURCE_OFFSET, str(record.offset).encode()),
        )

    def _produce_outputs(self, work: _Work, outputs: list[Outbound]) -> None:
        work.tracker.to(RecordState.PRODUCING)
        if self._config.lineage_headers:
            # as _lineage(work.record): the part's tp is the record's topic/partition
            lineage = (*work.part.lineage, (SOURCE_OFFSET, str(work.record.offset).encode()))
            outputs = [_with_headers(o, lineage) for o in outputs]
        work.delivery_attempts = 1
        work.outputs = len(outputs)
        self._send(work, outputs)

    def _send(self, work: _Work, messages: list[Outbound]) -> None:
        work.token += 1
        work.failed = []
        work.outputs_pending = len(messages)
        self._awaiting_reports += 1
        callback = functools.partial(self._on_delivery, work, work.token)
        produce = self._producer.produce
        for message in messages:
            try:
                produce(message, callback)
            except Exception as exc:  # e.g. a full local queue: a failed delivery
                log.warning(
                    "%s offset %d: produce failed: %r", work.part.tp, work.record.offset, exc
                )
                callback(
                    DeliveryReport(
                        message, BrokerErrorInfo(type(exc).__name__, str(exc), retriable=True)
                    )
                )

    def _on_delivery(self, work: _Work, token: int, report: DeliveryReport) -> None:
        if token != work.token or work.outputs_pending <= 0:
            self._metrics.increment("stale_completions", tp=work.part.tp)
            return
        if report.error is None:
            if work.tracker.state is RecordState.PRODUCING:
                self._metrics.increment("records_out")
        else:
            work.failed.append(report)
        work.outputs_pending -= 1
        if work.outputs_pending == 0:
            self._awaiting_reports -= 1
            self._settled.append(work)

    def _settle(self) -> None:
        """Act on records whose produce round got all its delivery reports."""
        while self._settled:
            settled, self._settled = self._settled, []
            for work in settled:
                state = work.tracker.state
                if state is RecordState.PRODUCING:
                    self._settle_outputs(work)
                elif state is RecordState.DEAD_LETTERING:
                    self._settle_dead_letter(work)

    def _settle_outputs(self, work: _Work) -> None:
        if not work.failed:
            self._finish(work)
            return
        first = work.failed[0].error
        work.error = f"delivery failed: {first}"
        work.retry_messages = [r.message for r in work.failed]
        work.isolate = any(r.error is not None and not r.error.retriable for r in work.failed)
        policy = self._config.retry
        log.warning(
            "%s offset %d: %d of its outputs failed to deliver (%s)",
            work.part.tp,
            work.record.offset,
            len(work.failed),
            first,
        )
        if work.delivery_attempts >= policy.max_attempts:
            self._exhausted(work, _Next.PRODUCE)
            return
        self._metrics.increment("retries", tp=work.part.tp)
        work.tracker.to(RecordState.RETRY_WAIT)
        work.next = _Next.PRODUCE
        self._schedule(work, policy.delay(work.delivery_attempts))

    def _dead_letter(self, work: _Work) -> None:
        topic = self._config.dead_letter_topic
        assert topic is not None
        work.tracker.to(RecordState.DEAD_LETTERING)
        rec = work.record
        headers = [*rec.headers, *self._lineage(rec), (ERROR_HEADER, work.error.encode())]
        headers.append((ATTEMPTS_HEADER, str(work.tracker.attempts).encode()))
        if work.delivery_attempts:
            headers.append((DELIVERY_ATTEMPTS_HEADER, str(work.delivery_attempts).encode()))
        work.dlq_message = Outbound(topic, value=rec.value, key=rec.key, headers=headers)
        self._send_dead_letter(work)

    def _send_dead_letter(self, work: _Work) -> None:
        assert work.dlq_message is not None
        work.dlq_attempts += 1
        self._send(work, [work.dlq_message])

    def _settle_dead_letter(self, work: _Work) -> None:
        tp = work.part.tp
        if not work.failed:
            self._metrics.increment("dead_letters", tp=tp)
            log.warning(
                "%s offset %d: written to dead-letter topic %s (%s)",
                tp,
                work.record.offset,
                self._config.dead_letter_topic,
                work.error,
            )
            self._finish(work)
            return
        if not work.stalled:
            work.stalled = True
            self._metrics.increment("stalls", tp=tp)
        log.error(
            "%s offset %d: dead-letter write #%d failed (%s); the partition stalls and the write "
            "is retried; the record is not dropped",
            tp,
            work.record.offset,
            work.dlq_attempts,
            work.failed[0].error,
        )
        self._schedule(work, self._config.retry.delay(work.dlq_attempts))

    # -- finishing --------------------------------------------------------------------

    def _finish(self, work: _Work) -> None:
        work.tracker.to(RecordState.DONE)
        if self._observer is not None:
            self._observer.record_done(work.record, work.outputs, work.dlq_message is not None)
        part = work.part
        self._release(work)
        if work.stalled:
            log.warning("%s offset %d: stalled record finished", part.tp, work.record.offset)
        result = self._ledger.complete(work.tracker.ticket)
        if result is Completion.COMPLETED:
            self._dirty[part] = None
            self._done_since_commit += 1
            self._metrics.increment("records_done")
        elif result is Completion.STALE:
            self._metrics.increment("stale_completions", tp=part.tp)

    def _release(self, work: _Work) -> None:
        """Take a terminal record out of its partition's bookkeeping; its successor in
        the same ordering slot becomes ready."""
        part = work.part
        part.live.pop(work.record.offset, None)
        if work.dispatched:
            part.in_flight -= 1
            self._in_flight -= 1
        if work.slot is not None:
            queue = part.queues.get(work.slot)
            if queue and queue[0] is work:
                queue.popleft()
                if queue:
                    if not part.revoking:
                        part.ready.append(queue[0])
                        self._ready_count += 1
                else:
                    del part.queues[work.slot]

    def _abandon(self, work: _Work, why: str) -> None:
        if work.tracker.state.terminal:
            return
        if not work.dispatched and work in work.part.ready:
            work.part.ready.remove(work)
            self._ready_count -= 1
        if work.outputs_pending > 0:
            self._awaiting_reports -= 1
            work.outputs_pending = 0
        work.token += 1
        self._handler_returned(work)
        work.tracker.to(RecordState.ABANDONED)
        work.part.live.pop(work.record.offset, None)
        if work.dispatched:
            work.part.in_flight -= 1
            self._in_flight -= 1
        self._metrics.increment("abandoned", tp=work.part.tp)
        log.debug("%s offset %d abandoned (%s)", work.part.tp, work.record.offset, why)

    def _abandon_undispatched(self, part: _Part) -> None:
        self._ready_count -= len(part.ready)
        part.ready.clear()
        for work in [w for w in part.live.values() if not w.dispatched]:
            self._abandon(work, "not started")
        part.queues.clear()

    def _abandon_all(self, part: _Part, why: str) -> None:
        self._abandon_undispatched(part)
        for work in list(part.live.values()):
            self._abandon(work, why)

    # -- storing and committing -------------------------------------------------------

    def _store_dirty(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        positions: list[StoredPosition] = []
        for part in dirty:
            if not self._ledger.is_assigned(part.tp):
                continue
            sp = self._position(part)
            if sp is None or (sp.position, sp.metadata) == part.last_stored:
                continue
            positions.append(sp)
            part.last_stored = (sp.position, sp.metadata)
            part.stored = sp
            if part.highest_polled is not None:
                self._metrics.gauge(
                    "watermark_lag", part.highest_polled + 1 - sp.position, tp=part.tp
                )
        if positions:
            try:
                self._consumer.store(positions)
            except OffsetLedgerError as exc:
                log.warning("storing positions failed (a rebalance is probably under way): %s", exc)

    def _position(self, part: _Part) -> StoredPosition | None:
        """The partition's watermark to store or commit. Commit metadata (finished
        offsets above the watermark) is encoded only when there are any: encoding
        walks the ledger's pending offsets, too costly for every step."""
        ledger = self._ledger
        watermark = ledger.watermark(part.tp)
        if watermark is None:
            return None
        # the ledger knows in O(1) whether anything above the watermark is finished
        # (completed, or restored from metadata): no copy of that state here
        with_metadata = ledger.has_finished_above_watermark(part.tp)
        sp = ledger.stored_position(part.tp, with_metadata=with_metadata)
        if sp is not None and sp.leader_epoch is not None and not self._config.keep_leader_epoch:
            sp = attrs.evolve(sp, leader_epoch=None)
        return sp

    def _final_positions(self, parts: Iterable[_Part]) -> list[StoredPosition]:
        out = []
        for part in parts:
            if not self._ledger.is_assigned(part.tp):
                continue
            sp = self._position(part)
            if sp is not None and (sp.position, sp.metadata) != part.last_committed:
                out.append(sp)
        return out

    def _maybe_commit(self) -> None:
        cfg = self._config
        now = self._clock.now()
        due = (
            cfg.commit_every_records is not None
            and self._done_since_commit >= cfg.commit_every_records
        ) or (cfg.commit_interval is not None and now - self._last_commit_at >= cfg.commit_interval)
        if not due:
            return
        self._done_since_commit = 0
        self._last_commit_at = now
        positions = self._final_positions(p for p in self._parts.values() if not p.revoking)
        if positions:
            self._commit_sync(positions)

    def _maybe_commit_stored(self) -> None:
        """AUTO mode: commit the positions stored since the last commit every
        ``auto_commit_interval`` seconds (the client's own auto-commit runs every
        ``auto.commit.interval.ms``, librdkafka's default 5 s: that much finished
        work would be redelivered after a kill -9). One try: a failure is logged and
        the next interval (or the client's auto-commit) commits them."""
        interval = self._auto_commit_interval
        assert interval is not None
        if not self._done_since_commit:
            return
        now = self._clock.now()
        if now - self._last_commit_at < interval:
            return
        self._done_since_commit = 0
        self._last_commit_at = now
        positions = [
            part.stored
            for part in self._parts.values()
            if not part.revoking
            and part.stored is not None
            and part.last_stored != part.last_committed
        ]
        if positions:
            self._commit_sync(positions, attempts=1)

    def _commit_sync(
        self, positions: list[StoredPosition], attempts: int | None = None
    ) -> list[CommitResult]:
        """Commit ``positions`` synchronously; retry partitions with retriable errors
        (``commit_attempts`` tries, backoff on the clock); log and count the rest.
        A failed commit never loses a record: it can only cause redelivery."""
        tries = attempts if attempts is not None else self._config.commit_attempts
        pending = list(positions)
        results: list[CommitResult] = []
        for attempt in range(1, tries + 1):
            retry: list[StoredPosition] = []
            try:
                outcome = self._consumer.commit(pending)
            except OffsetLedgerError as exc:
                retriable = bool(getattr(exc, "retriable", False))
                log.warning("commit attempt %d raised %s", attempt, exc)
                outcome = [
                    CommitResult(
                        sp.tp, sp.position, BrokerErrorInfo(type(exc).__name__, str(exc), retriable)
                    )
                    for sp in pending
                ]
            by_tp = {sp.tp: sp for sp in pending}
            for result in outcome:
                sp = by_tp.get(result.tp)
                part = self._parts.get((result.tp.topic, result.tp.partition))
                if result.error is None:
                    self._metrics.increment("commits", tp=result.tp)
                    if part is not None and sp is not None:
                        part.last_committed = (sp.position, sp.metadata)
                    results.append(result)
                elif result.error.retriable and attempt < tries and sp is not None:
                    retry.append(sp)
                else:
                    self._metrics.increment("commit_failures", tp=result.tp)
                    log.error(
                        "commit of %s at %s failed: %s", result.tp, result.position, result.error
                    )
                    results.append(result)
            if not retry:
                break
            pending = retry
            self._clock.sleep(self._config.retry.delay(attempt))
        return results

    # -- backpressure -----------------------------------------------------------------

    def _backpressure(self) -> None:
        """Pause partitions whose buffer (polled, unfinished records) is full, or all
        of them when the total is; resume them once below the limits."""
        ledger = self._ledger
        full_total = ledger.is_full_total
        if (
            not full_total
            and not self._paused_count
            and ledger.unfinished() < self._config.max_buffered_per_partition
        ):
            return  # fast path: no partition can be full, none is paused
        to_pause: list[TopicPartition] = []
        to_resume: list[TopicPartition] = []
        for part in self._parts.values():
            if part.revoking:
                continue
            full = full_total or ledger.is_full(part.tp)
            if full and not part.paused:
                part.paused = True
                self._paused_count += 1
                to_pause.append(part.tp)
            elif part.paused and not full:
                part.paused = False
                self._paused_count -= 1
                to_resume.append(part.tp)
        if to_pause:
            self._consumer.pause(to_pause)
            self._metrics.increment("pauses", len(to_pause))
            log.debug("paused %s (buffer full)", ", ".join(map(str, to_pause)))
        if to_resume:
            self._consumer.resume(to_resume)
            log.debug("resumed %s", ", ".join(map(str, to_resume)))

    # -- rebalance callbacks (inside consumer.poll / consumer.close) ------------------

    def _drop_part(self, tp: TopicPartition) -> _Part | None:
        """Forget the Processor's view of ``tp`` (the ledger is handled separately)."""
        part = self._parts.pop((tp.topic, tp.partition), None)
        if part is not None and part.paused:
            part.paused = False
            self._paused_count -= 1
        return part

    def _enter_rebalance(self) -> bool:
        if self._state is ProcessorState.RUNNING:
            self._transition(ProcessorState.REBALANCING)
            return True
        return False

    def _leave_rebalance(self, entered: bool) -> None:
        if entered and self._state is ProcessorState.REBALANCING:
            self._transition(ProcessorState.RUNNING)

    def _on_assign(self, partitions: Sequence[TopicPartition]) -> None:
        entered = self._enter_rebalance()
        try:
            self._metrics.increment("rebalances")
            if not partitions:
                return
            try:
                committed = self._consumer.committed(partitions, self._config.committed_timeout)
            except OffsetLedgerError as exc:
                # without it the ledger starts at the first record polled: still safe,
                # only the skip of records finished before a restart is lost
                log.warning("reading committed positions failed (%s); starting without them", exc)
                committed = {}
            for tp in partitions:
                cp = committed.get(tp)
                position = cp.position if cp is not None else None
                metadata = cp.metadata if cp is not None else None
                old = self._drop_part(tp)
                if old is not None:
                    self._abandon_all(old, "re-assigned")
                self._ledger.assign(tp, position, metadata)
                part = _Part(tp, last_committed=None if position is None else (position, metadata))
                self._parts[(tp.topic, tp.partition)] = part
            if self._ledger.is_full_total:
                # paused now, or the poll serving this callback fetches a batch
                # from them over the total limit (swarm seed 44)
                self._backpressure()
            log.info("assigned %s", ", ".join(map(str, partitions)))
        finally:
            self._leave_rebalance(entered)

    def _on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        entered = self._enter_rebalance()
        try:
            self._metrics.increment("rebalances")
            parts = [p for tp in partitions if (p := self._parts.get((tp.topic, tp.partition)))]
            if not parts:
                return
            for part in parts:
                part.revoking = True
                self._abandon_undispatched(part)
            deadline = self._clock.now() + self._config.drain_timeout
            while any(p.in_flight for p in parts) and not self._abort:
                remaining = deadline - self._clock.now()
                if remaining <= _TIME_EPSILON:  # below the clock resolution: due
                    break
                self._pump(min(remaining, self._config.poll_timeout))
                if (
                    not self._running
                    and not self._awaiting_reports
                    and any(p.in_flight for p in parts)
                ):
                    # only backoff timers left: let time pass until the next one
                    nxt = self._timers[0][0] if self._timers else deadline
                    self._clock.sleep(max(min(nxt, deadline) - self._clock.now(), 0.0))
            for part in parts:
                unfinished = len(part.live)
                self._abandon_all(part, "revoked")
                if unfinished:
                    log.warning(
                        "%s revoked with %d records unfinished after the drain; "
                        "they will be redelivered",
                        part.tp,
                        unfinished,
                    )
            positions = self._final_positions(parts)
            self._store_dirty()
            if positions:
                try:
                    self._consumer.store(positions)
                except OffsetLedgerError as exc:
                    log.warning("storing final positions on revoke failed: %s", exc)
                self._commit_sync(positions, attempts=1 if self._abort else None)
            for part in parts:
                if self._ledger.is_assigned(part.tp):
                    self._ledger.revoke(part.tp)
                self._drop_part(part.tp)
                self._dirty.pop(part, None)
            log.info("revoked %s", ", ".join(str(p.tp) for p in parts))
        finally:
            self._leave_rebalance(entered)

    def _on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        entered = self._enter_rebalance()
        try:
            self._metrics.increment("rebalances")
            for tp in partitions:
                part = self._drop_part(tp)
                if part is None:
                    continue
                self._abandon_all(part, "lost")
                self._dirty.pop(part, None)
                if self._ledger.is_assigned(tp):
                    self._ledger.lost(tp)
            log.warning(
                "lost %s: not committed; unfinished records will be redelivered",
                ", ".join(map(str, partitions)),
            )
        finally:
            self._leave_rebalance(entered)


def _run_handler(
    handler: Handler, record: Record, attempt: _Attempt, clock: Clock
) -> list[Outbound]:
    """The task run on the Executor: call the handler and materialise its outputs."""
    attempt.started = clock.now()
    try:
        return coerce_outputs(handler(record), record)
    finally:
        attempt.finished = clock.now()


_OUTBOUND_FIELDS = tuple(f.name for f in attrs.fields(Outbound))
# Slot descriptors' setters, field by field (a frozen attrs class blocks setattr, and
# object.__setattr__ plus getattr per field made this copy a top profile entry).
_OUTBOUND_SLOTS = tuple(
    (
        getattr(Outbound, name).__get__,
        getattr(Outbound, name).__set__,
    )
    for name in _OUTBOUND_FIELDS
    if name != "headers"
)
_SET_HEADERS = Outbound.headers.__set__  # type: ignore[attr-defined]


def _with_headers(message: Outbound, extra: tuple[tuple[str, bytes | None], ...]) -> Outbound:
    """``message`` with ``extra`` headers appended. A hot-path copy that skips the
    attrs validators: every field comes from an already validated Outbound and the
    extra headers are built by the Processor (str names, bytes values)."""
    if not isinstance(message, Outbound):
        raise TypeError(f"a handler must return Outbound messages, got {type(message).__name__}")
    clone = object.__new__(Outbound)
    for get, put in _OUTBOUND_SLOTS:
        put(clone, get(message))
    _SET_HEADERS(clone, message.headers + extra)
    return clone
