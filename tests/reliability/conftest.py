"""The reliability suite's ledger: every trial records what it did, and the session prints one table.

A trial is one kind of fault (kill -9 during extraction, a full disk, a bad label file, ...).
Each test adds its runs to the ledger through the ``ledger`` fixture; at the end of the session
the table of every trial (runs, faults survived, rows lost, time to recover, the command that
reruns it) is printed and, when ``IQA_RELIABILITY_REPORT`` names a file, written there as
Markdown with the machine and date. RELIABILITY.md's figures are that file from a CI-equivalent
run (``python3 dev.py test -m reliability``).
"""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Trial:
    name: str
    rerun: str  # the command that reruns just this trial
    runs: int = 0
    survived: int = 0
    rows_lost: int = 0
    rows_duplicated: int = 0  # rows or cells computed twice, or present twice
    recover_seconds: list[float] = field(default_factory=list)

    def row(self) -> str:
        recover = max(self.recover_seconds) if self.recover_seconds else None
        shown = f"{recover:.2f}" if recover is not None else "-"
        return (f"| {self.name} | {self.runs} | {self.survived} | {self.rows_lost} | {self.rows_duplicated} | {shown} "
                f"| `{self.rerun}` |")


class Ledger:
    def __init__(self) -> None:
        self.trials: dict[str, Trial] = {}

    def trial(self, name: str, rerun: str) -> Trial:
        return self.trials.setdefault(name, Trial(name, rerun))

    def record(self, name: str, rerun: str, *, survived: bool, rows_lost: int = 0,
               recover_seconds: float | None = None, rows_duplicated: int = 0) -> None:
        """One run of trial ``name``: the fault was survived (results as without it) or not."""
        trial = self.trial(name, rerun)
        trial.runs += 1
        trial.survived += int(survived)
        trial.rows_lost += rows_lost
        trial.rows_duplicated += rows_duplicated
        if recover_seconds is not None:
            trial.recover_seconds.append(recover_seconds)

    def markdown(self) -> str:
        cpus = os.cpu_count()
        header = [
            f"Run {datetime.date.today().isoformat()} on {platform.node() or 'unknown host'}: "
            f"{platform.system()} {platform.machine()}, {cpus} CPUs, Python {platform.python_version()}.",
            "",
            "| trial | runs | faults survived | rows lost | rows duplicated | worst time to recover (s) | rerun |",
            "|---|---|---|---|---|---|---|",
        ]
        return "\n".join(header + [t.row() for t in sorted(self.trials.values(), key=lambda t: t.name)]) + "\n"


LEDGER = Ledger()


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return LEDGER


@pytest.fixture(scope="session")
def forkserver(tmp_path_factory: pytest.TempPathFactory):
    """One Python process with iqa-store imported, forking a real ``iqa-store`` process per command."""
    from tests.reliability.forkserver import ForkServer
    server = ForkServer(tmp_path_factory.mktemp("forkserver"))
    yield server
    server.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not LEDGER.trials:
        return
    text = LEDGER.markdown()
    terminalreporter.section("reliability figures")
    terminalreporter.write(text)
    target = os.environ.get("IQA_RELIABILITY_REPORT")
    if target:
        Path(target).write_text(text)
