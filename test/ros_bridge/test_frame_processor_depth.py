"""FrameProcessor 3D path: depth + CameraInfo (rosbags messages) -> ObjectGeometryArray + PointCloud2."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.ros_bridge.frame_processor import GEOMETRY_REASONS, FrameProcessor
from shapemask_ros.ros_bridge.pointcloud import pointcloud_to_arrays
from support.depth import CX, CY, FRAME, FX, FY, H, W, camera_info, depth_msg
from support.ros import (
    FACTORY,
    FakePredictor,
    detection,
    detection_array,
    ellipse_mask,
    header,
    random_rgb,
    rgb_image_msg,
)

BOXES = ((8, 6, 30, 26), (35, 20, 60, 44))


class Clock:
    """Manual clock: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def error(self, text: str) -> None:
        self.warnings.append(text)


def make(cfg: NodeConfig | None = None) -> tuple[FrameProcessor, Clock, Log]:
    clock, log = Clock(), Log()
    cfg = cfg or NodeConfig(depth_topic="/camera/aligned_depth_to_color/image_raw")
    proc = FrameProcessor(FakePredictor(class_names=["cup"]), cfg, FACTORY, clock=clock, logger=log)
    return proc, clock, log


def scene_mm(h: int = H, w: int = W) -> np.ndarray:
    """16UC1 scene: table at 1 m, object 0 a fronto-parallel plane at 0.8 m, object 1 a plane tilted in v."""
    depth = np.full((h, w), 1000, np.uint16)
    sy, sx = h / H, w / W
    (a, b) = BOXES
    depth[round(a[1] * sy) : round(a[3] * sy), round(a[0] * sx) : round(a[2] * sx)] = 800
    rows = np.arange(round(b[1] * sy), round(b[3] * sy))
    depth[rows[0] : rows[-1] + 1, round(b[0] * sx) : round(b[2] * sx)] = (600 + (rows - rows[0]))[:, None]
    return depth


def frame(sec: int, nsec: int = 0):
    hdr = header(sec, nsec, FRAME)
    img = rgb_image_msg(random_rgb(H, W, sec), hdr)
    dets = [detection(b, "cup", 0.9, det_id=f"d{i}", hdr=hdr) for i, b in enumerate(BOXES)]
    return img, detection_array(dets, hdr)


def expected_centroid(depth_mm: np.ndarray, box) -> np.ndarray:
    """Mean of the back-projected mask pixels, by the pinhole formula (K's principal point in index units)."""
    m = ellipse_mask(np.asarray(box, np.float64), np.array([0, 0, W, H])).astype(bool)
    v, u = np.nonzero(m)
    z = depth_mm[v, u] / 1000.0
    return np.array([((u - CX) * z / FX).mean(), ((v - CY) * z / FY).mean(), z.mean()])


def quat_to_matrix(q) -> np.ndarray:
    x, y, z, w = q.x, q.y, q.z, q.w
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


# ---- process(): what bag-eval calls ----------------------------------------------------------------------
def test_process_recovers_planted_planes_and_builds_the_cloud():
    proc, _, _ = make()
    depth = scene_mm()
    img, dets = frame(1)
    dmsg = depth_msg(depth, 1)
    res = proc.process(img, dets, depth_msg=dmsg, camera_info_msg=camera_info())
    assert res is not None and res.geometry_error == ""
    o3 = res.objects3d
    assert o3.header is dmsg.header, "3D outputs carry the depth image's header"
    assert [o.instance_index for o in o3.objects] == [0, 1]
    ids = [i.detection_id for i in res.masks.instances]
    assert [o.detection_id for o in o3.objects] == ids == ["d0", "d1"]
    assert [o.status for o in o3.objects] == ["ok", "ok"]
    for o, box in zip(o3.objects, BOXES, strict=True):
        want = expected_centroid(depth, box)
        got = np.array([o.centroid.x, o.centroid.y, o.centroid.z])
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert o.valid_fraction == pytest.approx(1.0) and o.num_inliers == o.num_valid_points
    assert o3.objects[0].centroid.z == pytest.approx(0.800, abs=1e-3)
    # flat face towards the camera: the minor box axis is the plane normal, pointing back at the camera
    normal = quat_to_matrix(o3.objects[0].bbox.center.orientation)[:, 2]
    np.testing.assert_allclose(normal, [0, 0, -1], atol=1e-6)
    assert o3.objects[0].bbox.size.z == pytest.approx(0.0, abs=1e-6)

    cloud = res.points
    assert cloud.header is dmsg.header and cloud.height == 1 and cloud.is_dense
    assert cloud.point_step == 16 and cloud.row_step == 16 * cloud.width
    assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
        ("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("instance_id", 12, 6)
    ]  # fmt: skip
    arrays = pointcloud_to_arrays(cloud)
    ids = arrays["instance_id"]
    assert [int((ids == i).sum()) for i in (0, 1)] == [o.num_inliers for o in o3.objects]
    np.testing.assert_allclose(arrays["z"][ids == 0], 0.8, atol=1e-6)
    first = struct.pack("<fffI", arrays["x"][0], arrays["y"][0], arrays["z"][0], int(ids[0]))
    assert bytes(cloud.data[:16]) == first
    assert res.objects is not None and list(res.objects.status) == ["ok", "ok"]
    assert proc.stats.frames_3d == 1 and proc.stats.objects_3d["ok"] == 2


