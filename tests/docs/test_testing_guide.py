"""docs/testing.md's pytest-plugin example, run by pytester as a user's test file
(the guide's first block is the user's module)."""

from __future__ import annotations

import pytest

from tests.docs.test_examples import ROOT, python_blocks

pytest_plugins = ["pytester"]


def test_the_plugin_example_passes_and_a_broken_copy_fails(pytester: pytest.Pytester) -> None:
    blocks = python_blocks(ROOT / "docs" / "testing.md")
    app = blocks[0]
    (plugin_example,) = [b for b in blocks if "offsetledger_simulate" in b]
    pytester.makepyfile(test_doubler=app + "\n\n" + plugin_example)
    pytester.runpytest("--offsetledger-seeds=3", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    broken = app.replace('Outbound("doubled"', 'Outbound("doubeld"')
    assert broken != app
    pytester.makepyfile(test_doubler=broken + "\n\n" + plugin_example)
    result = pytester.runpytest("--offsetledger-seeds=2", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*reproduce: pytest test_doubler.py::test_doubler --offsetledger-seed=0*"]
    )
