"""The one-rerun policy for tests that crash their xdist worker (tests/conftest.py)."""

import pytest

from tests import conftest


class Scheduler:
    def __init__(self):
        self.pending = []

    def mark_test_pending(self, item):
        self.pending.append(item)


@pytest.fixture
def crashes(monkeypatch):
    monkeypatch.setattr(conftest, "CRASHES", conftest.collections.Counter())
    return conftest.CRASHES


def crash(nodeid, sched):
    report = pytest.TestReport(nodeid, (nodeid, None, nodeid), {}, "failed", "crashed", "???")
    handled = conftest.pytest_handlecrashitem(crashitem=nodeid, report=report, sched=sched)
    return handled, report


def test_a_first_crash_is_rescheduled_once_and_not_counted_as_a_failure(crashes):
    sched = Scheduler()
    handled, report = crash("a_test.py::test_x", sched)
    assert handled is True
    assert sched.pending == ["a_test.py::test_x"]
    assert report.outcome == "rerun" and not report.failed
    assert conftest.pytest_report_teststatus(report) == ("rerun", "R", "RERUN")


def test_a_second_crash_of_the_same_test_fails(crashes):
    sched = Scheduler()
    crash("a_test.py::test_x", sched)
    handled, report = crash("a_test.py::test_x", sched)
    assert handled is None
    assert sched.pending == ["a_test.py::test_x"]  # not scheduled a third time
    assert report.failed
    assert conftest.pytest_report_teststatus(report) is None


def test_each_test_gets_its_own_rerun(crashes):
    sched = Scheduler()
    crash("a_test.py::test_x", sched)
    handled, _ = crash("a_test.py::test_y", sched)
    assert handled is True
    assert sched.pending == ["a_test.py::test_x", "a_test.py::test_y"]
