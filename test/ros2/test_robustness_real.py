"""Bad input never takes the real node down: each malformed message (bytes that are no message at all
included) is counted under its reason and the good frames around it still come back; a missing ROS Python
package is named by the start script."""

from __future__ import annotations

import subprocess
import sys

from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from shapemask_ros.bench.node_driver import (
    default_boxes,
    detections_msg,
    image_msg,
    node_counters,
    node_executable,
    qos,
    settle_qos,
    stamp,
    stamp_ns,
    synthetic_rgb,
)
from shapemask_ros.msg import InstanceMaskArray

H, W = 240, 320
KINDS = {  # malformed variant -> the drop reason it must be counted under
    "bad_encoding": "unsupported_encoding",
    "truncated": "bad_size",
    "nan_box": "bad_box",
}


def test_malformed_inputs_are_counted_and_good_frames_still_come_back(launch, driver):
    node = launch({"backend": "onnxruntime", "diagnostic_updater.period": 0.5}, autostart=True)
    n = driver.node
    img_pub = n.create_publisher(Image, "/camera/image_raw", qos())
    det_pub = n.create_publisher(Detection2DArray, "/detections", qos())
    masks = driver.subscribe(InstanceMaskArray, "/shapemask/masks")
    good = set()
    try:
        assert driver.wait_for(lambda: img_pub.get_subscription_count() and masks.sub.get_publisher_count(), 30.0)
        settle_qos(driver, "/camera/image_raw", True)
        kinds = list(KINDS)
        for i in range(30):
            t = stamp(i, 5.0)
            kind = kinds[i // 3 % 3] if i % 3 == 1 else None
            rgb = synthetic_rgb(H, W, i)
            boxes = [list(b) for b in default_boxes(H, W, 2)]
            img = image_msg(rgb, t)
            if kind == "bad_encoding":
                img.encoding = "yuv422_10bit"
            elif kind == "truncated":
                img.data = bytes(img.data)[: len(img.data) // 2]
            elif kind == "nan_box":
                boxes = [[float("nan"), 5.0, 50.0, 50.0]]
            else:
                good.add(stamp_ns(t))
            img_pub.publish(img)
            det_pub.publish(detections_msg(boxes, t))
            if i == 10:  # bytes that are no Image at all (the node reads its inputs raw): dropped and counted
                img_pub.publish(b"\x00\x01\x00\x00" + b"\x07" * 9)
            driver.wait_for(lambda: False, 0.2)
        driver.wait_for(lambda: good <= {stamp_ns(m.header.stamp) for m in masks.messages}, 10.0)
    finally:
        n.destroy_publisher(img_pub)
        n.destroy_publisher(det_pub)
    got = {stamp_ns(m.header.stamp) for m in masks.messages}
    masks.close()
    values = node_counters(driver, node.name)  # the next /diagnostics, after every frame was handled
    assert node.alive(), node.log_text()[-3000:]
    assert good <= got, f"good frames missing: {sorted(good - got)}"
    for reason in KINDS.values():
        assert float(values.get(f"processor.dropped.{reason}", 0)) >= 1, (reason, values)
    assert float(values["image_total"]) == 31
    assert float(values.get("drop.undecodable.image_total", 0)) == 1, values
    assert "not a valid sensor_msgs/msg/Image was dropped" in node.log_text()


def test_start_script_names_a_missing_ros_package():
    # rclpy imports fine, diagnostic_updater does not: the script must name it, not say "ROS 2 not importable"
    code = (
        "import runpy, sys; sys.modules['diagnostic_updater'] = None; sys.argv = ['shapemask_node']\n"
        f"runpy.run_path({str(node_executable())!r}, run_name='__main__')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "diagnostic_updater" in out.stderr and "not importable" in out.stderr
    assert "rclpy imports" in out.stderr
