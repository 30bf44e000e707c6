"""OffsetLedger hot path: track + complete per record.

Usage::

    python benchmarks/bench_ledger.py [--records N] [--runs R] [--json]

Measures, for one partition:

* ns per record for track + complete, completing (a) in order and (b) shuffled
  within a window of in-flight records, for windows of 10 and 10,000 unfinished
  offsets; the ratio of the two shows whether the cost is independent of the
  window (amortised O(1));
* bytes of memory per unfinished offset (tracemalloc), holding 10,000 offsets.

Time is this process's CPU time (``time.process_time``), so that other work on
a shared machine inflates it less than wall time would. Each figure is the
median of several rounds, each round running every configuration once; the
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

from offsetledger.core import OffsetLedger, Ticket, TopicPartition

TP = TopicPartition("bench", 0)
SMALL, LARGE = 10, 10_000


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


def time_track_complete(records: int, window: int, *, shuffled: bool) -> float:
    """ns per record for track + complete with ``window`` records in flight."""
    order = completion_order(records, window, shuffled=shuffled)
    ledger = _ledger()
    track, complete = ledger.track, ledger.complete
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
    assert ledger.watermark(TP) == records, "benchmark did not finish every record"
    return elapsed / records * 1e9


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
    """Every configuration once per round, ``runs`` rounds, so that load from other
    processes spreads over all of them; medians (and best) per configuration."""
    configs = [(s, w) for s in (False, True) for w in (SMALL, LARGE)]
    samples: dict[str, list[float]] = {_name(s, w): [] for s, w in configs}
    memory: list[float] = []
    for _ in range(runs):
        for shuffled, window in configs:
            samples[_name(shuffled, window)].append(
                time_track_complete(records, window, shuffled=shuffled)
            )
        memory.append(bytes_per_unfinished())
    median = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "records": records,
        "runs": runs,
        "ns_per_record": median,
        "ns_per_record_best": {name: min(values) for name, values in samples.items()},
        "ratio_in_order": median[_name(False, LARGE)] / median[_name(False, SMALL)],
        "ratio_shuffled": median[_name(True, LARGE)] / median[_name(True, SMALL)],
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
        f"OffsetLedger track+complete, {args.records:,} records, median of {args.runs} runs, "
        f"Python {result['python']} ({result['machine']})"
    )
    header = f"{'completion order':<18}{'window 10':>12}{'window 10k':>12}{'ratio':>8}"
    print(f"{header}{'best 10/10k':>16}")
    best = result["ns_per_record_best"]
    for label, shuffled in (("in order", False), ("shuffled", True)):
        small = result["ns_per_record"][_name(shuffled, SMALL)]
        large = result["ns_per_record"][_name(shuffled, LARGE)]
        print(
            f"{label:<18}{small:>9.0f} ns{large:>9.0f} ns{large / small:>8.2f}"
            f"{best[_name(shuffled, SMALL)]:>9.0f}/{best[_name(shuffled, LARGE)]:.0f}"
        )
    print(f"memory: {result['bytes_per_unfinished']:.0f} bytes per unfinished offset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
