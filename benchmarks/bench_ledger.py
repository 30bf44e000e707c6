"""OffsetLedger hot path: track + complete per record, and per chunk.

Usage::

    python benchmarks/bench_ledger.py [--records N] [--runs R] [--json]

Measures, for one partition:

* ns per record for track + complete, completing (a) in order and (b) shuffled
  within a window of in-flight records, for windows of 10 and 10,000 unfinished
  offsets; the ratio of the two shows whether the cost is independent of the
  window (amortised O(1));
* the same loop with a stub ledger (it builds the ticket and does nothing else):
  what the harness itself costs. Its shuffled 10k/10 ratio is far above 1 too:
  completing a random one of 10,000 tickets in flight reads memory that is no
  longer in the CPU cache, in the harness as in the ledger, so that ratio measures
  the cache (and the neighbours sharing it), not the ledger's algorithm;
* chunk mode: ``track_range`` over chunks of 10, 100 and 500 offsets and one
  ``complete`` per chunk, in order and shuffled within a window of 10,000 records
  (in chunks); ns per record, amortised;
* bytes of memory per unfinished offset (tracemalloc), holding 10,000 offsets.

Time is this process's CPU time (``time.process_time``), so that other work on
a shared machine inflates it less than wall time would. Rounds are interleaved:
every round runs every configuration once, in an order rotated each round; each
figure is the median over rounds, and a ratio is the median of the per-round
ratios (the two figures of a ratio come from the same round), with its range. The
shuffle is seeded, so every round does the same work.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any

from offsetledger.core import OffsetLedger, RangeTicket, Ticket, TopicPartition

TP = TopicPartition("bench", 0)
SMALL, LARGE = 10, 10_000
CHUNKS = (10, 100, 500)


def _ledger() -> OffsetLedger:
    ledger = OffsetLedger(max_unfinished_per_partition=10**9, max_unfinished_total=10**9)
    ledger.assign(TP, 0)
    return ledger


def completion_order(records: int, window: int, *, shuffled: bool, seed: int = 1) -> list[int]:
    """For each record i (after the window fills), the index of the record to
    complete: in order, the oldest; shuffled, a random one among the ``window``
    oldest in flight. Precomputed so the timed loop does no random draws."""
    if not shuffled:
        return list(range(records))
    rng = random.Random(seed)
    in_flight: list[int] = []
    order: list[int] = []
    for i in range(records):
        in_flight.append(i)
        if len(in_flight) > window:
            j = rng.randrange(len(in_flight))
            in_flight[j], in_flight[-1] = in_flight[-1], in_flight[j]
            order.append(in_flight.pop())
    order.extend(in_flight)
    return order


class _StubLedger:
    """The harness alone: builds the ticket, keeps no state."""

    def track(self, tp: TopicPartition, offset: int) -> Ticket:
        return Ticket(tp, offset, 1)

    def complete(self, ticket: Ticket) -> None:
        return None


def time_track_complete(records: int, window: int, *, shuffled: bool, stub: bool = False) -> float:
    """ns per record for track + complete with ``window`` records in flight."""
    order = completion_order(records, window, shuffled=shuffled)
    ledger = _ledger()
    track, complete = (
        (_StubLedger().track, _StubLedger().complete) if stub else (ledger.track, ledger.complete)
    )
    tickets: list[Ticket] = [None] * records  # type: ignore[list-item]
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        done = 0
        for i in range(records):
            tickets[i] = track(TP, i)
            if i >= window:
                complete(tickets[order[done]])
                done += 1
        for k in range(done, records):
            complete(tickets[order[k]])
        elapsed = time.process_time() - start
    finally:
        gc.enable()
    assert stub or ledger.watermark(TP) == records, "benchmark did not finish every record"
    return elapsed / records * 1e9


def time_chunks(records: int, size: int, window: int, *, shuffled: bool) -> float:
    """ns per record for track_range + complete over chunks of ``size`` offsets, with
    up to ``window`` records (``window // size`` chunks, at least 1) in flight."""
    chunks = records // size
    order = completion_order(chunks, max(window // size, 1), shuffled=shuffled)
    offsets = [range(c * size, (c + 1) * size) for c in range(chunks)]
    ledger = _ledger()
    track_range, complete = ledger.track_range, ledger.complete
    tickets: list[RangeTicket] = [None] * chunks  # type: ignore[list-item]
    in_flight = max(window // size, 1)
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        done = 0
        for c in range(chunks):
            tickets[c] = track_range(TP, offsets[c])
            if c >= in_flight:
                complete(tickets[order[done]])
                done += 1
        for k in range(done, chunks):
            complete(tickets[order[k]])
        elapsed = time.process_time() - start
    finally:
        gc.enable()
    assert ledger.watermark(TP) == chunks * size, "benchmark did not finish every chunk"
    return elapsed / (chunks * size) * 1e9


def bytes_per_unfinished(count: int = LARGE) -> float:
    """Memory the ledger holds per tracked-and-unfinished offset (tickets excluded)."""
    ledger = _ledger()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            ledger.track(TP, i)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert ledger.unfinished(TP) == count
    return (after - before) / count


def measure(records: int, runs: int) -> dict[str, Any]:
    """Every configuration once per round, in an order rotated each round, ``runs``
    rounds; medians (and best) per configuration, ratios per round."""
    jobs: dict[str, Any] = {}
    for shuffled in (False, True):
        for window in (SMALL, LARGE):
            jobs[_name(shuffled, window)] = (time_track_complete, (records, window), shuffled)
            jobs["stub_" + _name(shuffled, window)] = (
                lambda r, w, *, shuffled: time_track_complete(r, w, shuffled=shuffled, stub=True),
                (records, window),
                shuffled,
            )
        for size in CHUNKS:
            jobs[f"chunk{size}_{'shuffled' if shuffled else 'in_order'}"] = (
                time_chunks,
                (records, size, LARGE),
                shuffled,
            )
    names = list(jobs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    memory: list[float] = []
    for round_no in range(runs):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            func, fargs, shuffled = jobs[name]
            samples[name].append(func(*fargs, shuffled=shuffled))
        memory.append(bytes_per_unfinished())
    median = {name: statistics.median(values) for name, values in samples.items()}

    def ratios(prefix: str, shuffled: bool) -> dict[str, float]:
        large, small = (
            samples[prefix + _name(shuffled, LARGE)],
            samples[prefix + _name(shuffled, SMALL)],
        )
        per_round = [a / b for a, b in zip(large, small, strict=True)]
        return {
            "median": statistics.median(per_round),
            "min": min(per_round),
            "max": max(per_round),
        }

    chunk_small = {
        f"chunk{size}": median[f"chunk{size}_shuffled"] / median[f"chunk{size}_in_order"]
        for size in CHUNKS
    }
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "records": records,
        "runs": runs,
        "ns_per_record": median,
        "ns_per_record_best": {name: min(values) for name, values in samples.items()},
        "ratio_in_order": ratios("", False),
        "ratio_shuffled": ratios("", True),
        "stub_ratio_in_order": ratios("stub_", False),
        "stub_ratio_shuffled": ratios("stub_", True),
        "chunk_shuffled_over_in_order": chunk_small,
        "bytes_per_unfinished": statistics.median(memory),
    }


def _name(shuffled: bool, window: int) -> str:
    return f"{'shuffled' if shuffled else 'in_order'}_w{window}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    result = measure(args.records, args.runs)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"OffsetLedger, {args.records:,} records, {args.runs} interleaved rounds, medians, "
        f"Python {result['python']} ({result['machine']})"
    )
    print(
        f"{'per offset':<34}{'window 10':>12}{'window 10k':>12}"
        f"{'ratio (median, range per round)':>34}"
    )
    med = result["ns_per_record"]
    for prefix, label in (("", "ledger"), ("stub_", "harness only (stub)")):
        for order, shuffled in (("in order", False), ("shuffled", True)):
            small = med[prefix + _name(shuffled, SMALL)]
            large = med[prefix + _name(shuffled, LARGE)]
            r = result[f"{prefix}ratio_{'shuffled' if shuffled else 'in_order'}"]
            print(
                f"{label + ', ' + order:<34}{small:>9.0f} ns{large:>9.0f} ns"
                f"{r['median']:>14.2f} ({r['min']:.2f}-{r['max']:.2f})"
            )
    print(f"{'chunk mode (window 10k records)':<34}{'in order':>12}{'shuffled':>12}")
    for size in CHUNKS:
        print(
            f"{f'chunks of {size}':<34}{med[f'chunk{size}_in_order']:>9.1f} ns"
            f"{med[f'chunk{size}_shuffled']:>9.1f} ns"
        )
    print(f"memory: {result['bytes_per_unfinished']:.0f} bytes per unfinished offset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
