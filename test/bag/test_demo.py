"""`shapemask demo`: the main job end to end (a tiny random model bundle stands in for models/demo)."""

from __future__ import annotations

import json

import pytest

from shapemask_ros import cli


def test_demo_without_a_model_fails_fast_and_cleanly(tmp_path, capsys):
    code = cli.main(["demo", "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no_model")])
    err = capsys.readouterr().err
    assert code == 2 and "model bundle not found" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "demo_bag").exists()  # the model is checked before any work


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from shapemask_ros.datasets.synthetic import SHAPE_FAMILIES
    from shapemask_ros.export.bundle import export_bundle
    from shapemask_ros.model.shapemask import build_model
    from support.configs import tiny_model_config

    names = [f.name for f in SHAPE_FAMILIES][:3]  # demo detections of other families are "unknown" classes
    cfg = tiny_model_config(image_size=64, num_classes=len(names))
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    return export_bundle(build_model(cfg), str(out), names, saved_model=False)


@pytest.mark.tf
@pytest.mark.slow
def test_demo_end_to_end_with_a_tiny_bundle(tmp_path, capsys, tiny_bundle):
    out = tmp_path / "out"
    args = [
        "demo",
        "--out",
        str(out),
        "--model",
        tiny_bundle,
        "--frames",
        "4",
        "--width",
        "160",
        "--height",
        "120",
    ]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    bag_eval = out / "bag_eval"
    for path in (bag_eval / "bag", bag_eval / "report.md", bag_eval / "overlays", out / "demo_bag"):
        assert str(path) in printed and path.exists()
    report = json.loads((bag_eval / "report.json").read_text())
    assert report["frames"]["processed"] == 4
    assert report["model"]["backend"].startswith("onnxruntime")
    assert report["frames"]["with_geometry"] == 4
    assert {"mask_ap", "box_ap", "mask_ap_agnostic"} <= report["accuracy"].keys()
    assert "centroid_error" in report["geometry"]
    assert set(report["output"]["topics"]) >= {
        "/shapemask/masks",
        "/shapemask/labels",
        "/shapemask/detections",
        "/shapemask/objects3d",
        "/camera/color/image_raw",
    }
    assert "/shapemask/points" not in report["output"]["topics"]  # the PointCloud2 only with --points
    # a second run replaces both outputs (make demo is repeatable): same results, nothing appended or left over
    first_mtime = (bag_eval / "report.json").stat().st_mtime_ns
    overlays = sorted(p.name for p in (bag_eval / "overlays").iterdir())
    (bag_eval / "stale-marker").write_text("from the first run")
    assert cli.main([*args, "--points"]) == 0
    again = json.loads((bag_eval / "report.json").read_text())
    assert again["output"]["topics"]["/shapemask/points"] == 4
    assert (bag_eval / "report.json").stat().st_mtime_ns > first_mtime
    assert not (bag_eval / "stale-marker").exists()  # the directory was replaced, not written into
    assert sorted(p.name for p in (bag_eval / "overlays").iterdir()) == overlays
    assert again["frames"] == report["frames"] and again["accuracy"] == report["accuracy"]
    assert sorted(p.name for p in out.iterdir()) == ["bag_eval", "demo_bag", "demo_bag.gt.json"]  # no temp dirs
