"""The one call catches the runtime's planted bugs (tests/model/planted.py) on the
getting-started handler with its default fault mix: a user's CI would see them."""

from __future__ import annotations

import pytest

from offsetledger.testing import simulate
from tests.model.planted import by_name
from tests.testing.test_simulate import CONFIG, handle

CAUGHT = [
    "store_before_processing",
    "watermark_highest_finished",
    "store_before_delivery_report",
    "revoke_commits_abandoned",
    "restored_wrong_position",
]


@pytest.mark.parametrize("name", CAUGHT)
def test_planted_runtime_bugs_fail_the_one_call(name: str) -> None:
    with by_name(name).plant():
        report = simulate(handle, config=CONFIG, topics=["numbers"], outputs=["doubled"], seeds=10)
    assert not report.ok, f"planted bug {name} not caught in seeds 0..9"
    text = report.summary()
    first = report.failed[0]
    assert f"seed {first.seed}:" in text
    assert any(k in text for k in ("lost", "commit_past_unfinished")), text


def test_the_same_handler_passes_without_a_planted_bug() -> None:
    report = simulate(handle, config=CONFIG, topics=["numbers"], outputs=["doubled"], seeds=10)
    assert report.ok, report.summary()
