"""Fleet evaluation (issue 26): many bags in, per-bag outputs and one report; workers; faults; resume."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from shapemask_ros import cli
from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions
from shapemask_ros.bag.fleet.inputs import collect_jobs
from shapemask_ros.bag.fleet.job import TIMING_FIELDS, PredictorSpec
from shapemask_ros.bag.fleet.run import evaluate_fleet
from shapemask_ros.bag.recording.reader import BagError
from support.bags import (
    DETS,
    IMAGE,
    PERIOD,
    T0,
    PerfectPredictor,
    dets_msg,
    image_msg,
    scene,
    scene_bag_messages,
    scene_gt,
    write_bag,
    write_split_bag,
)

SPEC = PredictorSpec(factory=PerfectPredictor)


def _bag(path: Path, frames: int, shrink: int, storage: str = "mcap") -> Path:
    """A scene bag whose detector boxes are `shrink` px too small on each side (imperfect masks: AP < 100)."""
    msgs = []
    for i in range(frames):
        stamp = T0 + i * PERIOD
        rgb, objs = scene(i)
        msgs.append((IMAGE, "sensor_msgs/msg/Image", stamp + 1_000_000, image_msg(rgb, stamp)))
        dets = [
            ((b[0] + shrink, b[1] + shrink, b[2] - shrink, b[3] - shrink), c, 0.9 - 0.1 * k, f"o{k}")
            for k, (c, _m, b) in enumerate(objs)
        ]
        msgs.append((DETS, "vision_msgs/msg/Detection2DArray", stamp + 30_000_000, dets_msg(stamp, dets)))
    return write_bag(path, msgs, storage)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Six bags: four good ones (different sizes and box errors), one cut short, one that is not a bag."""
    root = tmp_path_factory.mktemp("fleet")
    bags = root / "day1"
    entries = []
    for k, (frames, shrink) in enumerate([(4, 0), (6, 1), (3, 2), (5, 1)]):
        _bag(bags / f"robot{k}", frames, shrink, "mcap" if k % 2 else "sqlite3")
        gt = root / f"gt{k}.json"
        gt.write_text(json.dumps(scene_gt(frames)))
        entries.append({"bag": f"day1/robot{k}", "gt": gt.name})
    cut = write_split_bag(bags / "robot_cut", scene_bag_messages(6), "mcap", pieces=3)
    (cut / "robot_cut_1.mcap").unlink()  # a split recording copied without its middle piece
    entries.append({"bag": "day1/robot_cut"})
    junk = bags / "robot_junk"
    junk.mkdir()
    (junk / "junk.mcap").write_bytes(b"not an mcap file at all" * 10)
    entries.append({"bag": "day1/robot_junk"})
    manifest = root / "manifest.yaml"
    manifest.write_text(json.dumps({"defaults": {"image_topic": IMAGE, "detections_topic": DETS}, "bags": entries}))
    return root, manifest


def _opts(**kw) -> BagEvalOptions:
    return BagEvalOptions(bag="", image_topic=IMAGE, out="", detections_topic=DETS, overlays=1, **kw)


def _run(manifest: Path, out: Path, workers: int = 1, **kw):
    jobs = collect_jobs([], str(manifest), {})
    return evaluate_fleet(jobs, _opts(**kw), str(out), SPEC, workers=workers)


def _results(rep: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rep["bags"]]


def _masks(out: Path, row: dict) -> list[bytes]:
    with Reader(out / row["out"] / "bag") as r:
        conns = [c for c in r.connections if c.topic == "/shapemask/masks"]
        return [bytes(raw) for _c, _t, raw in r.messages(connections=conns)]


