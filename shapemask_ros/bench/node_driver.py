"""Driving the real node process from another process on real rclpy: the test lane (test/ros2) and the
node benchmark (`python -m shapemask_ros.bench.node_bench`) share it. Needs a ROS environment (rclpy and the
built messages): besides shapemask_ros.node, the only module that imports rclpy at module level.

`Driver` owns one rclpy context, a driver node and an executor thread; `start_node` launches
`lib/shapemask_ros/shapemask_node` (as installed by the package's CMakeLists.txt) as a separate process and
returns a `NodeProcess` with helpers for the lifecycle and parameter services; `send_frames` plays a camera
and a detector at a fixed rate and collects the masks.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

NODE_NAME = "shapemask_node"


def node_executable() -> Path:
    """The installed start script (lib/shapemask_ros/shapemask_node under an AMENT_PREFIX_PATH entry)."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        path = Path(prefix) / "lib" / "shapemask_ros" / "shapemask_node"
        if path.is_file():
            return path
    raise FileNotFoundError("lib/shapemask_ros/shapemask_node not under AMENT_PREFIX_PATH: run test/ros2/lane.sh")


def qos(reliable: bool = True, depth: int = 10) -> QoSProfile:
    rel = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel)


def param_value(value: Any) -> ParameterValue:
    """rcl_interfaces ParameterValue of a Python bool/int/float/str."""
    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    if isinstance(value, str):
        return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
    raise TypeError(f"unsupported parameter value {value!r}")


