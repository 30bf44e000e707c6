"""Planted bugs in the transactional simulator and the ExactlyOnce checker, each
applied to the source in turn, the named tests run, the source restored.

    .venv/bin/python tests/simulator/txn_planted_runner.py [bug ...]

Prints CAUGHT/MISSED per bug with the failing tests. Not collected by pytest (it
edits the working tree while it runs).
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUGS = [
    (
        "read_committed_returns_aborted",
        "src/offsetledger/simulator/_log.py",
        "if entry is not None and base + i not in aborted:",
        "if entry is not None:",
        "tests/contract/test_simulator_contract.py -k Transactional",
    ),
    (
        "marker_not_a_gap",
        "src/offsetledger/simulator/_transactions.py",
        "            marker = log.append_control()\n",
        "            marker = log.end - 1\n",
        "tests/contract/test_simulator_contract.py -k Transactional",
    ),
    (
        "offsets_committed_on_abort",
        "src/offsetledger/simulator/_transactions.py",
        "        if commit and group is not None:",
        "        if group is not None:",
        "tests/contract/test_simulator_contract.py -k Transactional",
    ),
    (
        "lso_ignored",
        "src/offsetledger/simulator/_log.py",
        "        if self.open_txns:\n            return min(self.open_txns.values())",
        "        if False:\n            return 0",
        "tests/contract/test_simulator_contract.py -k Transactional",
    ),
    (
        "reinit_keeps_predecessor_open",
        "src/offsetledger/simulator/_transactions.py",
        """        found = self.open.get(transactional_id)
        if found is not None:
            self.end(found, commit=False, reason="fenced")
        epoch = self.epochs""",
        """        epoch = self.epochs""",
        "tests/contract/test_simulator_contract.py -k Transactional",
    ),
    (
        "stale_metadata_accepted",
        "src/offsetledger/simulator/_transactions.py",
        "        if error is not None:\n            return error\n",
        "",
        "tests/contract/test_simulator_contract.py -k Transactional",
    ),
    (
        "checker_duplicates_ignored",
        "src/offsetledger/checker/_exactly_once.py",
        "if len(writers) > 1:",
        "if len(writers) > 2:",
        "tests/checker/test_exactly_once.py",
    ),
    (
        "checker_open_at_end_visible",
        "src/offsetledger/checker/_exactly_once.py",
        "        return key not in self.open_at_end\n",
        "        return True\n",
        "tests/checker/test_exactly_once.py",
    ),
    (
        "checker_aborted_polls_ok",
        "src/offsetledger/checker/_exactly_once.py",
        "(not found[0] or found[1] > e.seq)",
        "(found[1] > e.seq)",
        "tests/checker/test_exactly_once.py",
    ),
]
only = sys.argv[1:]
for name, path, old, new, tests in BUGS:
    if only and name not in only:
        continue
    f = ROOT / path
    text = f.read_text()
    assert text.count(old) == 1, (name, text.count(old))
    f.write_text(text.replace(old, new))
    try:
        cmd = [".venv/bin/python", "-m", "pytest", *tests.split(), "-q", "-p", "no:randomly"]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False).stdout
        lines = out.splitlines()
        failed = sorted(
            {line.split(" - ")[0].split("::")[-1] for line in lines if line.startswith("FAILED")}
        )
        verdict = "CAUGHT" if failed else "MISSED"
        print(f"{name}: {verdict} by {len(failed)}: {failed} | {lines[-1] if lines else ''}")
    finally:
        f.write_text(text)
