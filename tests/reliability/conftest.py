"""Reliability suite wiring: every test under tests/reliability/ gets the `reliability` marker
(select or skip the suite with `-m reliability` / `-m "not reliability"`), the network is blocked
except loopback, and the counters recorded with `reliability_tools.record(section, ...)` are
printed as one line per section after the run (also with `pytest -q`).

Shared helpers live in `reliability_tools.py` (tests import it directly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from reliability_tools import COUNTS

_HERE = Path(__file__).parent.resolve()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.reliability)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not COUNTS:
        return
    terminalreporter.write_sep("-", "reliability counts")
    for section, counts in COUNTS.items():
        terminalreporter.write_line(f"{section}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@pytest.fixture(autouse=True)
def _loopback_only(no_network: None) -> None:
    """Reliability tests may talk to servers they start on loopback, nothing else."""
