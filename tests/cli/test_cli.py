"""The ``offsetledger`` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SMALL = ["--records", "300", "--partitions", "3", "--consumers", "2"]

#: the keys `simulate --json` promises, with their types
SCHEMA: dict[str, type | tuple[type, ...]] = {
    "ok": bool,
    "seed": int,
    "config": dict,
    "drained": bool,
    "inputs": int,
    "outputs": int,
    "dead_letters": int,
    "lost": int,
    "unfinished": int,
    "expired": int,
    "duplicates": int,
    "crashes": int,
    "rebalances": int,
    "commits": int,
    "rejected_commits": int,
    "joins": int,
    "leaves": int,
    "skipped_restored": int,
    "rounds": int,
    "virtual_seconds": (int, float),
    "history_events": int,
    "anomalies": dict,
    "throughput_per_virtual_second": (int, float),
}


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "offsetledger.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_simulate_reports_and_exits_zero() -> None:
    proc = run("simulate", "--seed", "3", *SMALL)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "OK: nothing lost" in out
    for field in ("inputs", "outputs", "lost", "duplicates", "crashes", "rebalances", "commits"):
        assert f"  {field}" in out
    assert "throughput" in out
    assert "reproduce: offsetledger simulate --seed 3" in out
    assert "Traceback" not in proc.stderr
    # not a terminal: no progress bar
    assert "simulating [" not in proc.stderr


def test_simulate_json_schema_and_values() -> None:
    proc = run("simulate", "--seed", "4", "--json", *SMALL)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) == set(SCHEMA)
    for key, kind in SCHEMA.items():
        assert isinstance(data[key], kind), (key, data[key])
    assert data["ok"] is True
    assert data["lost"] == 0
    assert data["inputs"] == 300
    assert data["config"]["partitions"] == 3
    assert data["outputs"] + data["dead_letters"] >= data["inputs"]


def test_same_seed_same_report_different_seed_different_report() -> None:
    a = run("simulate", "--seed", "11", "--json", *SMALL)
    b = run("simulate", "--seed", "11", "--json", *SMALL)
    c = run("simulate", "--seed", "12", "--json", *SMALL)
    assert a.returncode == b.returncode == c.returncode == 0
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_history_file_round_trips_through_check(tmp_path: Path) -> None:
    history = tmp_path / "run.jsonl"
    proc = run("simulate", "--seed", "5", *SMALL, "--history", str(history))
    assert proc.returncode == 0, proc.stderr
    assert history.stat().st_size > 0
    checked = run(
        "check", str(history), "--inputs", "in", "--outputs", "out", "--dead-letter", "dlq"
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout
    as_json = run(
        "check",
        str(history),
        "--inputs",
        "in",
        "--outputs",
        "out",
        "--dead-letter",
        "dlq",
        "--json",
    )
    assert json.loads(as_json.stdout)["ok"] is True


def test_check_finds_a_lost_record(tmp_path: Path) -> None:
    history = tmp_path / "run.jsonl"
    assert run("simulate", "--seed", "6", *SMALL, "--history", str(history)).returncode == 0
    # drop every output written for input offset 0 of partition 0: that input is now lost
    kept = []
    for line in history.read_text().splitlines():
        event = json.loads(line)
        headers = {h[0]: h[1] for h in event.get("headers", [])}
        src = headers.get("offsetledger.source.offset")
        part = headers.get("offsetledger.source.partition")
        is_output = event["kind"] == "append" and event["topic"] in ("out", "dlq")
        if (
            is_output
            and src
            and part
            and base64.b64decode(src["b64"]) == b"0"
            and base64.b64decode(part["b64"]) == b"0"
        ):
            continue
        kept.append(line)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(kept) + "\n")
    proc = run("check", str(tampered), "--inputs", "in", "--outputs", "out", "--dead-letter", "dlq")
    assert proc.returncode == 1
    assert "lost" in proc.stdout.lower()


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "run.png"
    proc = run("simulate", "--seed", "2", *SMALL, "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "--partitions", "0"], "--partitions: must be >= 1, got 0"),
        (["simulate", "--crash-rate", "-0.1"], "--crash-rate: must be within [0, 1]"),
        (["simulate", "--records", "many"], "expected an integer"),
        (["simulate", "--faults", "meteor"], "unknown fault meteor"),
        (["simulate", "--ordering", "random"], "invalid choice"),
        (["simulate", "--no-such-option"], "unrecognized arguments"),
        (["simulate", "--plot", "x.jpg"], "must end in .png or .svg"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
        (["chaos"], "--bootstrap"),
        (["chaos", "--bootstrap", "nohostport"], "expected HOST:PORT"),
        (["check", "--inputs", "in", "--outputs", "out"], "either a history file or --bootstrap"),
        (["check", "missing.jsonl", "--inputs", "in", "--outputs", "out"], "not found"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args: list[str], needle: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--help" in proc.stderr or "usage" in proc.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_broker_is_a_clear_error_not_a_hang() -> None:
    pytest.importorskip("confluent_kafka")
    port = _closed_port()
    proc = run("chaos", "--bootstrap", f"127.0.0.1:{port}", "--records", "10", timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "error" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3
