"""What the node's data path costs per message with rclpy's message classes vs the wire codec (a benchmark).

    python -m shapemask_ros.bench.wire_bench [--boxes 20] [--repeats 300]

Run inside a ROS environment (e.g. `. ~/.cache/shapemask_ros/ros-jazzy/env.sh` after `make test-ros`). Per
message the node handles: reading a 640x480 rgb8 Image and a Detection2DArray of `--boxes` detections
(rclpy's deserialisation, as its executor does for a typed subscription, vs `WireCodec.decode` of the raw
bytes), and building + serialising the InstanceMaskArray of the default model's masks on those boxes
(rclpy classes + `serialize_message`, as `publish` does, vs the typestore's classes + `WireCodec.encode`);
checks that both give the same message (the same bytes but for
alignment padding, which rclpy's serialiser leaves uninitialised). Prints a markdown table; `--out` JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from array import array
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message

from shapemask_ros.bench.node_driver import default_boxes, detections_msg, image_msg, stamp, synthetic_rgb
from shapemask_ros.node import import_message
from shapemask_ros.ros_bridge.messages import instances_to_mask_array
from shapemask_ros.ros_bridge.msg_types import MASK_ARRAY_TYPE
from shapemask_ros.ros_bridge.wire import WireCodec


class _RclpyFactory:
    """MessageFactory over rclpy's generated classes (what the node used before it read and wrote CDR)."""

    def make(self, type_name: str, **fields: Any) -> Any:
        return import_message(type_name)(**fields)

    @staticmethod
    def u8(values: np.ndarray) -> array:
        out = array("B")
        out.frombytes(np.ascontiguousarray(values, dtype=np.uint8).tobytes())
        return out


def _ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shapemask_ros.bench.wire_bench", description=__doc__.split("\n")[0])
    p.add_argument("--boxes", type=int, default=20)
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--model", default="", help='model bundle ("" = models/real_lite0)')
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    from shapemask_ros.runtime.bundle import resolve_model_path
    from shapemask_ros.runtime.predictor import Predictor

    codec = WireCodec()
    rgb, boxes = synthetic_rgb(480, 640, 0), default_boxes(480, 640, args.boxes)
    t = stamp(1)
    rows: dict[str, dict[str, float]] = {}
    for name, msg in (
        ("Image 640x480 rgb8", image_msg(rgb, t)),
        (f"Detection2DArray, {args.boxes}", detections_msg(boxes, t)),
    ):
        raw = serialize_message(msg)
        cls, type_name = type(msg), f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"
        rows[f"read {name}"] = {
            "rclpy": _ms(functools.partial(deserialize_message, raw, cls), args.repeats),
            "wire": _ms(functools.partial(codec.decode, raw, type_name), args.repeats),
        }
    predictor = Predictor.load(resolve_model_path(args.model))
    inst = predictor.predict(rgb, np.asarray(boxes, np.float32))
    names = list(predictor.class_names)
    made: dict[str, Any] = {}

    def build(factory: Any) -> Any:
        hdr = factory.make(
            "std_msgs/msg/Header",
            stamp=factory.make("builtin_interfaces/msg/Time", sec=1, nanosec=2),
            frame_id="camera",
        )
        return instances_to_mask_array(factory, inst, hdr, names, None, backend=predictor.backend)

    def rclpy_out() -> bytes:
        made["rclpy"] = serialize_message(build(_RclpyFactory()))
        return made["rclpy"]

    def wire_out() -> bytes:
        made["wire"] = codec.encode(build(codec.factory))
        return made["wire"]

    rows[f"build + serialise InstanceMaskArray, {len(inst.boxes)} instances"] = {
        "rclpy": _ms(rclpy_out, args.repeats // 3),
        "wire": _ms(wire_out, args.repeats // 3),
    }
    # the same message: rclpy's serialiser leaves alignment padding uninitialised, the typestore's writes
    # zeros, so the bytes are compared after a round trip through the typestore
    same = codec.encode(codec.decode(made["rclpy"], MASK_ARRAY_TYPE)) == made["wire"]
    print(f"| per message | rclpy classes ms | wire codec ms | ratio |  (same message: {same}, {len(made['wire'])} B)")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['rclpy']:.3f} | {r['wire']:.3f} | {r['rclpy'] / r['wire']:.1f}x |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "identical_bytes": same, "boxes": args.boxes}, f, indent=1)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
