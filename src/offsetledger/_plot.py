"""Draw a simulated run: per input partition, the produced end, the consumed
position and the committed position over virtual time, with crash and
rebalance markers. Needs matplotlib (the ``plot`` extra)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from offsetledger.history import Append, Assign, Commit, Crash, Event, Lost, Poll

__all__ = ["Series", "plot_history", "series"]

Series = dict[int, dict[str, list[tuple[float, int]]]]


def series(events: Iterable[Event], topic: str) -> tuple[Series, list[float], list[float]]:
    """Per partition of ``topic``: step series ``produced`` (log end), ``consumed``
    (highest polled offset + 1) and ``committed`` (successful commits), plus the
    times of crashes and of rebalances (assignments and lost partitions)."""
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
    return dict(out), crashes, rebalances


def plot_history(events: Iterable[Event], topic: str, path: str | Path, *, title: str = "") -> None:
    """Write the plot to ``path`` (PNG or SVG, by its suffix)."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("--plot needs matplotlib: pip install 'offsetledger[plot]'") from exc
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"plot file must end in .png or .svg, got {str(path)!r}")
    data, crashes, rebalances = series(events, topic)
    partitions = sorted(data)
    rows = max(1, len(partitions))
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.2 * rows + 0.8), sharex=True, squeeze=False)
    styles = {
        "produced": ("#888888", "-"),
        "consumed": ("#1f77b4", "-"),
        "committed": ("#2ca02c", "-"),
    }
    for ax, partition in zip(axes[:, 0], partitions, strict=False):
        for name, points in data[partition].items():
            if not points:
                continue
            xs = [t for t, _ in points]
            ys = [v for _, v in points]
            color, style = styles[name]
            ax.step(xs, ys, where="post", color=color, linestyle=style, label=name, linewidth=1.2)
        for t in rebalances:
            ax.axvline(t, color="#ff7f0e", alpha=0.25, linewidth=0.8)
        for t in crashes:
            ax.axvline(t, color="#d62728", alpha=0.8, linewidth=1.0, linestyle="--")
        ax.set_ylabel(f"{topic}[{partition}]\nposition")
        ax.grid(alpha=0.2)
    axes[0, 0].legend(loc="upper left", fontsize="small")
    axes[-1, 0].set_xlabel("virtual time (s)   — red dashed: crash, orange: rebalance")
    fig.suptitle(title or f"offsetledger simulate: positions of {topic}")
    fig.tight_layout()
    fig.savefig(str(path))
    plt.close(fig)
