"""Launch the ShapeMask lifecycle node.

    ros2 launch shapemask_ros segment.launch.py image_topic:=/camera/color/image_raw \
        detections_topic:=/yolo/detections
    ros2 launch shapemask_ros segment.launch.py detections_topic:=none      # self-detection mode
    ros2 launch shapemask_ros segment.launch.py autostart:=false            # drive the lifecycle yourself

Parameters come from `params_file` (default: the installed config/segment_params.yaml); the launch
arguments below override single parameters only when given (empty = keep the file's value).

3D outputs (/shapemask/objects3d, /shapemask/points) are switched on in the params file: set
`depth_topic` to a depth image registered to the colour camera (e.g. /camera/aligned_depth_to_color/
image_raw; its CameraInfo is taken from the sibling `camera_info` topic unless `camera_info_topic` is set)
and pass the file with `params_file:=...`. See docs/ros.md and docs/geometry.md.
"""

from __future__ import annotations

from typing import Any

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

# launch argument -> node parameter it overrides when non-empty
OVERRIDES: dict[str, str] = {
    "model": "model_path",
    "backend": "backend",
    "image_topic": "image_topic",
    "detections_topic": "detections_topic",
    "depth_topic": "depth_topic",
    "camera_info_topic": "camera_info_topic",
}
# `detections_topic:=none` selects self-detection (an empty value already means "keep the file's value")
SELF_DETECTION_VALUE = "none"


def parameter_overrides(values: dict[str, str]) -> dict[str, str]:
    """Node parameters to override from launch-argument values; empty values are left out."""
    out: dict[str, str] = {}
    for arg, param in OVERRIDES.items():
        value = values.get(arg, "").strip()
        if not value:
            continue
        if arg == "detections_topic" and value.lower() == SELF_DETECTION_VALUE:
            value = ""
        out[param] = value
    return out


def _launch_setup(context: LaunchContext, *args: Any, **kwargs: Any) -> list[Any]:
    values = {arg: LaunchConfiguration(arg).perform(context) for arg in OVERRIDES}
    parameters: list[Any] = [LaunchConfiguration("params_file")]
    overrides = parameter_overrides(values)
    if overrides:
        parameters.append(overrides)
    node = LifecycleNode(
        package="shapemask_ros",
        executable="shapemask_node",
        name="shapemask_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=parameters,
        # the node validates the value (true/false) and configures + activates itself when true
        arguments=["--autostart", LaunchConfiguration("autostart").perform(context)],
        output="screen",
        emulate_tty=True,
    )
    return [node]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments + the lifecycle node (built in an OpaqueFunction to drop empty overrides)."""
    default_params = PathJoinSubstitution([FindPackageShare("shapemask_ros"), "config", "segment_params.yaml"])
    keep = "'' = value in params_file"
    return LaunchDescription(
        [
            DeclareLaunchArgument("model", default_value="", description=f"model bundle directory ({keep})"),
            DeclareLaunchArgument(
                "backend", default_value="", description=f"auto|tensorrt|onnxruntime|tensorflow ({keep})"
            ),
            DeclareLaunchArgument(
                "image_topic", default_value="", description=f"Image topic or .../compressed ({keep})"
            ),
            DeclareLaunchArgument(
                "detections_topic",
                default_value="",
                description=f"Detection2DArray topic; 'none' = self-detection ({keep})",
            ),
            DeclareLaunchArgument(
                "depth_topic", default_value="", description=f"aligned depth Image for 3D outputs ({keep})"
            ),
            DeclareLaunchArgument(
                "camera_info_topic", default_value="", description=f"CameraInfo of the depth image ({keep})"
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
            DeclareLaunchArgument("params_file", default_value=default_params, description="parameters YAML"),
            DeclareLaunchArgument(
                "autostart", default_value="true", description="configure + activate on start (true|false)"
            ),
            OpaqueFunction(function=_launch_setup),
        ]
    )
