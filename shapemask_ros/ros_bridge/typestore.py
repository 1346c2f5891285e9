"""rosbags typestores with the stock ROS 2 types, vision_msgs 4.x and this package's messages.

The stock Humble/Jazzy stores of rosbags do not contain vision_msgs, so its types that we use (the 2D
detection types and BoundingBox3D) are registered here from .msg text in the vision_msgs 4.x layout
shared by Humble and Jazzy. Our own messages (every `msg/*.msg`) are read from the files at run time, so
the .msg files stay the single definition: `$SHAPEMASK_MSG_DIR`, else `<repo>/msg` in a source checkout,
else `share/shapemask_ros/msg` under the install prefix (setup.py's data_files) or any
`$AMENT_PREFIX_PATH` entry (colcon install).
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore

PACKAGE = "shapemask_ros"
OWN_MESSAGES = ("InstanceMask", "InstanceMaskArray")
MSGDEF_SEPARATOR = "=" * 80

_DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY}

# vision_msgs 4.x (ros2 branch, Humble and Jazzy): field lines as in the package, comments abridged.
VISION_MSGS_TEXT: dict[str, str] = {
    "vision_msgs/msg/Point2D": (
        "# A 2D point in pixel coordinates (x right, y down, as in sensor_msgs/Image).\n\nfloat64 x\nfloat64 y\n"
    ),
    "vision_msgs/msg/Pose2D": (
        "# A 2D pose: position and a rotation in radians (positive counterclockwise).\n\n"
        "vision_msgs/Point2D position\nfloat64 theta\n"
    ),
    "vision_msgs/msg/BoundingBox2D": (
        "# A 2D box in pixels that may be rotated about its centre.\n\n"
        "# Position and orientation of the box centre.\n"
        "vision_msgs/Pose2D center\n\n"
        "# Full size of the box relative to its centre pose.\n"
        "float64 size_x\nfloat64 size_y\n"
    ),
    "vision_msgs/msg/ObjectHypothesis": (
        "# A class hypothesis without pose.\n\n"
        "# Class identifier (look up names in the detector's metadata).\n"
        "string class_id\n\n"
        "# Confidence, by convention in [0, 1].\n"
        "float64 score\n"
    ),
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "# A class hypothesis with a 6D pose.\n\n"
        "ObjectHypothesis hypothesis\n\n"
        "# Pose of a reference point of the object (frame given by the parent message).\n"
        "geometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "# A 2D detection: class hypotheses and a box in the source image.\n\n"
        "std_msgs/Header header\n\n"
        "# Class probabilities\n"
        "ObjectHypothesisWithPose[] results\n\n"
        "# Box around the object.\n"
        "BoundingBox2D bbox\n\n"
        "# Identifier that stays the same for one object across messages; may be empty.\n"
        "string id\n"
    ),
    "vision_msgs/msg/BoundingBox3D": (
        "# A 3D box that may be positioned and rotated about its centre (6 DOF), in metres.\n\n"
        "# Position and orientation of the box centre.\n"
        "geometry_msgs/Pose center\n\n"
        "# Full size of the box relative to its centre pose.\n"
        "geometry_msgs/Vector3 size\n"
    ),
    "vision_msgs/msg/Detection2DArray": (
        "# The detections of one image.\n\nstd_msgs/Header header\n\nDetection2D[] detections\n"
    ),
}

# Per typestore: .msg text of every type registered from text, for message definitions stored in bags.
_MSG_TEXT: weakref.WeakKeyDictionary[Typestore, dict[str, str]] = weakref.WeakKeyDictionary()


def normalize_type_name(name: str) -> str:
    """'sensor_msgs/Image' -> 'sensor_msgs/msg/Image' (bags may declare types without '/msg/')."""
    name = name.strip().strip("/")
    parts = name.split("/")
    if len(parts) == 2 and all(parts):
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3 and all(parts):
        return name
    raise ValueError(f"not a ROS message type name: {name!r} (want 'pkg/msg/Type' or 'pkg/Type')")


def find_msg_dir() -> Path:
    """Directory holding InstanceMask.msg and InstanceMaskArray.msg (see the module docstring for order)."""
    candidates: list[Path] = []
    if env := os.environ.get("SHAPEMASK_MSG_DIR"):
        candidates.append(Path(env))
    candidates.append(Path(__file__).resolve().parents[2] / "msg")  # source checkout: <repo>/msg
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "msg")  # pip install (data_files)
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidates.append(Path(prefix) / "share" / PACKAGE / "msg")  # colcon install
    for c in candidates:
        if all((c / f"{m}.msg").is_file() for m in OWN_MESSAGES):
            return c
    raise FileNotFoundError(
        f"{PACKAGE} .msg files not found; looked in {[str(c) for c in candidates]} "
        "(set SHAPEMASK_MSG_DIR to the directory holding InstanceMask.msg)"
    )


@functools.cache
def get_typestore(distro: str = "humble") -> Typestore:
    """Stock ROS 2 typestore of `distro` ('humble' | 'jazzy') + vision_msgs 4.x + every msg/*.msg (cached)."""
    key = distro.strip().lower()
    if key not in _DISTROS:
        raise ValueError(f"unknown ROS distro {distro!r}; supported: {sorted(_DISTROS)}")
    store = _rosbags_typestore(_DISTROS[key])
    texts = dict(VISION_MSGS_TEXT)
    # Every .msg of the package (InstanceMask* are required by find_msg_dir; later ones come for free).
    for path in sorted(find_msg_dir().glob("*.msg")):
        texts[f"{PACKAGE}/msg/{path.stem}"] = path.read_text(encoding="utf-8")
    types = {}
    for name, text in texts.items():
        try:
            types.update(get_types_from_msg(text, name))
        except Exception as e:  # rosbags raises its own parser errors; name the file
            raise ValueError(f"cannot parse the definition of {name}: {e}") from e
    store.register(types)
    for name in texts:  # rosbags parses leniently: a misspelt field type only shows as a missing type
        try:
            _dependencies(store, name)
        except KeyError as e:
            raise ValueError(f"{name} uses unknown message type {e}") from None
    _MSG_TEXT[store] = texts
    return store


def _dependencies(store: Typestore, type_name: str) -> list[str]:
    """Message types used by `type_name`'s fields, depth first, each once (rosbag2 order)."""
    seen: list[str] = []

    def visit(name: str) -> None:
        for _field, desc in store.fielddefs[name][1]:
            if desc[0] == Nodetype.NAME:
                sub = desc[1]
            elif desc[0] in (Nodetype.ARRAY, Nodetype.SEQUENCE) and desc[1][0][0] == Nodetype.NAME:
                sub = desc[1][0][1]
            else:
                continue
            if sub not in seen:
                seen.append(sub)
                visit(sub)

    visit(type_name)
    return seen


def _type_text(store: Typestore, type_name: str) -> str:
    """The .msg text when we registered it from text, else rosbags' field-by-field rendering."""
    texts = _MSG_TEXT.get(store, {})
    if type_name in texts:
        return texts[type_name]
    return store.gendefhash(type_name, {}, ros_version=2)[0]


def message_definition(store: Typestore, type_name: str) -> tuple[str, str]:
    """(complete `ros2msg` message definition, RIHS01 hash) for writing `type_name` into a rosbag2.

    Layout as rosbag2 writes it: the top-level .msg text, then for every dependency a line of 80 '=',
    a line 'MSG: pkg/msg/Type' and that type's text. Our own and vision_msgs types keep their .msg text
    (comments included); stock types use rosbags' rendering of their fields.
    """
    name = normalize_type_name(type_name)
    if name not in store.fielddefs:
        raise KeyError(f"type {name!r} is not in the typestore")
    parts = [_type_text(store, name).rstrip("\n")]
    for dep in _dependencies(store, name):
        parts.append(f"{MSGDEF_SEPARATOR}\nMSG: {dep}\n{_type_text(store, dep).rstrip(chr(10))}")
    return "\n".join(parts) + "\n", store.hash_rihs01(name)
