"""SimExecutor: runs submitted tasks in a seeded order, on the caller's thread."""

from __future__ import annotations

from collections.abc import Callable, Collection
from concurrent.futures import Future
from typing import Any, TypeVar

from offsetledger.simulator._context import SimContext
from offsetledger.simulator._errors import ProcessCrashed

__all__ = ["SimExecutor"]

T = TypeVar("T")


class SimExecutor:
    """A deterministic :class:`offsetledger.core.Executor`.

    :meth:`submit` only queues. :meth:`wait` runs a seeded, non-empty subset of the
    pending tasks in a seeded order (so tasks finish out of submission order,
    reproducibly), repeating until one of the awaited futures is done, nothing is
    pending, or ``timeout`` virtual seconds passed. Each task first advances the
    virtual clock by its cost: ``task_cost`` seconds (a number, or a callable
    given the task returning seconds), or :attr:`Faults.slow_task_seconds` when the
    ``slow_task`` fault fires. A task may also call ``world.clock.sleep(s)`` itself
    to model work that takes long (e.g. past ``max.poll.interval.ms``): the world
    is single threaded, so the whole world waits with it, timers included.
    Exceptions raised by a task go into its Future.

    When the executor's member crashes, pending tasks are cancelled and every
    later call raises ProcessCrashed.
    """

    def __init__(
        self,
        world: SimContext,
        name: str,
        member: str | None,
        task_cost: float | Callable[[Callable[[], Any]], float] = 0.0,
    ) -> None:
        if isinstance(task_cost, int | float) and task_cost < 0:
            raise ValueError(f"task_cost must be >= 0 seconds, got {task_cost}")
        self._world = world
        self.name = name
        self.member = member
        self.task_cost = task_cost
        self._pending: list[tuple[Future[Any], Callable[[], Any]]] = []
        self._shutdown = False
        self._crashed = False
        #: tasks run so far
        self.completed = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, task: Callable[[], T]) -> Future[T]:
        """Queue ``task``; it runs during a later :meth:`wait` (or :meth:`run_all`)."""
        self._check()
        if self._shutdown:
            raise RuntimeError(f"executor {self.name!r} is shut down; cannot submit")
        future: Future[T] = Future()
        self._pending.append((future, task))
        return future

    def wait(self, futures: Collection[Future[Any]], timeout: float) -> None:
        """Run seeded batches of pending tasks until one of ``futures`` is done."""
        self._check()
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        if any(f.done() for f in futures):
            return
        clock = self._world.clock
        deadline = clock.now_us + round(timeout * 1_000_000)
        while self._pending and clock.now_us <= deadline:
            self._run_batch()
            if any(f.done() for f in futures):
                return
        if not any(f.done() for f in futures) and clock.now_us < deadline:
            clock.advance_to_us(deadline)

    def run_all(self) -> None:
        """Run every pending task (in seeded batches)."""
        self._check()
        while self._pending:
            self._run_batch()

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        """Stop accepting tasks; cancel pending ones, or (by default) run them."""
        if self._crashed:
            raise ProcessCrashed(self.member or self.name)
        self._shutdown = True
        if cancel_pending:
            for future, _ in self._pending:
                future.cancel()
            self._pending.clear()
        else:
            self.run_all()

    def _check(self) -> None:
        if self._crashed:
            raise ProcessCrashed(self.member or self.name)

    def _run_batch(self) -> None:
        rng = self._world.rng
        pending = self._pending
        k = rng.randint(1, len(pending))
        chosen = sorted(rng.sample(range(len(pending)), k), reverse=True)
        batch = [pending.pop(i) for i in chosen]  # pops from the back keep indexes valid
        rng.shuffle(batch)
        for future, task in batch:
            if self._crashed:
                future.cancel()
                continue
            self._run(future, task)

    def _run(self, future: Future[Any], task: Callable[[], Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        world = self._world
        faults = world.faults
        if faults.armed("slow_task") and faults.fires("slow_task", self.member or self.name):
            cost = faults.slow_task_seconds
        elif callable(self.task_cost):
            cost = self.task_cost(task)
        else:
            cost = self.task_cost
        if cost:
            world.clock.advance(cost)
        try:
            result = task()
        except ProcessCrashed as exc:
            future.set_exception(exc)
            raise
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        self.completed += 1

    def _crash(self) -> None:
        self._crashed = True
        for future, _ in self._pending:
            future.cancel()
        self._pending.clear()
