"""What arrives over DDS is what the core computes: masks equal `Predictor.predict` (same bundle, same
backend), and the label image, refined detections and 3D outputs agree with those masks."""

from __future__ import annotations

import time

import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray

from shapemask_ros.bench.node_driver import (
    default_boxes,
    detections_msg,
    image_msg,
    qos,
    settle_qos,
    stamp,
    stamp_ns,
    synthetic_rgb,
)
from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.msg import InstanceMaskArray, ObjectGeometryArray
from shapemask_ros.runtime.bundle import resolve_model_path
from shapemask_ros.runtime.predictor import Predictor

H, W, FX, FY, CX, CY, Z_MM = 480, 640, 520.0, 515.0, 318.0, 242.0, 1200


def _depth_msg(t):
    msg = Image(header=Header(stamp=t, frame_id="camera"), height=H, width=W, encoding="16UC1", step=2 * W)
    msg.data = np.full((H, W), Z_MM, "<u2").tobytes()
    return msg


def _camera_info(t):
    k = [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0]
    p = [FX, 0.0, CX, 0.0, 0.0, FY, CY, 0.0, 0.0, 0.0, 1.0, 0.0]
    return CameraInfo(header=Header(stamp=t, frame_id="camera"), height=H, width=W, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=k, r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=p)  # fmt: skip


def _mask_of(inst) -> np.ndarray:
    m = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(inst.mask.height, inst.mask.step)[:, : inst.mask.width]
    return m


def test_received_outputs_equal_the_predictor_and_agree_with_each_other(launch, driver):
    node = launch(
        {"backend": "onnxruntime", "depth_topic": "/camera/depth/image_raw", "publish_points": False},
        autostart=True,
    )
    n = driver.node
    pubs = {
        "image": n.create_publisher(Image, "/camera/image_raw", qos()),
        "det": n.create_publisher(Detection2DArray, "/detections", qos()),
        "depth": n.create_publisher(Image, "/camera/depth/image_raw", qos()),
        "info": n.create_publisher(CameraInfo, "/camera/depth/camera_info", qos()),
    }
    subs = {
        "masks": driver.subscribe(InstanceMaskArray, "/shapemask/masks"),
        "labels": driver.subscribe(Image, "/shapemask/labels"),
        "dets": driver.subscribe(Detection2DArray, "/shapemask/detections"),
        "objects": driver.subscribe(ObjectGeometryArray, "/shapemask/objects3d"),
    }
    frames = {}
    try:
        assert driver.wait_for(lambda: all(p.get_subscription_count() for p in pubs.values()), 30.0)
        assert driver.wait_for(lambda: all(s.sub.get_publisher_count() for s in subs.values()), 30.0)
        for topic in ("/camera/image_raw", "/camera/depth/image_raw", "/camera/depth/camera_info"):
            settle_qos(driver, topic, True)  # 'auto' subscriptions follow our reliable publishers
        # a reader can match a writer a moment after the writer matched it: the first message of a fresh
        # connection may miss it (volatile durability). CameraInfo comes with every frame; send one early.
        pubs["info"].publish(_camera_info(stamp(0, 2.0)))
        time.sleep(0.5)
        for i in range(6):  # frames 0-1 warm the connections up: their depth images came late (see docs/ros.md)
            t = stamp(i, 2.0)
            rgb, boxes = synthetic_rgb(H, W, i), default_boxes(H, W, 3 + i)
            if i >= 2:
                frames[stamp_ns(t)] = (rgb, np.asarray(boxes, np.float32))
            pubs["info"].publish(_camera_info(t))
            pubs["depth"].publish(_depth_msg(t))
            pubs["image"].publish(image_msg(rgb, t))
            pubs["det"].publish(detections_msg(boxes, t))
            time.sleep(0.5)
        done = lambda: all(  # noqa: E731
            set(frames) <= {stamp_ns(m.header.stamp) for m in s.messages} for s in subs.values()
        )
        arrived = lambda: {k: sorted(stamp_ns(m.header.stamp) for m in s.messages) for k, s in subs.items()}  # noqa: E731
        assert driver.wait_for(done, 20.0), f"{sorted(frames)} {arrived()}\n{node.log_text()[-3000:]}"
    finally:
        for p in pubs.values():
            n.destroy_publisher(p)
    got = {k: {stamp_ns(m.header.stamp): m for m in s.messages} for k, s in subs.items()}
    for s in subs.values():
        s.close()

    predictor = Predictor.load(resolve_model_path(NodeConfig().model_path), backend="onnxruntime")
    for key, (rgb, boxes) in frames.items():
        masks_msg, labels_msg, dets_msg = got["masks"][key], got["labels"][key], got["dets"][key]
        objects = got["objects"][key].objects
        want = predictor.predict(rgb, boxes)
        assert len(masks_msg.instances) == len(want.masks) == len(boxes)
        assert masks_msg.backend.startswith("onnxruntime")
        labels = np.frombuffer(bytes(labels_msg.data), "<u2").reshape(H, W)
        assert len(dets_msg.detections) == len(objects) == len(boxes)
        for i, inst in enumerate(masks_msg.instances):
            x, y, rw, rh = (int(v) for v in want.regions[i])
            assert (inst.roi.x_offset, inst.roi.y_offset, inst.roi.width, inst.roi.height) == (x, y, rw, rh)
            mask = _mask_of(inst)
            np.testing.assert_array_equal(mask > 0, np.asarray(want.masks[i]) > 0)  # bit-exact masks
            full = np.zeros((H, W), bool)
            full[y : y + rh, x : x + rw] = mask > 0
            assert full.any()
            # label image: instance i's pixels lie inside its mask
            assert not np.any((labels == i + 1) & ~full)
            # refined detection: the predictor's tight box of this instance, with the detector's hypothesis
            ys, xs = np.nonzero(full)
            det = dets_msg.detections[i]
            bx1, by1, bx2, by2 = (float(v) for v in want.boxes[i])
            assert abs(det.bbox.center.position.x - (bx1 + bx2) / 2) < 1e-3
            assert abs(det.bbox.center.position.y - (by1 + by2) / 2) < 1e-3
            assert abs(det.bbox.size_x - (bx2 - bx1)) < 1e-3 and abs(det.bbox.size_y - (by2 - by1)) < 1e-3
            assert det.results[0].hypothesis.class_id == "object"
            # 3D: a plane at Z_MM: centroid = back-projected mask centroid at that depth
            obj = objects[i]
            assert obj.status == "ok" and obj.num_valid_points == full.sum()
            z = Z_MM / 1000.0
            assert abs(obj.centroid.z - z) < 1e-3
            assert abs(obj.centroid.x - ((xs + 0.5).mean() - CX) * z / FX) < 5e-3
            assert abs(obj.centroid.y - ((ys + 0.5).mean() - CY) * z / FY) < 5e-3
    assert node.alive()


