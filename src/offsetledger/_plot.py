"""Draw a simulated run: per input partition, the produced end, the consumed
position and the committed position over virtual time, with crash and
rebalance markers. Needs matplotlib (the ``plot`` extra)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from offsetledger.history import Append, Assign, Commit, Crash, Event, Lost, Poll

__all__ = ["Series", "figure", "plot_history", "series"]

Series = dict[int, dict[str, list[tuple[float, int]]]]

#: name -> (colour, line width, legend label); drawn in this order, committed on top
LINES = {
    "produced": ("#8c8c8c", 1.2, "produced (log end)"),
    "consumed": ("#1f77b4", 1.6, "consumed (highest polled + 1)"),
    "committed": ("#2ca02c", 1.4, "committed position"),
}
CRASH_COLOUR = "#d62728"
REBALANCE_COLOUR = "#ff7f0e"


def series(
    events: Iterable[Event], topic: str, *, end: float | None = None
) -> tuple[Series, list[float], list[float]]:
    """Per partition of ``topic``: step series ``produced`` (log end), ``consumed``
    (highest polled offset + 1) and ``committed`` (successful commits), plus the
    times of crashes and of rebalances (assignments and lost partitions).

    With ``end`` (a time), every non-empty series gets a last point at ``end``
    holding its final value, so a line that stopped changing is drawn to the end of
    the run instead of stopping where its last change was."""
    out: Series = defaultdict(lambda: {"produced": [], "consumed": [], "committed": []})
    crashes: list[float] = []
    rebalances: list[float] = []
    consumed: dict[int, int] = {}
    last_rebalance = -1.0
    for e in events:
        if isinstance(e, Append) and e.topic == topic:
            out[e.partition]["produced"].append((e.time, e.offset + 1))
        elif isinstance(e, Poll) and e.topic == topic:
            if e.offset + 1 > consumed.get(e.partition, -1):
                consumed[e.partition] = e.offset + 1
                out[e.partition]["consumed"].append((e.time, e.offset + 1))
        elif isinstance(e, Commit) and e.topic == topic and e.ok:
            out[e.partition]["committed"].append((e.time, e.position))
        elif isinstance(e, Crash):
            crashes.append(e.time)
        elif isinstance(e, Assign | Lost) and e.time != last_rebalance:
            rebalances.append(e.time)
            last_rebalance = e.time
    if end is not None:
        for lines in out.values():
            for points in lines.values():
                if points and points[-1][0] < end:
                    points.append((end, points[-1][1]))
    return dict(out), crashes, rebalances


def figure(events: Iterable[Event], topic: str, *, title: str = "") -> Any:
    """The matplotlib Figure of the run (one panel per partition of ``topic``).

    Crashes and rebalances are thin, light vertical lines behind the position
    lines (a crash also has a small red triangle on each panel's top edge), each
    with a legend entry giving its count; the legend sits above the panels, so it
    hides no data. Every line is drawn to the time of the run's last event."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("--plot needs matplotlib: pip install 'offsetledger[plot]'") from exc
    events = list(events)
    end = max((e.time for e in events), default=0.0)
    data, crashes, rebalances = series(events, topic, end=end)
    partitions = sorted(data)
    rows = max(1, len(partitions))
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.2 * rows + 1.2), sharex=True, squeeze=False)
    for ax, partition in zip(axes[:, 0], partitions, strict=False):
        for t in rebalances:
            ax.axvline(t, color=REBALANCE_COLOUR, alpha=0.15, linewidth=0.5, zorder=1)
        for t in crashes:
            ax.axvline(
                t, color=CRASH_COLOUR, alpha=0.35, linewidth=0.6, linestyle=(0, (4, 3)), zorder=1
            )
        if crashes:
            ax.plot(
                crashes,
                [1.0] * len(crashes),
                linestyle="none",
                marker="v",
                markersize=4,
                color=CRASH_COLOUR,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                zorder=4,
            )
        for name, (colour, width, _label) in LINES.items():
            points = data[partition][name]
            if points:
                xs = [t for t, _ in points]
                ys = [v for _, v in points]
                ax.step(xs, ys, where="post", color=colour, linewidth=width, zorder=3)
        ax.set_ylabel(f"{topic}[{partition}]\nposition")
        ax.grid(alpha=0.2, zorder=0)
        ax.set_xlim(0, end or 1.0)
    handles = [
        Line2D([], [], color=colour, linewidth=width, label=label)
        for colour, width, label in LINES.values()
    ]
    handles.append(
        Line2D(
            [],
            [],
            color=CRASH_COLOUR,
            linestyle=(0, (4, 3)),
            marker="v",
            markersize=4,
            linewidth=0.8,
            label=f"crash ({len(crashes)})",
        )
    )
    handles.append(
        Line2D(
            [], [], color=REBALANCE_COLOUR, linewidth=0.8, label=f"rebalance ({len(rebalances)})"
        )
    )
    axes[-1, 0].set_xlabel("virtual time (s)")
    fig.suptitle(title or f"offsetledger simulate: positions of {topic}")
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=len(handles),
        fontsize="small",
        frameon=False,
        bbox_to_anchor=(0.5, 0.965),
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def plot_history(events: Iterable[Event], topic: str, path: str | Path, *, title: str = "") -> None:
    """Write the plot to ``path`` (PNG or SVG, by its suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"plot file must end in .png or .svg, got {str(path)!r}")
    fig = figure(events, topic, title=title)
    import matplotlib.pyplot as plt

    fig.savefig(str(path))
    plt.close(fig)