def test_serial_and_workers_give_identical_results_faults_in_their_rows(fleet, tmp_path):
    root, manifest = fleet
    serial = _run(manifest, tmp_path / "serial").report
    par = _run(manifest, tmp_path / "par", workers=2).report
    assert _results(serial) == _results(par)
    assert serial["pooled_accuracy"] == par["pooled_accuracy"]
    timing = ("bag_wall_s",)
    assert {k: v for k, v in serial["totals"].items() if k not in timing} == {
        k: v for k, v in par["totals"].items() if k not in timing
    }
    for row in serial["bags"]:
        if row["status"] == "ok":
            assert _masks(tmp_path / "serial", row) == _masks(tmp_path / "par", row)
    rows = {r["id"]: r for r in par["bags"]}
    assert len(rows) == 6 and par["totals"]["bags_failed"] == 1
    assert rows["robot_junk"]["status"] == "error" and "junk" in rows["robot_junk"]["error"]
    assert rows["robot_cut"]["status"] == "ok" and rows["robot_cut"]["damage"]["missing_files"] == ["robot_cut_1.mcap"]
    assert rows["robot_cut"]["processed"] == 4
    assert par["bags"][0]["id"] == "robot_junk"  # faults first, then the lowest AP
    aps = [r["mask_ap"] for r in par["bags"] if r.get("mask_ap") is not None]
    assert aps == sorted(aps) and len(set(aps)) > 1
    # each worker process loaded the model once, however many bags it evaluated
    assert {r["worker"]["model_loads"] for r in par["bags"]} == {1}
    assert len({r["worker"]["pid"] for r in par["bags"]}) <= 2
    assert par["run"]["onnxruntime_threads_per_worker"] >= 1
    md = (tmp_path / "par" / "fleet_report.md").read_text()
    assert "robot_junk" in md and "Pooled over 4 bags" in md


def test_pooled_ap_is_over_all_images_not_a_mean_of_bags(fleet, tmp_path):
    root, manifest = fleet
    rep = _run(manifest, tmp_path / "o").report
    p = rep["pooled_accuracy"]
    ok = [r for r in rep["bags"] if r.get("images_evaluated")]
    assert p["bags"] == 4 and p["images_evaluated"] == sum(r["images_evaluated"] for r in ok) == 18
    # one bag alone: the pooled AP is that bag's own AP
    one = root / "one.yaml"
    one.write_text(json.dumps({"defaults": {"image_topic": IMAGE, "detections_topic": DETS}, "bags": [
        {"bag": "day1/robot1", "gt": "gt1.json"}]}))  # fmt: skip
    single = _run(one, tmp_path / "one").report
    assert single["pooled_accuracy"]["mask_ap"]["AP"] == pytest.approx(single["bags"][0]["mask_ap"])
    own = json.loads((tmp_path / "one" / "bags" / "robot1" / "report.json").read_text())
    assert single["bags"][0]["mask_ap"] == own["accuracy"]["mask_ap"]["AP"]


def test_pooling_keeps_each_bags_images_apart():
    """A prediction in one bag never matches the truth of another bag's image with the same id."""
    from pycocotools import mask as mask_utils

    from shapemask_ros.bag.evaluation.pooled_ap import pooled_accuracy

    def rle(x0):
        m = np.zeros((20, 20), np.uint8, order="F")
        m[5:15, x0 : x0 + 5] = 1
        r = mask_utils.encode(m)
        return {"size": [20, 20], "counts": r["counts"].decode("ascii")}

    def pool(gt_x, pred_x):
        image = {"id": 1, "width": 20, "height": 20, "stamp_ns": 1}
        ann = {"id": 1, "image_id": 1, "category": "a", "segmentation": rle(gt_x), "area": 50.0}
        ann |= {"bbox": [gt_x, 5, 5, 10], "iscrowd": 0}
        preds = [
            {"image_id": 1, "category": "a", "segmentation": rle(x), "bbox": [x, 5, 5, 10], "score": 0.9}
            for x in pred_x
        ]
        return {"images": [image], "annotations": [ann], "categories": ["a"], "results": preds}

    # bag A: an object on the left, missed; bag B: an object on the right, a false detection on the left
    p = pooled_accuracy([pool(2, []), pool(12, [2])])
    assert p["images_evaluated"] == 2 and p["mask_ap"]["AP"] == 0.0
    assert pooled_accuracy([pool(2, [2]), pool(12, [12])])["mask_ap"]["AP"] == pytest.approx(100.0)


