"""bag-eval compiles every (de)serialiser it will need before the first frame is timed."""

from __future__ import annotations

from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, BagEvaluation
from shapemask_ros.bag.recording.reader import BagReader
from shapemask_ros.bag.recording.writer import AtomicOutputDir
from shapemask_ros.bag.scenes import demo_bag
from shapemask_ros.ros_bridge.messages import MASK_ARRAY_TYPE
from shapemask_ros.ros_bridge.node_params import OBJECTS3D_TYPE
from shapemask_ros.ros_bridge.typestore import get_typestore


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
            image_topic=demo_bag.IMAGE_TOPIC,
            detections_topic=demo_bag.DETECTIONS_TOPIC,
            depth_topic=demo_bag.DEPTH_TOPIC,
            camera_info_topic=demo_bag.CAMERA_INFO_TOPIC,
            out=str(tmp_path / "ev"),
        )
        with AtomicOutputDir(opts.out) as out:
            ev = BagEvaluation(opts, _NoPredictor(), reader, out)
            assert not any(t in store.cache for t in (*inputs, MASK_ARRAY_TYPE, OBJECTS3D_TYPE))
            ev.warm_up()
            assert all(t in store.cache for t in (*inputs, MASK_ARRAY_TYPE, OBJECTS3D_TYPE))
