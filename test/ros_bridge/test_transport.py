"""Input QoS choice and transport-loss accounting (ros_bridge.transport), without ROS."""

from __future__ import annotations

import pytest

from shapemask_ros.ros_bridge.transport import SequenceGaps, choose_reliability, silent_input_kind


@pytest.mark.parametrize(
    ("requested", "offered", "want"),
    [
        ("auto", [], "best_effort"),  # nobody yet: match anyone who comes
        ("auto", ["reliable"], "reliable"),
        ("auto", ["RELIABLE", "reliable"], "reliable"),
        ("auto", ["reliable", "best_effort"], "best_effort"),  # one best-effort publisher: stay reachable
        ("reliable", ["best_effort"], "reliable"),  # explicit choices are kept
        ("best_effort", ["reliable"], "best_effort"),
    ],
)
def test_auto_follows_the_publishers(requested, offered, want):
    assert choose_reliability(requested, offered) == want


def test_sequence_gaps_count_missing_messages_of_one_publisher():
    g = SequenceGaps()
    assert [g.observe(s, 1) for s in (1, 2, 5, 6, 9)] == [0, 0, 2, 0, 2]
    assert g.lost == 4
    # a second publisher: its numbers interleave with no way to tell them apart -> not counted
    assert g.observe(20, 2) == 0 and g.observe(3, 2) == 0
    # back to one publisher (restarted: numbers start again) -> no bogus gap
    assert g.observe(1, 1) == 0 and g.observe(2, 1) == 0 and g.lost == 4
    assert g.observe(None, 1) == 0  # rmw without sequence numbers


def test_silent_input_kinds():
    assert silent_input_kind(0, 0, 0) == "no_publisher"
    assert silent_input_kind(1, 3, 0) == "incompatible_qos"
    assert silent_input_kind(2, 0, 0) == "never_arrived"
    assert silent_input_kind(1, 0, 17) == "stopped"