def test_compressed_images_are_read_from_the_wire_and_segmented(launch, driver):
    """A `.../compressed` image topic: CompressedImage bytes read with the typestore and JPEG-decoded give the
    masks the Predictor makes on the decoded image."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    topic = "/camera/image_raw/compressed"
    node = launch({"backend": "onnxruntime", "image_topic": topic}, autostart=True)
    n = driver.node
    img_pub = n.create_publisher(CompressedImage, topic, qos())
    det_pub = n.create_publisher(Detection2DArray, "/detections", qos())
    masks = driver.subscribe(InstanceMaskArray, "/shapemask/masks")
    frames = {}
    try:
        assert driver.wait_for(lambda: img_pub.get_subscription_count() and masks.sub.get_publisher_count(), 30.0)
        settle_qos(driver, topic, True)
        assert driver.wait_for(lambda: img_pub.get_subscription_count() > 0, 10.0)
        for i in range(4):
            t = stamp(i, 2.0)
            rgb, boxes = synthetic_rgb(H, W, i), default_boxes(H, W, 2 + i)
            ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            decoded = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            frames[stamp_ns(t)] = (decoded, np.asarray(boxes, np.float32))
            img_pub.publish(
                CompressedImage(header=Header(stamp=t, frame_id="camera"), format="jpeg", data=jpeg.tobytes())
            )
            det_pub.publish(detections_msg(boxes, t))
            time.sleep(0.5)
        done = lambda: set(frames) <= {stamp_ns(m.header.stamp) for m in masks.messages}  # noqa: E731
        assert driver.wait_for(done, 20.0), node.log_text()[-3000:]
    finally:
        n.destroy_publisher(img_pub)
        n.destroy_publisher(det_pub)
    got = {stamp_ns(m.header.stamp): m for m in masks.messages}
    masks.close()
    assert node.alive()
    predictor = Predictor.load(resolve_model_path(NodeConfig().model_path), backend="onnxruntime")
    for key, (rgb, boxes) in frames.items():
        want = predictor.predict(rgb, boxes)
        msg = got[key]
        assert (msg.image_height, msg.image_width) == (H, W) and len(msg.instances) == len(boxes)
        for i, inst in enumerate(msg.instances):
            np.testing.assert_array_equal(_mask_of(inst) > 0, np.asarray(want.masks[i]) > 0)
