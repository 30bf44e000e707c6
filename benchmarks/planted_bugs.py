"""Evidence the tests bite: run the whole-system model test and the swarm under
each planted bug of ``tests/model/planted.py`` and print which caught it.

For every bug: the model test (``tests/model/test_system_model.py`` through
hypothesis' ``run_state_machine_as_test`` with the ``ci`` settings, shrinking off
unless ``--shrink``) and the swarm (seeds ``0..N-1`` with the drawn configs,
stopping at the first failing seed). A control row runs both with no bug planted
and must pass. Exit status 1 when a bug goes uncaught or the control fails.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.planted_bugs                 # every bug, 200 seeds
    .venv/bin/python -m benchmarks.planted_bugs --bug ignoring_epochs --shrink
    .venv/bin/python -m benchmarks.planted_bugs --seeds 50 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

if __package__ in {None, ""}:  # run as a file: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import Phase, settings
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test
from tests.model.planted import CATALOGUE, CONTROLS, PlantedBug, by_name
from tests.model.test_system_model import SystemMachine, machine_settings
from tests.model.test_txn_system_model import TransactionalSystemMachine, txn_machine_settings

from offsetledger.scenario import run_simulation
from offsetledger.swarm import draw_config

__all__ = ["BugOutcome", "main", "run_model", "run_planted", "run_swarm_until_failure"]


@attrs.frozen
class ModelOutcome:
    """The model test's verdict: ``caught`` with the reported program's size in
    steps (the first failing program, or the shrunk one with ``shrink``), the
    failure's first line, and the wall time."""

    caught: bool
    steps: int | None
    failure: str
    seconds: float


@attrs.frozen
class SwarmResult:
    """The swarm's verdict: the first failing seed (None: none within ``seeds_run``)
    and why it failed."""

    first_failing_seed: int | None
    seeds_run: int
    failure: str
    seconds: float

    @property
    def caught(self) -> bool:
        return self.first_failing_seed is not None


@attrs.frozen
class BugOutcome:
    """One row of the table (``bug`` None: the control, nothing planted)."""

    bug: PlantedBug | None
    model: ModelOutcome
    swarm: SwarmResult

    @property
    def name(self) -> str:
        return "control: nothing planted" if self.bug is None else self.bug.name

    @property
    def is_control(self) -> bool:
        return self.bug is None or self.bug.source == "control"

    @property
    def caught(self) -> bool:
        return self.model.caught or self.swarm.caught

    def to_dict(self) -> dict[str, Any]:
        return {
            "bug": self.name,
            "caught": self.caught,
            "model": attrs.asdict(self.model),
            "swarm": attrs.asdict(self.swarm),
        }


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()
    detail = next((line for line in text if "seed" in line), "")
    return f"{type(exc).__name__}: {detail or (text[0] if text else '')}"[:160]


@contextlib.contextmanager
def _planted(bug: PlantedBug | None) -> Iterator[None]:
    if bug is None:
        yield
    else:
        with bug.plant():
            yield


def run_model(bug: PlantedBug | None, *, shrink: bool = False, profile: str = "ci") -> ModelOutcome:
    """Run the model test with ``bug`` planted (the exactly-once one for a bug whose
    ``model`` is ``"txn"``)."""
    phases = tuple(Phase) if shrink else tuple(p for p in Phase if p is not Phase.shrink)
    machine: Any = SystemMachine
    base = machine_settings(profile)
    if bug is not None and bug.model == "txn":  # the exactly-once model test
        machine, base = TransactionalSystemMachine, txn_machine_settings(profile)
    chosen = settings(base, phases=phases)
    report: list[object] = []
    started = time.perf_counter()
    machine.steps_run = 0
    try:
        with _planted(bug), with_reporter(report.append):
            run_state_machine_as_test(machine, settings=chosen)
    except HypothesisException as exc:  # e.g. Flaky: a broken experiment, not a catch
        raise RuntimeError(f"the model test could not judge {bug}: {exc!r}") from exc
    except Exception as exc:  # an invariant failed, or the code under test raised
        return ModelOutcome(
            True, machine.steps_run, _first_line(exc), time.perf_counter() - started
        )
    return ModelOutcome(False, None, "", time.perf_counter() - started)