def test_resume_reuses_finished_bags_keyed_by_content_model_and_parameters(fleet, tmp_path):
    root, manifest = fleet
    work = tmp_path / "root"
    shutil.copytree(root, work)
    manifest = work / manifest.name
    out = tmp_path / "o"
    first = _run(manifest, out).report
    assert first["totals"]["bags_reused"] == 0
    report_file = out / "bags" / "robot0" / "report.json"
    before = report_file.stat().st_mtime_ns
    # a killed run: one bag's record never written, a temporary left half-written
    (out / ".fleet" / "robot2.json").unlink()
    (out / "bags" / ".robot2.tmp-abcd1234").mkdir()  # as AtomicDir names it; no process holds it
    again = _run(manifest, out).report
    rows = {r["id"]: r for r in again["bags"]}
    assert {i for i, r in rows.items() if r.get("reused")} == {"robot0", "robot1", "robot3", "robot_cut"}
    assert report_file.stat().st_mtime_ns == before  # reused, not rewritten
    assert not (out / "bags" / ".robot2.tmp-abcd1234").exists()  # the killed run's temporary is gone
    assert _results(again) == _results(first)
    # the content of one bag changes, same path, names and sizes (other box values): only it is evaluated again
    fresh = _bag(tmp_path / "fresh" / "robot0", 4, 3, "sqlite3")
    assert (fresh / "robot0.db3").stat().st_size == (work / "day1" / "robot0" / "robot0.db3").stat().st_size
    shutil.copyfile(fresh / "robot0.db3", work / "day1" / "robot0" / "robot0.db3")
    third = _run(manifest, out).report
    assert {r["id"] for r in third["bags"] if r.get("reused")} == {"robot1", "robot2", "robot3", "robot_cut"}
    # another parameter: nothing is reused
    fourth = _run(manifest, out, max_frames=2).report
    assert fourth["totals"]["bags_reused"] == 0


