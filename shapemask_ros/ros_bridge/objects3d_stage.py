"""The frame processor's 3D stage: a frame's masks + its registered depth image + CameraInfo -> `Objects3D`
and, when asked, the ObjectGeometryArray and PointCloud2 messages; or the GeometryError reason the frame
goes out without 3D (the masks are never affected). Pairing depth images with frames stays in the processor."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from shapemask_ros.config.node_config import GeometryConfig
from shapemask_ros.geometry.depth import CameraIntrinsics, GeometryError, intrinsics_for_depth
from shapemask_ros.geometry.objects3d import Objects3D, objects3d_from_instances
from shapemask_ros.geometry.rays import ray_cache
from shapemask_ros.ros_bridge.factory import MessageFactory, stamp_of
from shapemask_ros.ros_bridge.image_codec import ImageDecodeError, depth_pixels
from shapemask_ros.ros_bridge.messages import objects3d_message
from shapemask_ros.ros_bridge.pointcloud import objects_pointcloud
from shapemask_ros.runtime.instances import Instances

NO_DEPTH_DETAIL = "no depth image matched the frame within sync_slop_s / depth_wait_s"


def _require_valid_depth(depth: np.ndarray) -> None:
    """GeometryError all_invalid_depth when no pixel of `depth` (image_codec.depth_pixels: uint16 millimetres, 0 =
    no reading, or float32 metres, NaN = none) has a reading."""
    if not (depth.any() if depth.dtype == np.uint16 else np.isfinite(depth).any()):
        raise GeometryError("all_invalid_depth", "no pixel of the depth image has a valid reading")


@dataclass
class Stage3DOutput:
    """What the 3D stage made of one frame: all three outputs None and `error` set when it could not run."""

    objects: Objects3D | None = None  # row i = masks.instances[i]
    objects3d: Any = None  # ObjectGeometryArray (when asked)
    points: Any = None  # PointCloud2 (when asked)
    error: str = ""  # GeometryError reason ("" = ran)
    detail: str = ""  # the reason's explanation, for the log


class Objects3DStage:
    """Runs the 3D stage for the processor and keeps what it needs between frames: the newest CameraInfo and
    the intrinsics read from it (validated once per message)."""

    def __init__(self, factory: MessageFactory) -> None:
        self.factory = factory
        self.camera_info: Any = None  # the newest CameraInfo (FrameProcessor.add_camera_info)
        self._intrinsics_cache: tuple[Any, bool, CameraIntrinsics | GeometryError] | None = None

    def run(
        self,
        instances: Instances,
        masks: Any,
        image_header: Any,
        depth_msg: Any | None,
        camera_info_msg: Any | None,
        *,
        rectified: bool,
        geometry: GeometryConfig,
        want_points: bool,
        want_objects3d: bool,
        missing_depth: str,
    ) -> Stage3DOutput:
        """The 3D outputs of a frame (`masks`: its InstanceMaskArray, whose detection ids the 3D message
        repeats), or, without `depth_msg`, the `missing_depth` reason. Never raises: a bug in the 3D stage
        must not cost the masks (reported as internal_error)."""
        out = Stage3DOutput(error=missing_depth, detail=NO_DEPTH_DETAIL)
        try:
            if depth_msg is not None:
                objects, depth_header = self._objects3d(
                    instances, image_header, depth_msg, camera_info_msg, rectified, geometry, want_points
                )
                ids = [str(inst.detection_id) for inst in masks.instances]
                out.objects = objects
                if want_objects3d:
                    out.objects3d = objects3d_message(self.factory, depth_header, objects, ids)
                if want_points:
                    out.points = objects_pointcloud(self.factory, depth_header, objects)
                out.error = ""
        except GeometryError as e:
            out = Stage3DOutput(error=e.reason, detail=e.detail or str(e))
        except Exception as e:  # a bug in the 3D stage must not cost the masks
            out = Stage3DOutput(error="internal_error", detail=f"{e!r}\n{traceback.format_exc(limit=3)}")
        return out

    def prime_rays(
        self, camera_info_msg: Any, depth_shape: tuple[int, int], *, rectified: bool, geometry: GeometryConfig
    ) -> int:
        """Compute the rays of every depth pixel of this CameraInfo's camera now (rays.RayCache.prime): start-up
        work of a batch run, before its frames are timed. Returns how many pixels were undistorted; an
        unusable CameraInfo or size primes nothing (0): the frames then report it."""
        try:
            intr = self._intrinsics(camera_info_msg, rectified)
            intr = intrinsics_for_depth(intr, depth_shape, geometry.registration)
        except GeometryError:
            return 0
        return ray_cache(intr).prime()

    def _intrinsics(self, camera_info_msg: Any | None, rectified: bool) -> CameraIntrinsics:
        """Intrinsics of the given (or newest stored) CameraInfo; GeometryError with the reason otherwise."""
        msg = camera_info_msg if camera_info_msg is not None else self.camera_info
        if msg is None:
            raise GeometryError("missing_camera_info", "no CameraInfo received for the depth image")
        cached = self._intrinsics_cache
        if cached is not None and cached[0] is msg and cached[1] == rectified:
            result = cached[2]
        else:
            try:
                result = CameraIntrinsics.from_camera_info(msg, rectified=rectified)
            except GeometryError as e:
                result = e
            except (TypeError, ValueError, AttributeError) as e:  # fields of the wrong type or shape
                result = GeometryError("bad_intrinsics", f"unreadable CameraInfo: {type(e).__name__}: {e}")
            self._intrinsics_cache = (msg, rectified, result)
        if isinstance(result, GeometryError):
            raise result
        return result

    @staticmethod
    def _check_frames(depth_header: Any, image_header: Any, camera_info_msg: Any) -> None:
        """Registered depth lives in the colour image's optical frame (and so does its CameraInfo)."""
        depth_frame = str(getattr(depth_header, "frame_id", "") or "")
        info_header = getattr(camera_info_msg, "header", None)
        for what, hdr in (("colour image", image_header), ("CameraInfo", info_header)):
            other = str(getattr(hdr, "frame_id", "") or "")
            if depth_frame and other and other != depth_frame:
                raise GeometryError(
                    "frame_mismatch",
                    f"depth is in frame {depth_frame!r} but the {what} in {other!r}: use depth registered to "
                    "the colour camera (e.g. aligned_depth_to_color) and its CameraInfo",
                )

    def _objects3d(
        self,
        instances: Instances,
        image_header: Any,
        depth_msg: Any,
        camera_info_msg: Any | None,
        rectified: bool,
        geometry: GeometryConfig,
        return_points: bool,
    ) -> tuple[Objects3D, Any]:
        """Objects3D of the frame and the depth header; GeometryError for unusable input."""
        intrinsics = self._intrinsics(camera_info_msg, rectified)
        try:
            depth_header = depth_msg.header
            stamp_of(depth_msg)
        except (AttributeError, ValueError) as e:
            raise GeometryError("bad_depth", f"depth image header: {e}") from None
        info = camera_info_msg if camera_info_msg is not None else self.camera_info
        self._check_frames(depth_header, image_header, info)
        try:
            depth = depth_pixels(depth_msg)  # 16UC1 stays millimetres: only the pixels under masks are converted
        except ImageDecodeError as e:
            raise GeometryError(
                "bad_encoding" if e.reason == "unsupported_encoding" else "bad_depth", e.detail
            ) from None
        # A frame without one valid reading is all_invalid_depth, whatever else is wrong with it. Looked for only
        # when no object found a valid depth (else the frame has one): a pass over the frame saved on the others.
        try:
            objects = objects3d_from_instances(
                depth, intrinsics, instances, config=geometry, return_points=return_points
            )
        except GeometryError:
            _require_valid_depth(depth)
            raise
        if not objects.num_valid_points.any():
            _require_valid_depth(depth)
        return objects, depth_header
