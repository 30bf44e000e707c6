"""The ``--plot`` picture: lines drawn to the end of the run, crash and rebalance
markers light, behind the lines, and in the legend."""

from __future__ import annotations

import pytest

from offsetledger._plot import figure, series
from offsetledger.history import Append, Assign, Commit, Crash, Event, Poll


def history() -> list[Event]:
    return [
        Append(seq=1, time=0.0, by="seed", topic="in", partition=0, offset=0),
        Append(seq=2, time=0.0, by="seed", topic="in", partition=0, offset=1),
        Assign(seq=3, time=0.5, member="m0", generation=1, partitions=(("in", 0),)),
        Poll(seq=4, time=1.0, member="m0", generation=1, topic="in", partition=0, offset=0),
        Poll(seq=5, time=1.0, member="m0", generation=1, topic="in", partition=0, offset=1),
        Crash(seq=6, time=2.0, member="m0"),
        Commit(seq=7, time=3.0, member="m1", generation=2, topic="in", partition=0, position=2),
        Assign(seq=8, time=9.0, member="m1", generation=3, partitions=(("in", 0),)),
    ]


def test_every_line_reaches_the_end_of_the_run() -> None:
    data, crashes, rebalances = series(history(), "in", end=9.0)
    assert crashes == [2.0]
    assert rebalances == [0.5, 9.0]
    for name in ("produced", "consumed", "committed"):
        assert data[0][name][-1] == (9.0, 2), name
    # without an end, a series stops at its last change (the old picture)
    assert series(history(), "in")[0][0]["consumed"][-1] == (1.0, 2)


def test_markers_are_light_behind_the_lines_and_in_the_legend() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    fig = figure(history(), "in", title="t")
    try:
        (ax,) = fig.axes
        lines = [line for line in ax.lines if line.get_marker() != "v"]  # not the crash ticks
        verticals = [line for line in lines if len(set(line.get_xdata())) == 1]
        steps = [line for line in lines if line not in verticals]
        assert len(verticals) == 3  # two rebalances, one crash
        assert all((line.get_alpha() or 1.0) <= 0.5 for line in verticals)
        assert max(v.get_zorder() for v in verticals) < min(s.get_zorder() for s in steps)
        assert all(max(s.get_xdata()) == 9.0 for s in steps)
        (legend,) = fig.legends
        labels = [text.get_text() for text in legend.get_texts()]
        assert "crash (1)" in labels
        assert "rebalance (2)" in labels
        assert any(label.startswith("consumed") for label in labels)
    finally:
        plt.close(fig)
