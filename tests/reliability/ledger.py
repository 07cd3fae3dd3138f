"""The reliability ledger: what each test put the daemon through, printed as one table when the run ends.

Every test that holds load, injects a fault or tries bad input records it through the ``ledger``
fixture (a :class:`Entry` for that test); at the end of the session :func:`pytest_terminal_summary`
prints one row per test and the totals::

    reliability ledger                        load held (calls / failed)   faults   bad inputs   lost
    test_hostile_inputs[invoke]                              0 / 0              0           41      0
    test_killed_replica_is_replaced_under_load            2314 / 1              1            0      0
    ...
    total                                                 9120 / 12             9          612      0

*Lost* must be 0: a call that got no answer at all (a reset connection, a timeout, a crashed daemon)
while the daemon was meant to serve it, or a write the daemon acknowledged (2xx) that is gone later.
Each test asserts that itself; the table is the record, not the check.

Any test can record -- the fixture is importable by any conftest (``from tests.reliability.ledger
import ledger``), and tests/conftest.py makes it available to the whole suite::

    def test_something(start_daemon, ledger):
        ...
        ledger.load(load)              # a tests.helpers.Load: calls, failed, and exceptions as lost
        ledger.calls(120, failed=0)    # or counted by hand
        ledger.fault("kill -9 replica")
        ledger.bad_input(len(cases))
        ledger.lost(1, "secret s-3 acknowledged, gone after the restart")

The entries live in ``config.stash`` (one store per session, however many conftests import the
fixture); the table is printed once, and only when something was recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["Entry", "Ledger", "ledger", "pytest_terminal_summary"]


@dataclass
class Entry:
    """What one test recorded. Small methods, each safe to call any number of times."""

    test: str
    made: int = 0
    failed: int = 0
    faults: list[str] = field(default_factory=list)
    bad_inputs: int = 0
    lost_count: int = 0
    lost_reasons: list[str] = field(default_factory=list)

    def calls(self, made: int, failed: int = 0, lost: int = 0, why_lost: str = "calls with no answer") -> None:
        """``made`` calls were held (``failed`` of them not answered as wanted; ``lost`` of those got
        no answer at all)."""
        self.made += made
        self.failed += failed
        if lost:
            self.lost(lost, why_lost)

    def load(self, load: Any) -> None:
        """Record a :class:`tests.helpers.Load` (or anything with ``calls``, ``failed`` and an
        ``outcomes`` Counter): an outcome that is not a status code is an exception -- no answer."""
        unanswered = sum(count for outcome, count in load.outcomes.items() if not str(outcome).isdigit())
        self.calls(load.calls, load.failed, unanswered, f"no answer: {sorted(load.outcomes)}")

    def fault(self, what: str, count: int = 1) -> None:
        """``count`` faults of one kind injected (a replica killed, dockerd stopped, ...)."""
        self.faults.extend([what] * count)

    def bad_input(self, count: int = 1) -> None:
        """``count`` hostile or malformed requests sent."""
        self.bad_inputs += count

    def lost(self, count: int, why: str) -> None:
        """``count`` requests lost (see the module docstring); ``why`` says which."""
        if count:
            self.lost_count += count
            self.lost_reasons.append(f"{count}: {why}")


class Ledger:
    """Every test's :class:`Entry`, in the order they were first recorded into."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.printed = False

    def entry(self, test: str) -> Entry:
        return self.entries.setdefault(test, Entry(test))

    def rows(self) -> list[Entry]:
        """The entries that recorded something."""
        return [e for e in self.entries.values() if e.made or e.faults or e.bad_inputs or e.lost_count]

    def table(self) -> list[str]:
        """The lines printed at the end of the run."""
        rows = self.rows()
        if not rows:
            return []
        total = Entry("total")
        for row in rows:
            total.calls(row.made, row.failed)
            total.faults += row.faults
            total.bad_input(row.bad_inputs)
            total.lost_count += row.lost_count
        width = max(len(row.test) for row in [*rows, total])
        head = f"{'test':<{width}}  {'load held (calls / failed)':>26}  {'faults':>6}  {'bad inputs':>10}  {'lost':>4}"
        lines = [head, "-" * len(head)]
        for row in [*rows, total]:
            held = f"{row.made} / {row.failed}"
            lines.append(
                f"{row.test:<{width}}  {held:>26}  {len(row.faults):>6}  {row.bad_inputs:>10}  {row.lost_count:>4}"
            )
        kinds: dict[str, int] = {}
        for what in total.faults:
            kinds[what] = kinds.get(what, 0) + 1
        if kinds:
            lines.append("faults injected: " + ", ".join(f"{what} x{count}" for what, count in kinds.items()))
        lines.append(f"requests lost: {total.lost_count}" + ("" if not total.lost_count else " -- MUST BE 0:"))
        for row in rows:
            lines += [f"  {row.test}: {reason}" for reason in row.lost_reasons]
        return lines


_KEY = pytest.StashKey[Ledger]()


def _ledger_of(config: pytest.Config) -> Ledger:
    if _KEY not in config.stash:
        config.stash[_KEY] = Ledger()
    return config.stash[_KEY]


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Iterator[Entry]:
    """This test's :class:`Entry` in the session's ledger (see the module docstring)."""
    yield _ledger_of(request.config).entry(request.node.name)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the ledger once (several conftests may register this hook), when anything was recorded."""
    book = _ledger_of(config)
    lines = book.table()
    if book.printed or not lines:
        return
    book.printed = True
    terminalreporter.section("reliability ledger")
    for line in lines:
        terminalreporter.write_line(line)