def test_3d_stage_is_timed_inside_the_frame_latency():
    proc, clock, _ = make()

    def ticking() -> float:  # every reading advances 1 ms
        clock.now += 0.001
        return clock.now

    proc.clock = ticking
    img, dets = frame(1)
    res = proc.process(img, dets, depth_msg=depth_msg(scene_mm(), 1), camera_info_msg=camera_info())
    assert 0 < res.geometry_s < res.latency_s
    assert list(proc.stats.latency_s) == [res.latency_s]


def test_points_only_when_wanted_and_outputs_switchable():
    proc, _, _ = make()
    img, dets = frame(1)
    dmsg, info = depth_msg(scene_mm(), 1), camera_info()
    res = proc.process(img, dets, depth_msg=dmsg, camera_info_msg=info, want_points=False)
    assert res.points is None and res.objects3d is not None and res.objects.points is None
    proc2, _, _ = make(NodeConfig(depth_topic="/d", publish_objects3d=False, publish_points=False))
    res = proc2.process(img, dets, depth_msg=depth_msg(scene_mm(), 1), camera_info_msg=camera_info())
    assert res.objects3d is None and res.points is None
    assert res.objects is not None and res.objects.centroids[0, 2] == pytest.approx(0.8, abs=1e-3)


def test_process_uses_the_newest_stored_camera_info():
    proc, _, _ = make()
    img, dets = frame(1)
    bad = camera_info(k=[0.0] * 9)
    proc.add_camera_info(bad)
    proc.add_camera_info(camera_info())  # the newest one wins
    res = proc.process(img, dets, depth_msg=depth_msg(scene_mm(), 1))
    assert res.geometry_error == "" and len(res.objects3d.objects) == 2


