"""Session-wide test machinery.

State-machine coverage (SPEC S15): for the whole session `l4sim.kernel.states.coverage`
is a recorder that every kernel built with `check=True` feeds with each transition it
takes (through `Kernel.set_state`). `tests/test_state_coverage.py` holds the test that
runs last and fails, listing every declared transition that no test reached.

The recorder only accepts additions made by the kernel itself (`Kernel.set_state`, or
kernel code in `l4sim.kernel`), and only while a test is running (not the coverage test):
a transition counts when a real kernel in a real test took it, never because someone
wrote into the set.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from l4sim.kernel import kernel as _kernel_module
from l4sim.kernel import states

TESTS_DIR = Path(__file__).resolve().parent
COVERAGE_TEST = "test_every_declared_transition_is_exercised"

_SET_STATE_CODE = _kernel_module.Kernel.set_state.__code__


class TransitionRecorder(set[tuple[int, int]]):
    """A set of (old, new) state words, filled only by the kernel during tests.

    `first_test` remembers, for each transition, the first test (node id) that took it;
    `rejected` counts additions that did not come from a kernel or came outside a test.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current_test: str | None = None
        self.first_test: dict[tuple[int, int], str] = {}
        self.rejected = 0

    def add(self, item: tuple[int, int]) -> None:
        caller = sys._getframe(1)
        from_kernel = (caller.f_code is _SET_STATE_CODE
                       or str(caller.f_globals.get("__name__", "")).startswith("l4sim.kernel."))
        if not from_kernel or self.current_test is None:
            self.rejected += 1
            return
        if item not in self:
            super().add(item)
            self.first_test[item] = self.current_test

    # Only `add` may fill it: anything else that would is refused.
    def update(self, *others: object) -> None:  # type: ignore[override]
        raise TypeError("the transition recorder is filled only by Kernel.set_state")

    def __ior__(self, other: object) -> TransitionRecorder:  # type: ignore[override]
        raise TypeError("the transition recorder is filled only by Kernel.set_state")


class CollectionInfo:
    """What this session collected and selected, to tell a full run from a partial one."""

    def __init__(self) -> None:
        self.modules: set[Path] = set()   # test modules whose collection was attempted
        self.deselected = 0               # items dropped by -k, -m, --deselect, --lf, ...
        self.node_args: list[str] = []    # command-line arguments naming single tests


RECORDER = TransitionRecorder()
COLLECTION = CollectionInfo()


def pytest_configure(config: pytest.Config) -> None:
    states.coverage = RECORDER
    COLLECTION.node_args = [a for a in config.args if "::" in str(a)]


def pytest_unconfigure(config: pytest.Config) -> None:
    if states.coverage is RECORDER:
        states.coverage = None


def pytest_collectreport(report: pytest.CollectReport) -> None:
    nodeid = report.nodeid
    if nodeid and "::" not in nodeid and nodeid.endswith(".py"):
        path = Path(report.fspath).resolve() if report.fspath else None
        if path is not None:
            COLLECTION.modules.add(path)


def pytest_deselected(items: list[pytest.Item]) -> None:
    COLLECTION.deselected += len(items)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """The coverage test runs last, after every other test has fed the recorder."""
    last = [it for it in items if getattr(it, "originalname", it.name) == COVERAGE_TEST]
    if last:
        items[:] = [it for it in items if it not in last] + last


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    name = getattr(item, "originalname", item.name)
    RECORDER.current_test = None if name == COVERAGE_TEST else item.nodeid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    yield
    RECORDER.current_test = None


@pytest.fixture(scope="session")
def transition_coverage() -> TransitionRecorder:
    """The session's transition recorder."""
    return RECORDER


@pytest.fixture(scope="session")
def collection_info() -> CollectionInfo:
    return COLLECTION


@pytest.fixture(scope="session")
def all_test_files() -> set[Path]:
    """Every test module of the suite: `tests/test_*.py`."""
    return {p.resolve() for p in TESTS_DIR.glob("test_*.py")}
