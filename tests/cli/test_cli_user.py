"""The CLI on a user's own handler and files, run in a subprocess as a user runs
it: every case of issue 11's "Where it stands" that concerns the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SMALL = ["--records", "200", "--partitions", "3", "--consumers", "2"]

APP = textwrap.dedent(
    """
    from offsetledger import Outbound, Record
    from offsetledger.runtime import ProcessorConfig, RetryPolicy

    CONFIG = ProcessorConfig(
        retry=RetryPolicy(max_attempts=5, backoff_base=0.2, backoff_max=5.0),
        dead_letter_topic="numbers.dlq",
    )
    NOT_A_CONFIG = {"dead_letter_topic": "numbers.dlq"}

    def handle(record: Record) -> list[Outbound]:
        return [Outbound("doubled", value=b"%d" % (int(record.value) * 2), key=record.key)]

    def typo(record: Record) -> list[Outbound]:
        return [Outbound("doubeld", value=record.value)]

    async def coroutine(record: Record) -> list[Outbound]:
        return []
    """
)
USER = ["--config", "myapp:CONFIG", "--topics", "numbers", "--outputs", "doubled"]


def run(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run(
        [sys.executable, "-m", "offsetledger.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
    )


def one_line_exit_2(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("h") / "run.jsonl"
    proc = run("simulate", "--seed", "3", *SMALL, "--history", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "wrote history" in proc.stderr
    return path


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "myapp.py").write_text(APP)
    return tmp_path


def test_check_infers_the_topics_simulate_used(history: Path) -> None:
    proc = run("check", str(history))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "topics: inputs in; outputs out, out2; dead-letter dlq" in proc.stdout


def test_forgetting_the_dead_letter_topic_is_no_false_alarm(history: Path) -> None:
    proc = run("check", str(history), "--inputs", "in", "--outputs", "out")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--inputs", "input", "--outputs", "out"], "input topic 'input' does not occur"),
        (["--inputs", "in", "--outputs", "output"], "output topic 'output' does not occur"),
    ],
)
def test_wrong_topic_names_are_an_error_not_ok(history: Path, args: list[str], needle: str) -> None:
    one_line_exit_2(run("check", str(history), *args), needle)


def _lines(history: Path) -> list[str]:
    return history.read_text().splitlines()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (
            lambda h, p: p.write_text("\n".join(_lines(h)[:50]) + "\n" + _lines(h)[50][:30]),
            "line 51",
        ),
        (lambda h, p: p.write_text('{"kind":"meteor","seq":0}\n'), "unknown kind 'meteor'"),
        (lambda h, p: p.write_text("this is not json\n"), "line 1"),
        (
            lambda h, p: p.write_text(
                '{"kind":"append","by":"x","topic":"in","partition":0,"offset":"x"}\n'
            ),
            "field 'offset' of kind 'append' is 'x'",
        ),
        (lambda h, p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary"), "not a text file"),
        (lambda h, p: p.write_text(""), "is empty"),
        (lambda h, p: p.mkdir(), "is a directory"),
    ],
    ids=["truncated", "unknown-kind", "bad-json", "offset-x", "binary", "empty", "directory"],
)
def test_bad_history_files_are_one_line_and_exit_2(
    history: Path, tmp_path: Path, make: object, needle: str
) -> None:
    path = tmp_path / "bad.jsonl"
    make(history, path)  # type: ignore[operator]
    one_line_exit_2(run("check", str(path)), needle)


@pytest.mark.parametrize("option", ["--history", "--plot"])
def test_output_into_a_missing_folder_fails_before_the_simulation(option: str) -> None:
    suffix = "x.jsonl" if option == "--history" else "x.png"
    proc = run("simulate", "--records", "100000000", option, f"/no/such/dir/{suffix}")
    one_line_exit_2(proc, "does not exist")
    assert proc.stdout == ""


def test_verbose_is_accepted_after_the_subcommand() -> None:
    proc = run("simulate", "-v", "--records", "50", "--faults", "none")
    assert proc.returncode == 0, proc.stderr


def test_fault_names_in_the_api_spelling_are_accepted() -> None:
    proc = run("simulate", *SMALL, "--faults", "ack_lost,assignment_lost,crash", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["config"]["faults"] == ["ack-lost", "crash", "lost"]


def test_help_says_which_topics_simulate_uses_and_what_lines_mean() -> None:
    text = run("simulate", "--help").stdout
    assert "'in'" in text
    assert "'out'" in text
    assert "'dlq'" in text
    assert "skipped (meta)" in text
    assert "--handler" in text


def test_the_users_handler_passes(app: Path) -> None:
    proc = run("simulate", "--handler", "myapp:handle", *USER, *SMALL, "--seeds", "2", cwd=app)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "seed 0: OK" in proc.stdout
    assert "seed 1: OK" in proc.stdout


def test_a_topic_typo_fails_with_a_reproducer(app: Path) -> None:
    proc = run("simulate", "--handler", "myapp:typo", *USER, *SMALL, "--seed", "4", cwd=app)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "seed 4: FAILED" in proc.stdout
    assert "UNKNOWN_TOPIC_OR_PART" in proc.stdout
    assert "reproduce: offsetledger simulate --handler myapp:typo" in proc.stdout
    assert "--seed 4" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--handler", "myapp:coroutine"], "async function"),
        (["--handler", "myapp"], "expected pkg.module:name"),
        (["--handler", "nosuchmodule:f"], "cannot import 'nosuchmodule'"),
        (["--handler", "myapp:nothing"], "has no attribute 'nothing'"),
        (["--handler", "myapp:handle", "--config", "myapp:NOT_A_CONFIG"], "not a ProcessorConfig"),
        (["--config", "myapp:CONFIG"], "--config needs --handler"),
    ],
)
def test_bad_handler_arguments_are_one_line_and_exit_2(
    app: Path, args: list[str], needle: str
) -> None:
    one_line_exit_2(run("simulate", *args, cwd=app), needle)


def test_the_swarm_is_a_subcommand() -> None:
    proc = run("swarm", "--replay", "3", "--json", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["seed"] == 3