def test_scale_registration_maps_masks_onto_a_smaller_depth_image():
    small = scene_mm(H // 2, W // 2)
    img, dets = frame(1)
    proc, _, _ = make(NodeConfig(depth_topic="/d", depth_registration="scale"))
    # CameraInfo of the colour size: rescaled to the depth image by the geometry code
    res = proc.process(img, dets, depth_msg=depth_msg(small, 1), camera_info_msg=camera_info())
    assert res.geometry_error == "" and res.objects3d.objects[0].centroid.z == pytest.approx(0.8, abs=1e-3)
    proc_none, _, _ = make()
    res = proc_none.process(img, dets, depth_msg=depth_msg(small, 1), camera_info_msg=camera_info())
    assert res.geometry_error == "size_mismatch" and len(res.masks.instances) == 2


def _bad_inputs():
    good = scene_mm()
    truncated = depth_msg(good, 1)
    truncated.data = truncated.data[:100]
    nan_k = [FX, 0, np.nan, 0, FY, CY, 0, 0, 1]
    return {
        "missing_camera_info": (depth_msg(good, 1), None),
        "bad_intrinsics": (depth_msg(good, 1), camera_info(k=nan_k)),
        "bad_intrinsics (K all zero: uncalibrated)": (depth_msg(good, 1), camera_info(k=[0.0] * 9)),
        "unsupported_distortion": (depth_msg(good, 1), camera_info(d=(0.1, 0, 0, 0), model="fancy")),
        "size_mismatch": (depth_msg(good[:, :40], 1), camera_info(w=40)),
        "size_mismatch (CameraInfo)": (depth_msg(good, 1), camera_info(w=640, h=480)),
        "all_invalid_depth": (depth_msg(np.zeros_like(good), 1), camera_info()),
        # a frame without one valid reading is all_invalid_depth whatever else is wrong with it
        "all_invalid_depth (and a size mismatch)": (depth_msg(np.zeros_like(good[:, :40]), 1), camera_info(w=40)),
        "bad_encoding": (depth_msg(good, 1, encoding="rgb8"), camera_info()),
        "bad_depth": (truncated, camera_info()),
        "frame_mismatch": (depth_msg(good, 1, frame="camera_depth_optical_frame"), camera_info()),
        "frame_mismatch (CameraInfo)": (depth_msg(good, 1), camera_info(frame="camera_depth_optical_frame")),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_depth_input_is_counted_and_masks_still_come_out(case):
    reason = case.split(" ")[0]
    assert reason in GEOMETRY_REASONS
    depth, info = _bad_inputs()[case]
    proc, clock, log = make()
    img, dets = frame(1)
    res = proc.process(img, dets, depth_msg=depth, camera_info_msg=info)
    assert res is not None and len(res.masks.instances) == 2 and res.labels is not None
    assert res.objects3d is None and res.points is None and res.objects is None
    assert res.geometry_error == reason and proc.stats.geometry_error == reason
    assert proc.stats.dropped_3d[reason] == 1 and sum(proc.stats.dropped_3d.values()) == 1
    assert proc.stats.as_dict()[f"dropped_3d.{reason}"] == "1"
    assert any(reason in w for w in log.warnings), log.warnings
    # the next good frame clears the flag
    img2, dets2 = frame(2)
    res2 = proc.process(img2, dets2, depth_msg=depth_msg(scene_mm(), 2), camera_info_msg=camera_info())
    assert res2.geometry_error == "" and proc.stats.geometry_error == "" and proc.stats.frames_3d == 1


def test_geometry_bug_costs_only_the_3d_outputs(monkeypatch):
    proc, _, _ = make()

    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr("shapemask_ros.ros_bridge.objects3d_stage.objects3d_from_instances", boom)
    img, dets = frame(1)
    res = proc.process(img, dets, depth_msg=depth_msg(scene_mm(), 1), camera_info_msg=camera_info())
    assert len(res.masks.instances) == 2 and res.geometry_error == "internal_error"
    assert proc.stats.dropped_3d["internal_error"] == 1 and proc.stats.dropped["internal_error"] == 0


# ---- step(): depth synchronised with the chosen frame ----------------------------------------------------
def _feed(proc: FrameProcessor, sec: int, nsec: int = 0) -> None:
    img, dets = frame(sec, nsec)
    proc.add_image(img)
    proc.add_detections(dets)


def test_step_matches_depth_exactly_then_within_slop():
    proc, _, _ = make(NodeConfig(depth_topic="/d", sync_slop_s=0.02))
    proc.add_camera_info(camera_info())
    exact = depth_msg(scene_mm(), 1)
    proc.add_depth(depth_msg(scene_mm(), 1, 10_000_000))  # 10 ms later: within the slop, but not exact
    proc.add_depth(exact)
    _feed(proc, 1)
    res = proc.step()
    assert res.objects3d.header is exact.header and res.points.header is exact.header
    _feed(proc, 2)
    near = depth_msg(scene_mm(), 2, 15_000_000)
    proc.add_depth(near)
    res = proc.step()
    assert res.objects3d.header is near.header and proc.stats.dropped_3d["no_depth_match"] == 0
    assert proc.stats.dropped_3d["depth_unused"] == 1, "the 10 ms depth of frame 1 was never used"


def test_step_waits_for_late_depth_then_gives_up():
    proc, clock, _ = make(NodeConfig(depth_topic="/d", depth_wait_s=0.1, sync_slop_s=0.02))
    proc.add_camera_info(camera_info())
    proc.add_depth(depth_msg(scene_mm(), 1))
    _feed(proc, 1)
    assert proc.step().geometry_error == ""
    # frame 2 is ready before its depth image: it waits, then goes out with 3D
    clock.now += 0.033
    _feed(proc, 2)
    assert proc.step() is None
    clock.now += 0.005
    proc.add_depth(depth_msg(scene_mm(), 2))
    res = proc.step()
    assert res.masks.header.stamp.sec == 2 and res.geometry_error == ""
    # frame 3's depth never comes: after depth_wait_s the masks go out without 3D
    clock.now += 0.033
    _feed(proc, 3)
    assert proc.step() is None
    clock.now += 0.05
    assert proc.step() is None
    clock.now += 0.06
    res = proc.step()
    assert res.masks.header.stamp.sec == 3 and len(res.masks.instances) == 2
    assert res.objects3d is None and res.geometry_error == "no_depth_match"
    assert proc.stats.dropped_3d["no_depth_match"] == 1


def test_step_releases_a_frame_whose_depth_was_passed_and_keeps_newer_depth():
    proc, clock, _ = make(NodeConfig(depth_topic="/d", depth_wait_s=10.0, sync_slop_s=0.02))
    proc.add_camera_info(camera_info())
    proc.add_depth(depth_msg(scene_mm(), 3))
    _feed(proc, 4)  # depth of 4 is late
    assert proc.step() is None
    proc.add_depth(depth_msg(scene_mm(), 5))  # the depth stream is past frame 4: its match is lost
    res = proc.step()
    assert res.masks.header.stamp.sec == 4 and res.geometry_error == "no_depth_match"
    _feed(proc, 5)
    res = proc.step()
    assert res.geometry_error == "" and res.objects3d.header.stamp.sec == 5


def test_newer_frame_supersedes_a_waiting_one():
    proc, clock, _ = make(NodeConfig(depth_topic="/d", depth_wait_s=1.0))
    proc.add_camera_info(camera_info())
    proc.add_depth(depth_msg(scene_mm(), 1))
    _feed(proc, 1)
    proc.step()
    _feed(proc, 2)
    assert proc.step() is None  # waiting for depth 2
    superseded = proc.stats.dropped["superseded"]
    _feed(proc, 3)
    assert proc.step() is None  # frame 3 waits instead; frame 2 is dropped
    assert proc.stats.dropped["superseded"] == superseded + 1
    proc.add_depth(depth_msg(scene_mm(), 3))
    res = proc.step()
    assert res.masks.header.stamp.sec == 3 and res.geometry_error == ""


def test_silent_depth_stream_does_not_delay_masks():
    proc, clock, _ = make(NodeConfig(depth_topic="/d", depth_wait_s=0.5))
    _feed(proc, 1)
    res = proc.step()  # no depth ever: nothing to wait for
    assert res is not None and res.geometry_error == "no_depth_match"
    proc.add_depth(depth_msg(scene_mm(), 2))
    clock.now += 5.0  # the depth stream went quiet long ago
    _feed(proc, 3)
    res = proc.step()
    assert res is not None and res.masks.header.stamp.sec == 3 and res.geometry_error == "no_depth_match"


def test_self_detection_with_depth_and_stale_depth():
    pred = FakePredictor(class_names=["cup"], self_boxes=[BOXES[0]], self_scores=[0.9], self_classes=[0])
    proc = FrameProcessor(pred, NodeConfig(detections_topic="", depth_topic="/d"), FACTORY, clock=Clock())
    proc.add_camera_info(camera_info())
    proc.add_depth(depth_msg(scene_mm(), 1))
    proc.add_image(frame(1)[0])
    res = proc.step()
    (obj,) = res.objects3d.objects
    assert obj.centroid.z == pytest.approx(0.8, abs=1e-3)
    proc.add_depth(depth_msg(scene_mm(), 1))  # for a frame already processed
    assert proc.stats.dropped_3d["depth_stale"] == 1


def test_geometry_parameters_apply_live_and_are_validated():
    proc, _, _ = make()
    assert proc.update({"geometry_min_points": 10_000}) == {}
    img, dets = frame(1)
    res = proc.process(img, dets, depth_msg=depth_msg(scene_mm(), 1), camera_info_msg=camera_info())
    assert [o.status for o in res.objects3d.objects] == ["too_few_points"] * 2, "flagged, not dropped"
    assert proc.update({"geometry_max_depth_m": 0.7}) == {}
    img, dets = frame(2)
    res = proc.process(img, dets, depth_msg=depth_msg(scene_mm(), 2), camera_info_msg=camera_info())
    assert [o.status for o in res.objects3d.objects] == ["no_depth", "too_few_points"]
    rejected = proc.update({"geometry_percentile_low": 60.0, "geometry_percentile_high": 40.0})
    assert set(rejected) == {"geometry_percentile_low", "geometry_percentile_high"}
    assert "percentile" in rejected["geometry_percentile_low"]
    assert "depth_registration" in proc.update({"depth_registration": "extrinsics"})
    assert "read-only" in proc.update({"depth_topic": "/other"})["depth_topic"]
    assert "read-only" in proc.update({"publish_points": False})["publish_points"]
    assert proc.cfg.geometry_percentile_low == 0.0 and proc.cfg.depth_registration == "none"
