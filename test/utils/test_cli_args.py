"""LABEL=PATH arguments (`shapemask bench bundles --model`, `shapemask evaluate-bundle --model`)."""

from __future__ import annotations

from shapemask_ros.utils.cli_args import labelled_paths


def test_labels_come_from_the_argument_or_the_last_path_component():
    assert labelled_paths(["fp32=models/real_lite0", "models/real_lite0_int8/", "a=b=models/x"]) == [
        ("fp32", "models/real_lite0"),
        ("real_lite0_int8", "models/real_lite0_int8/"),
        ("a=b", "models/x"),
    ]
