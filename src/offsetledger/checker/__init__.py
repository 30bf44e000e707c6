"""The history checker: reads what a run did (an :class:`offsetledger.history.History`,
or what a real broker holds afterwards) and reports every violation of the
at-least-once invariants by name, with the records involved.

>>> report = check(history)  # topics inferred; or inputs=["in"], outputs=["out"], ...
>>> report.ok, report.summary()

The invariants and their anomalies are listed on :class:`AnomalyKind`; the exact
terms (input, acknowledged, finished, log start, assignment epoch) are defined
in :mod:`offsetledger.checker._check`.
"""

from offsetledger.checker._broker import check_broker
from offsetledger.checker._check import (
    AutoOffsetReset,
    check,
    check_file,
    check_topics,
    infer_topics,
    load_history,
)
from offsetledger.checker._invariants import BufferLimits, check_pipeline, check_workload
from offsetledger.checker._report import Anomaly, AnomalyKind, Report, Stats

__all__ = [
    "Anomaly",
    "AnomalyKind",
    "AutoOffsetReset",
    "BufferLimits",
    "Report",
    "Stats",
    "check",
    "check_broker",
    "check_file",
    "check_pipeline",
    "check_topics",
    "check_workload",
    "infer_topics",
    "load_history",
]