def run_swarm_until_failure(bug: PlantedBug | None, seeds: int) -> SwarmResult:
    """Run swarm seeds ``0..seeds-1`` with ``bug`` planted; stop at the first failure
    (an anomaly, an unfinished drain, or an exception)."""
    started = time.perf_counter()
    with _planted(bug):
        for seed in range(seeds):
            try:
                result = run_simulation(draw_config(seed))
            except Exception as exc:  # the planted bug broke the run itself
                return SwarmResult(seed, seed + 1, _first_line(exc), time.perf_counter() - started)
            if not result.ok:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(result.report.counts().items()))
                why = counts or "not drained"
                return SwarmResult(seed, seed + 1, why, time.perf_counter() - started)
    return SwarmResult(None, seeds, "", time.perf_counter() - started)


def run_planted(
    bug: PlantedBug | None, *, seeds: int, shrink: bool = False, profile: str = "ci"
) -> BugOutcome:
    """Run both the model test and the swarm against ``bug`` (None: the control)."""
    logging.disable(logging.CRITICAL)  # the processors' warnings are expected
    try:
        return BugOutcome(
            bug, run_model(bug, shrink=shrink, profile=profile), run_swarm_until_failure(bug, seeds)
        )
    finally:
        logging.disable(logging.NOTSET)


def _table(rows: Sequence[BugOutcome]) -> str:
    lines = [
        f"{'bug':30} {'model test':24} {'swarm':22} caught  why (model | swarm)",
        "-" * 110,
    ]
    for row in rows:
        m, s = row.model, row.swarm
        model = f"yes, {m.steps} steps" if m.caught else "no"
        swarm = f"yes, seed {s.first_failing_seed}" if s.caught else f"no ({s.seeds_run} seeds)"
        model += f" ({m.seconds:.0f}s)"
        swarm += f" ({s.seconds:.0f}s)"
        verdict = "yes" if row.caught else "NO"
        lines.append(
            f"{row.name:30} {model:24} {swarm:22} {verdict:7} {m.failure or '-'} | "
            f"{s.failure or '-'}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.planted_bugs",
        description="Run the model test and the swarm against planted bugs; exit 1 "
        "when one goes uncaught or the control (no bug) fails.",
    )
    parser.add_argument("--bug", action="append", help="only this bug (repeatable)")
    parser.add_argument("--seeds", type=int, default=200, help="swarm seed budget (200)")
    parser.add_argument("--shrink", action="store_true", help="shrink the model's program")
    parser.add_argument("--no-control", action="store_true", help="skip the control row")
    parser.add_argument("--profile", default="ci", help="hypothesis profile (ci)")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args(argv)
    bugs = [by_name(n) for n in args.bug] if args.bug else list(CATALOGUE)
    rows: list[BugOutcome] = []
    targets: list[PlantedBug | None] = [*bugs]
    if not args.no_control:
        targets += [*CONTROLS, None]
    for bug in targets:
        row = run_planted(bug, seeds=args.seeds, shrink=args.shrink, profile=args.profile)
        rows.append(row)
        if args.json:
            print(json.dumps(row.to_dict(), sort_keys=True), flush=True)
        else:
            print(f"... {row.name}: {'caught' if row.caught else 'not caught'}", flush=True)
    planted = [r for r in rows if not r.is_control]
    caught = sum(r.caught for r in planted)
    control_ok = all(not r.caught for r in rows if r.is_control)
    if not args.json:
        print(_table(rows))
        verdict = "passes" if control_ok else "FAILS"
        print(f"caught {caught} of {len(planted)} planted bugs; control {verdict}")
    return 0 if caught == len(planted) and control_ok else 1


if __name__ == "__main__":
    sys.exit(main())
