"""The fault suite's figures, printed once at the end of the run (quotable in CI logs)."""

from __future__ import annotations

import pytest

from tests.reliability.harness import SUMMARIES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("fault suite figures")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
