"""`make fuzz`: every hypothesis property of the suite at scale, with a summary table.

Loaded with `-p fuzz_plugin` (test/ on PYTHONPATH); the normal suite never loads it, so CI keeps each
test's own small `max_examples`. Here every hypothesis test runs with `max_examples` =
$SHAPEMASK_FUZZ_EXAMPLES (default 10,000), no deadline, all health checks off, and the end of the run
prints: property, examples (passing + failing + invalid, from hypothesis' own statistics), failures found,
time. Non-hypothesis tests are deselected.
"""

from __future__ import annotations

import os
import re
import time

import pytest
from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("SHAPEMASK_FUZZ_EXAMPLES", "10000"))
_runs: list[tuple[pytest.Item, bool, float]] = []
# hypothesis' statistics text, e.g. "30 passing, 0 failing, and 0 invalid test cases" per phase
_COUNTS = re.compile(r"(\d+) passing[^,]*, (\d+) failing[^,]*,(?: and)? (\d+) invalid")


def _is_property(item: pytest.Item) -> bool:
    return bool(getattr(getattr(item, "obj", None), "is_hypothesis_test", False))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = [i for i in items if _is_property(i)]
    config.hook.pytest_deselected(items=[i for i in items if not _is_property(i)])
    items[:] = keep
    for item in keep:
        fn = getattr(item.obj, "__func__", item.obj)
        # the same attribute hypothesis' own pytest plugin sets to adjust a test's settings
        base = getattr(fn, "_hypothesis_internal_use_settings", settings.default)
        fn._hypothesis_internal_use_settings = settings(
            base, max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    t0 = time.perf_counter()
    outcome = yield
    _runs.append((item, outcome.excinfo is not None, time.perf_counter() - t0))


def pytest_configure(config: pytest.Config) -> None:
    config.option.hypothesis_show_statistics = True  # statistics are what the table counts


def pytest_terminal_summary(terminalreporter) -> None:
    tr = terminalreporter
    tr.section(f"fuzz: hypothesis properties at max_examples={EXAMPLES}")
    tr.write_line(f"{'property':<100} {'examples':>9} {'failures':>9} {'time s':>8}")
    for item, failed, secs in _runs:  # statistics are attached after the call: read them now
        stats = getattr(item, "hypothesis_statistics", "") or ""
        n = sum(sum(int(x) for x in m) for m in _COUNTS.findall(stats))
        tr.write_line(f"{item.nodeid:<100} {n:>9} {int(failed):>9} {secs:>8.1f}")