def test_inputs_directories_globs_manifests_and_errors(fleet, tmp_path):
    root, manifest = fleet
    by_dir = collect_jobs([str(root / "day1")], "", {"image_topic": IMAGE})
    assert [j.id for j in by_dir] == ["robot0", "robot1", "robot2", "robot3", "robot_cut", "robot_junk"]
    by_glob = collect_jobs([str(root / "day1" / "robot[01]")], "", {"image_topic": IMAGE})
    assert [j.bag for j in by_glob] == [str(root / "day1" / "robot0"), str(root / "day1" / "robot1")]
    by_manifest = collect_jobs([], str(manifest), {"image_topic": "/other"})
    assert by_manifest[0].image_topic == IMAGE and by_manifest[0].gt == str(root / "gt0.json")
    with pytest.raises(BagError, match="listed twice"):
        collect_jobs([str(root / "day1"), str(root / "day1" / "robot0")], "", {"image_topic": IMAGE})
    with pytest.raises(BagError, match="not found"):
        collect_jobs([str(root / "nope")], "", {"image_topic": IMAGE})
    with pytest.raises(BagError, match="no bag matches"):
        collect_jobs([str(root / "zz*")], "", {"image_topic": IMAGE})
    with pytest.raises(BagError, match="no image topic"):
        collect_jobs([str(root / "day1")], "", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("bags: [{bag: day1/robot0, imgae_topic: /x}]")
    with pytest.raises(BagError, match="unknown keys"):
        collect_jobs([], str(bad), {})


def test_cli_fleet_errors_are_one_line(fleet, tmp_path, capsys):
    root, _manifest = fleet
    code = cli.main(["bag-eval", "--bag", str(root / "nothing*"), "--image-topic", IMAGE, "--out", str(tmp_path / "o")])
    assert code == 2 and "no bag matches" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    code = cli.main(["bag-eval", "--bag", str(root / "day1"), "--image-topic", IMAGE, "--out", str(tmp_path / "taken")])
    assert code == 2 and "not a fleet output directory" in capsys.readouterr().err


@pytest.fixture
def local_ray():
    """A Ray instance on 127.0.0.1 with 2 CPUs for this test only (stopped after it)."""
    ray = pytest.importorskip("ray")
    import sys

    # workers import the package and the test helpers (the fake predictor) from the paths this test uses
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow  # starting Ray and its workers: ~20-40 s on 2 shared cores
def test_ray_gives_the_serial_results_each_worker_loading_the_model_once(fleet, tmp_path, local_ray):
    root, manifest = fleet
    serial = _run(manifest, tmp_path / "serial").report
    jobs = collect_jobs([], str(manifest), {})
    on_ray = evaluate_fleet(jobs, _opts(), str(tmp_path / "ray"), SPEC, ray_address="auto").report
    assert _results(on_ray) == _results(serial)
    assert on_ray["pooled_accuracy"] == serial["pooled_accuracy"]
    for row in serial["bags"]:
        if row["status"] == "ok":
            assert _masks(tmp_path / "serial", row) == _masks(tmp_path / "ray", row)
    assert {r["worker"]["model_loads"] for r in on_ray["bags"]} == {1}
    assert on_ray["run"]["executor"] == "ray (auto)"
    assert local_ray.is_initialized()  # an instance the caller started is left to the caller


@pytest.mark.slow
def test_ray_ships_the_model_bundle_through_the_object_store(tmp_path, local_ray):
    """The real shipped model, its files sent once through the object store (no worker reads its path)."""
    from shapemask_ros.runtime.bundle import resolve_model_path

    bundle = Path(resolve_model_path(""))
    if not bundle.exists():
        pytest.skip("the shipped demo model is not built")
    for k in range(2):
        write_bag(tmp_path / "bags" / f"b{k}", scene_bag_messages(2), "mcap")
    jobs = collect_jobs([str(tmp_path / "bags")], "", {"image_topic": IMAGE, "detections_topic": DETS})
    spec = PredictorSpec(model=str(bundle), backend="onnxruntime")
    rep = evaluate_fleet(jobs, _opts(), str(tmp_path / "o"), spec, ray_address="auto", ship_model=True).report
    assert rep["totals"]["bags_ok"] == 2 and rep["totals"]["processed"] == 4
    assert rep["run"]["model_shipped_through_object_store"]
    assert all(r["backend"].startswith("onnxruntime") for r in rep["bags"])
    assert all("shapemask-bundle-" in r["worker"]["model_path"] for r in rep["bags"])


def test_cli_ray_without_a_cluster_is_one_line(fleet, tmp_path, capsys, monkeypatch):
    root, _manifest = fleet
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = ["bag-eval", "--bag", str(root / "day1"), "--image-topic", IMAGE, "--out", str(tmp_path / "o")]
    code = cli.main([*args, "--ray", "auto"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and ("Ray cluster" in err or "needs the `ray` package" in err)


def test_cli_fleet_with_the_shipped_model_reports_resumes_and_exits_1_on_a_failed_bag(fleet, tmp_path, capsys):
    """End to end through the command line: the real shipped model in 2 worker processes."""
    from shapemask_ros.runtime.bundle import resolve_model_path

    if not Path(resolve_model_path("")).exists():
        pytest.skip("the shipped demo model is not built")
    root, _manifest = fleet
    bags = [str(root / "day1" / b) for b in ("robot0", "robot1", "robot_junk")]
    args = ["bag-eval", "--bag", *bags, "--image-topic", IMAGE, "--detections-topic", DETS]
    args += ["--out", str(tmp_path / "o"), "--workers", "2", "--overlays", "0"]
    assert cli.main(args) == 1  # one bag failed: its row says why, the others are evaluated
    out, err = capsys.readouterr()
    assert "2 of 3 evaluated (1 failed, 0 reused)" in out
    assert f"{bags[2]}: error: " in err  # why, on stderr
    rep = json.loads((tmp_path / "o" / "fleet_report.json").read_text())
    assert rep["run"]["onnxruntime_threads_per_worker"] >= 1 and rep["bags"][0]["status"] == "error"
    assert all(r["backend"].startswith("onnxruntime") for r in rep["bags"][1:])
    assert cli.main(args) == 1
    assert "(1 failed, 2 reused)" in capsys.readouterr().out


def test_onnxruntime_threads_are_divided_among_workers(monkeypatch):
    from shapemask_ros.bag.fleet import schedule

    monkeypatch.setattr(schedule.os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert [schedule.threads_per_worker(n) for n in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    assert schedule.threads_per_worker(4, threads=3) == 3  # --threads wins
