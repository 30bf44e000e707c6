"""The loop: one iteration over the units (poll, hand out, collect, produce,
settle, retry, store, commit, backpressure), and the pump the drains reuse."""

from __future__ import annotations

from collections.abc import Callable

from offsetledger.core import Clock, ConsumerPort, OffsetLedger
from offsetledger.runtime._backpressure import Backpressure
from offsetledger.runtime._config import ProcessorConfig
from offsetledger.runtime._deadlines import Deadlines
from offsetledger.runtime._flow import RecordFlow
from offsetledger.runtime._intake import Intake
from offsetledger.runtime._lifecycle import ProcessorState
from offsetledger.runtime._metrics import MetricsHook, NullMetrics
from offsetledger.runtime._offsets import OffsetKeeper
from offsetledger.runtime._runners import Runner
from offsetledger.runtime._sender import Sender
from offsetledger.runtime._timers import RetryTimers
from offsetledger.runtime._work import Part

__all__ = ["Loop"]

#: Bound on the collect rounds of one pump (each round takes at least one run).
_MAX_COLLECT_ROUNDS = 64


class Loop:
    """Drives the units; owns nothing but the order of the calls."""

    def __init__(
        self,
        *,
        consumer: ConsumerPort,
        config: ProcessorConfig,
        clock: Clock,
        metrics: MetricsHook,
        ledger: OffsetLedger,
        parts: dict[tuple[str, int], Part],
        intake: Intake,
        runner: Runner,
        sender: Sender,
        timers: RetryTimers,
        keeper: OffsetKeeper,
        backpressure: Backpressure,
        flow: RecordFlow,
        deadlines: Deadlines,
        state: Callable[[], ProcessorState],
        aborting: Callable[[], bool],
    ) -> None:
        self._consumer = consumer
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._ledger = ledger
        self._parts = parts
        self._intake = intake
        self._runner = runner
        self._sender = sender
        self._timers = timers
        self._keeper = keeper
        self._backpressure = backpressure
        self._flow = flow
        self._deadlines = deadlines
        self._state = state
        self._aborting = aborting

    def step(self) -> None:
        now = self._clock.now()
        wait = self._config.poll_timeout
        due = self._timers.next_due()
        if due is not None:
            wait = min(wait, max(due - now, 0.0))
        self.dispatch()
        # busy: something can progress without waiting for time to pass (ready records
        # held back by in-flight limits are not: they wait for a completion)
        busy = self._runner.running() or self._sender.awaiting or self._sender.has_settled
        records = self._consumer.poll(self._config.batch_size, 0.0 if busy else wait)
        if self._state() is not ProcessorState.RUNNING:
            return  # stop() was called inside a callback
        if records:
            for part in self._intake.take(records):
                self._keeper.mark(part)
            wait = 0.0
        self.dispatch()
        self._metrics.gauge("in_flight", self._intake.running)
        self.pump(wait)
        self._keeper.store_dirty()
        self._keeper.maybe_commit(self._parts.values())
        self._backpressure.apply(self._parts.values(), self._intake.buffered_bytes)
        self.gauges()

    def gauges(self) -> None:
        metrics = self._metrics
        if isinstance(metrics, NullMetrics):
            return
        metrics.gauge("awaiting_delivery", self._sender.awaiting_records)
        metrics.gauge("buffered", self._ledger.unfinished())
        metrics.gauge("buffered_bytes", self._intake.buffered_bytes)
        now = self._clock.now()
        oldest = min((p.chunks[0].polled_at for p in self._parts.values() if p.chunks), default=now)
        metrics.gauge("oldest_in_flight_age", now - oldest)

    def pump(self, wait: float) -> None:
        """Advance in-flight work: wait (up to ``wait``) for and collect handler runs,
        serve delivery reports, fire due timers, hand out what became ready, then
        collect what the runner can finish without waiting."""
        runner, sender = self._runner, self._sender
        if runner.running():
            self.collect(0.0 if sender.has_settled else wait)
        elif sender.awaiting:
            sender.poll(wait)
        elif wait > 0 and len(self._timers) and self._state() is not ProcessorState.RUNNING:
            # draining with only backoffs pending: let (virtual) time pass
            due = self._timers.next_due() or 0.0
            self._clock.sleep(min(wait, max(due - self._clock.now(), 0.0)))
        if sender.awaiting:
            sender.poll(0.0)
        self.settle()
        for slow in self._timers.pop_due():
            self._flow.slow.wake(slow)
        self.dispatch()
        if runner.running() and self._state() is ProcessorState.RUNNING:
            self.collect(0.0)

    def dispatch(self) -> None:
        """Hand ready records to the runner (an inline runner runs them at once:
        collect and hand out again until nothing is ready or the limits hold)."""
        if self._state() is ProcessorState.CLOSED:
            return
        intake, runner, flow = self._intake, self._runner, self._flow
        for _ in range(_MAX_COLLECT_ROUNDS):
            if self._aborting():
                return  # a second stop(): nothing new starts
            runs = intake.hand_out(runner.slices)
            if not runs:
                return
            for run in runs:
                runner.submit(run)
            done = runner.collect(None)  # what finished at submit (an inline runner)
            if not done:
                return
            for run in done:
                flow.ran(run)

    def collect(self, wait: float) -> None:
        """Collect finished runs: the first round waits up to ``wait`` for one;
        further rounds (without waiting) take whatever else finished, so a
        deterministic executor runs every task it can in one pump. While draining
        (revoke, shutdown) only one round: the drain checks its deadline between."""
        runner, flow = self._runner, self._flow
        max_rounds = _MAX_COLLECT_ROUNDS if self._state() is ProcessorState.RUNNING else 1
        for rounds in range(max_rounds):
            runs = runner.collect(wait if rounds == 0 else 0.0)
            if not runs and rounds:
                break
            for run in runs:
                flow.ran(run)
            if not runner.running():
                break
        self._deadlines.check()

    def settle(self) -> None:
        sender, flow = self._sender, self._flow
        while sender.has_settled:
            for send in sender.settled():
                flow.settled(send)