def _ros_arg(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class NodeProcess:
    """A running node process and clients for its lifecycle and parameter services."""

    def __init__(self, driver: Driver, popen: subprocess.Popen, log: Path, name: str) -> None:
        self.driver, self.popen, self.log, self.name = driver, popen, log, name
        n = driver.node
        self._change = n.create_client(ChangeState, f"/{name}/change_state")
        self._get = n.create_client(GetState, f"/{name}/get_state")
        self._set_params = n.create_client(SetParameters, f"/{name}/set_parameters")
        self._get_params = n.create_client(GetParameters, f"/{name}/get_parameters")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _call(self, client: Any, request: Any, timeout: float = 60.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available; node log:\n{self.log_text()[-3000:]}")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            client.remove_pending_request(future)
            raise TimeoutError(f"no reply from {client.srv_name} in {timeout} s")
        return future.result()

    def change_state(self, transition_id: int, timeout: float = 90.0) -> bool | None:
        """success of a change_state request; None when no reply came (e.g. the process died)."""
        request = ChangeState.Request(transition=Transition(id=transition_id))
        try:
            return bool(self._call(self._change, request, timeout).success)
        except TimeoutError:
            return None

    def configure(self) -> bool | None:
        return self.change_state(Transition.TRANSITION_CONFIGURE)

    def activate(self) -> bool | None:
        return self.change_state(Transition.TRANSITION_ACTIVATE)

    def state(self, timeout: float = 30.0) -> str:
        return str(self._call(self._get, GetState.Request(), timeout).current_state.label)

    def set_params(self, **values: Any) -> list[Any]:
        """SetParameters results (successful, reason), one per parameter."""
        request = SetParameters.Request(
            parameters=[ParameterMsg(name=k, value=param_value(v)) for k, v in values.items()]
        )
        return list(self._call(self._set_params, request).results)

    def get_param(self, name: str) -> Any:
        (value,) = self._call(self._get_params, GetParameters.Request(names=[name])).values
        return value

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGINT (the node cleans up), then SIGKILL after `timeout`; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for client in (self._change, self._get, self._set_params, self._get_params):
            self.driver.node.destroy_client(client)
        return self.popen.returncode


class Driver:
    """rclpy context + driver node + executor thread in the test process."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"lane_driver_{os.getpid()}", context=self.context)
        # one thread: rclpy's multi-threaded executor thrashes the GIL and bunches our camera's publishes
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._count = 0

    def start_node(
        self,
        params: dict[str, Any],
        autostart: bool = False,
        log_dir: Path | None = None,
        name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        self._count += 1
        name = name or f"shapemask_lane_{os.getpid()}_{self._count}"
        args = [sys.executable, str(node_executable())] + (["--autostart"] if autostart else [])
        args += ["--ros-args", "-r", f"__node:={name}"]
        for key, value in params.items():
            if value == "":
                raise ValueError(f"parameter {key}: an empty string cannot be passed as -p {key}:=")
            args += ["-p", f"{key}:={_ros_arg(value)}"]
        log = Path(log_dir or "/tmp") / f"{name}.log"
        with open(log, "w") as out:
            popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        return NodeProcess(self, popen, log, name)

    def subscribe(
        self,
        msg_type: Any,
        topic: str,
        reliable: bool = True,
        depth: int = 50,
        decode: Callable[[bytes], Any] | None = None,
    ) -> Collector:
        """Collect `topic`; with `decode`, subscribed raw and each message's bytes read with it."""
        return Collector(self, msg_type, topic, qos(reliable, depth), decode)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def node_counters(driver: Driver, node_name: str, timeout: float = 3.0) -> dict[str, float]:
    """The node's non-zero counters (totals, drops by reason, transport loss, errors) from its next
    /diagnostics message."""
    return counters_of(node_values(driver, node_name, timeout))


def counters_of(values: dict[str, float]) -> dict[str, float]:
    """The non-zero counters among a node's diagnostic values (see `node_counters`)."""
    keep = ("drop", "lost", "superseded", "_total", "error")
    return {k: v for k, v in sorted(values.items()) if v and any(w in k for w in keep)}


def node_values(driver: Driver, node_name: str, timeout: float = 3.0) -> dict[str, float]:
    """Every numeric value of the node's next /diagnostics status."""
    from diagnostic_msgs.msg import DiagnosticArray

    diags = driver.subscribe(DiagnosticArray, "/diagnostics", reliable=False)
    values: dict[str, float] = {}

    def found() -> bool:
        for msg in diags.messages:
            for status in msg.status:
                if status.name.startswith(f"{node_name}:") and status.values:
                    for kv in status.values:
                        try:
                            values[kv.key] = float(kv.value)
                        except ValueError:
                            pass
                    return True
        return False

    driver.wait_for(found, timeout)
    diags.close()
    return values


class Collector:
    """Messages received on a topic, with their arrival time (monotonic)."""

    def __init__(
        self,
        driver: Driver,
        msg_type: Any,
        topic: str,
        profile: QoSProfile,
        decode: Callable[[bytes], Any] | None = None,
    ) -> None:
        self.driver = driver
        self.items: list[tuple[float, Any]] = []
        self._lock = threading.Lock()
        self._decode = decode
        self.sub = driver.node.create_subscription(msg_type, topic, self._on, profile, raw=decode is not None)

    def _on(self, msg: Any) -> None:
        t = time.monotonic()
        if self._decode is not None:
            msg = self._decode(msg)
        with self._lock:
            self.items.append((t, msg))

    @property
    def messages(self) -> list[Any]:
        with self._lock:
            return [m for _, m in self.items]

    def close(self) -> None:
        self.driver.node.destroy_subscription(self.sub)


# ---- frames ---------------------------------------------------------------------------------------------
def stamp(i: int, rate_hz: float = 10.0) -> Any:
    from builtin_interfaces.msg import Time

    ns = 1_000_000_000 + int(round(i * 1e9 / rate_hz))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_msg(rgb: Any, t: Any, frame_id: str = "camera") -> Any:
    """sensor_msgs/Image rgb8 of an HxWx3 uint8 array."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    h, w = rgb.shape[:2]
    msg = Image(header=Header(stamp=t, frame_id=frame_id), height=h, width=w, encoding="rgb8", step=3 * w)
    msg.data = rgb.tobytes()
    return msg


def detections_msg(boxes_xyxy: Any, t: Any, frame_id: str = "camera", class_id: str = "object") -> Any:
    """vision_msgs/Detection2DArray with one axis-aligned box per row of `boxes_xyxy`."""
    from std_msgs.msg import Header
    from vision_msgs.msg import (
        BoundingBox2D,
        Detection2D,
        Detection2DArray,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
        Point2D,
        Pose2D,
    )

    header = Header(stamp=t, frame_id=frame_id)
    dets = []
    for k, (x1, y1, x2, y2) in enumerate(boxes_xyxy):
        hyp = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=class_id, score=0.9))
        center = Pose2D(position=Point2D(x=float(x1 + x2) / 2, y=float(y1 + y2) / 2), theta=0.0)
        bbox = BoundingBox2D(center=center, size_x=float(x2 - x1), size_y=float(y2 - y1))
        dets.append(Detection2D(header=header, results=[hyp], bbox=bbox, id=str(k)))
    return Detection2DArray(header=header, detections=dets)


def stamp_ns(t: Any) -> int:
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


class FrameRun:
    """Result of `send_frames`: frames sent, masks received (by stamp) and stamp -> arrival latencies."""

    def __init__(self, sent: dict[int, float], masks: list[tuple[float, Any]]) -> None:
        self.sent = sent  # stamp ns -> monotonic send time
        self.order = [stamp_ns(m.header.stamp) for _, m in masks]  # stamps in the order the masks arrived
        self.by_stamp = {stamp_ns(m.header.stamp): (t, m) for t, m in masks}
        self.received = len(set(self.by_stamp) & set(sent))
        self.latencies = sorted(t - sent[s] for s, (t, _) in self.by_stamp.items() if s in sent)
        self.segments: list[tuple[int, int]] = []  # send indices [start, end) of each segment (send_frames)

    def output_fps(self, indices: tuple[int, int] | None = None) -> float:
        """Masks per second: frames back over the span of their arrival times, among the frames sent with
        indices [start, end) (`indices`) or all."""
        order = list(self.sent)  # insertion order = send order
        chosen = order[slice(*indices)] if indices else order
        times = sorted(self.by_stamp[s][0] for s in chosen if s in self.by_stamp)
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


_PAUSE_S = 0.3  # longer than one frame of the default model on a 2-core CPU


def settle_qos(driver: Driver, topic: str, reliable: bool, timeout: float = 10.0) -> None:
    """Wait until every subscription on `topic` uses the reliability an 'auto' subscriber picks for our
    publisher (the node re-subscribes within a second of seeing it), then for discovery to match again."""
    want = "RELIABLE" if reliable else "BEST_EFFORT"

    def settled() -> bool:
        infos = driver.node.get_subscriptions_info_by_topic(topic)
        return bool(infos) and all(i.qos_profile.reliability.name == want for i in infos)

    driver.wait_for(settled, timeout)
    time.sleep(0.5)  # the new reader's discovery by our writer


def synthetic_rgb(h: int, w: int, i: int) -> Any:
    """A frame with a few filled shapes on a textured background (the model sees objects, not noise)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(i)
    img = (rng.integers(90, 140, (h, w, 3))).astype(np.uint8)
    cv2.circle(img, (w // 4, h // 2), h // 6, (200, 40, 40), -1)
    cv2.rectangle(img, (w // 2, h // 4), (w // 2 + w // 5, h // 4 + h // 3), (40, 180, 60), -1)
    cv2.ellipse(img, (3 * w // 4, 3 * h // 4), (w // 10, h // 8), 30, 0, 360, (30, 60, 200), -1)
    return img


def default_boxes(h: int, w: int, n: int = 4) -> list[tuple[float, float, float, float]]:
    base = [
        (w / 4 - h / 6 - 4, h / 2 - h / 6 - 4, w / 4 + h / 6 + 4, h / 2 + h / 6 + 4),
        (w / 2 - 4, h / 4 - 4, w / 2 + w / 5 + 4, h / 4 + h / 3 + 4),
        (3 * w / 4 - w / 10 - 6, 3 * h / 4 - h / 8 - 6, 3 * w / 4 + w / 10 + 6, 3 * h / 4 + h / 8 + 6),
    ]
    out = []
    for k in range(n):
        x1, y1, x2, y2 = base[k % 3]
        d = 3 * (k // 3)
        out.append((x1 + d, y1 + d, min(w - 1.0, x2 + d), min(h - 1.0, y2 + d)))
    return out


def send_frames(
    driver: Driver,
    n: int,
    rate_hz: float,
    *,
    size: tuple[int, int] = (480, 640),
    boxes: int = 4,
    reliable: bool = True,
    pub_depth: int = 10,
    image_topic: str = "/camera/image_raw",
    detections_topic: str = "/detections",
    masks_topic: str = "/shapemask/masks",
    settle_s: float = 3.0,
    frames: list[tuple[Any, Any]] | None = None,
    first: int = 0,
    wire: bool = False,
    segment: int = 0,
    between: Callable[[], None] | None = None,
) -> FrameRun:
    """Publish `n` image + Detection2DArray pairs at `rate_hz` and collect the InstanceMaskArray replies.

    wire: publish CDR bytes serialised with the typestore (`WireCodec`) from messages built once per frame,
    only their stamps set per send, and read the masks raw with it: a camera and a consumer as cheap as
    compiled ones, so that a benchmark on a small CPU measures the node, not rclpy's message classes in
    the harness (which otherwise take several % of it at 30 Hz).
    segment, between: every `segment` frames the camera pauses, waits `_PAUSE_S` for the node to finish the
    frame it holds, calls `between()` (the node benchmark measures the Predictor alone there) and resumes at
    `rate_hz`; `FrameRun.segments` lists the send indices of each segment.
    """
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    from shapemask_ros.msg import InstanceMaskArray
    from shapemask_ros.ros_bridge.msg_types import DETECTION_ARRAY_TYPE, IMAGE_TYPE, MASK_ARRAY_TYPE
    from shapemask_ros.ros_bridge.wire import WireCodec

    h, w = size
    node = driver.node
    img_pub = node.create_publisher(Image, image_topic, qos(reliable, pub_depth))
    det_pub = node.create_publisher(Detection2DArray, detections_topic, qos(True, pub_depth))
    codec = WireCodec() if wire else None
    decode = None if codec is None else functools.partial(codec.decode, type_name=MASK_ARRAY_TYPE)
    masks = driver.subscribe(InstanceMaskArray, masks_topic, reliable=True, depth=100, decode=decode)
    try:
        matched = lambda: img_pub.get_subscription_count() > 0 and det_pub.get_subscription_count() > 0  # noqa: E731
        if not driver.wait_for(lambda: matched() and masks.sub.get_publisher_count() > 0, timeout=30.0):
            raise TimeoutError("the node's subscriptions / masks publisher did not match in 30 s")
        settle_qos(driver, image_topic, reliable)
        if not driver.wait_for(matched, timeout=10.0):  # our writers matched the re-created reader again
            raise TimeoutError("the node's re-created image subscription did not match in 10 s")
        prepared = frames or [(synthetic_rgb(h, w, i % 8), default_boxes(h, w, boxes)) for i in range(min(n, 8))]
        built: dict[int, tuple[Any, Any]] = {}

        def frame(i: int, t: Any) -> tuple[Any, Any]:
            rgb, bxs = prepared[i % len(prepared)]
            if codec is None:
                return image_msg(rgb, t), detections_msg(bxs, t)
            k = i % len(prepared)
            if k not in built:  # rclpy builds it once; the typestore's copy is re-stamped and serialised
                built[k] = (
                    codec.decode(serialize_message(image_msg(rgb, t)), IMAGE_TYPE),
                    codec.decode(serialize_message(detections_msg(bxs, t)), DETECTION_ARRAY_TYPE),
                )
            img, det = built[k]
            for header in [img.header, det.header] + [d.header for d in det.detections]:
                header.stamp.sec, header.stamp.nanosec = int(t.sec), int(t.nanosec)
            return codec.encode(img), codec.encode(det)

        sent: dict[int, float] = {}
        segments: list[tuple[int, int]] = []
        t0 = time.monotonic()
        for i in range(n):
            if segment and between is not None and i and i % segment == 0:
                time.sleep(_PAUSE_S)  # the node finishes the frame it holds
                between()
                segments.append((i - segment, i))
                t0 = time.monotonic() - i / rate_hz  # resume the schedule from now
            t = stamp(first + i, rate_hz)
            img, det = frame(i, t)
            wait = t0 + i / rate_hz - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sent[stamp_ns(t)] = time.monotonic()
            img_pub.publish(img)
            det_pub.publish(det)
        driver.wait_for(lambda: len(masks.items) >= n, timeout=settle_s)
        if segment and between is not None:
            segments.append((segments[-1][1] if segments else 0, n))
        run = FrameRun(sent, list(masks.items))
        run.segments = segments
        return run
    finally:
        masks.close()
        node.destroy_publisher(img_pub)
        node.destroy_publisher(det_pub)
