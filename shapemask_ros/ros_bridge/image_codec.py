"""sensor_msgs/Image and CompressedImage <-> NumPy, without cv_bridge.

Everything the model sees is uint8 RGB [H, W, 3]. Every malformed message raises `ImageDecodeError`
with a short `reason` (a stats counter name) and a human `detail`; nothing else escapes `image_to_rgb`.

16-bit intensity images (mono16 / 16UC1) are stretched linearly from the frame's own [min, max] to
[0, 255] (cv_bridge's dynamic scaling for display does the same): 16-bit cameras rarely use all 16 bits,
so a fixed >> 8 would give the model a nearly black image. A constant frame maps to 0.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from shapemask_ros.geometry.depth import millimetres_to_metres
from shapemask_ros.ros_bridge.factory import MessageFactory
from shapemask_ros.ros_bridge.msg_types import COMPRESSED_TYPE, IMAGE_TYPE
from shapemask_ros.ros_bridge.typestore import normalize_type_name

# encoding -> (channels, bytes per channel, how to get RGB)
_ENCODINGS: dict[str, tuple[int, int, str]] = {
    "rgb8": (3, 1, "rgb"),
    "bgr8": (3, 1, "bgr"),
    "8UC3": (3, 1, "bgr"),  # OpenCV's default channel order (image_pipeline treats it as bgr8)
    "rgba8": (4, 1, "rgba"),
    "bgra8": (4, 1, "bgra"),
    "8UC4": (4, 1, "bgra"),
    "mono8": (1, 1, "mono"),
    "8UC1": (1, 1, "mono"),
    "mono16": (1, 2, "mono16"),
    "16UC1": (1, 2, "mono16"),
}
_DEPTH_ENCODINGS = {"16UC1": (2, "u2"), "32FC1": (4, "f4")}
_COMPRESSED_CODECS = ("jpeg", "jpg", "png")


class ImageDecodeError(ValueError):
    """A message that cannot be turned into an image. `reason`: unsupported_encoding | bad_size |
    empty | decode_error (used as the drop counter name)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _buffer(data: Any) -> np.ndarray:
    """uint8[] field (numpy array from rosbags, array.array / bytes from rclpy, or a list) -> flat uint8."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageDecodeError("decode_error", f"data has dtype {data.dtype}, expected uint8")
        return data.reshape(-1)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        pass
    try:
        arr = np.asarray(data)
    except (TypeError, ValueError) as e:
        raise ImageDecodeError("decode_error", f"data is not a byte buffer: {e}") from e
    if arr.ndim != 1 or (arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 255)):
        raise ImageDecodeError("decode_error", "data is not a sequence of bytes")
    return arr.astype(np.uint8)


def _int_field(msg: Any, name: str) -> int:
    try:
        value = getattr(msg, name)
        if isinstance(value, (bool, np.bool_)) or int(value) != value:
            raise TypeError
        return int(value)
    except (AttributeError, TypeError, ValueError, OverflowError) as e:
        raise ImageDecodeError("decode_error", f"field {name!r} missing or not an integer") from e


def _stretch16(v: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by the frame's [min, max] (see module docstring)."""
    lo, hi = int(v.min()), int(v.max())
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    return np.round((v.astype(np.float32) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _raw_pixels(msg: Any, channels: int, nbytes: int, big_endian: bool, copy: bool = True) -> np.ndarray:
    """Rows of `msg.data` with the padding removed -> [H, W, C] array (uint8, or uint16/float32 by nbytes).
    Multi-byte pixels are a copy in native byte order; with copy=False a view of the buffer (possibly read-only
    and unaligned) when the rows are unpadded and in native order."""
    height, width, step = _int_field(msg, "height"), _int_field(msg, "width"), _int_field(msg, "step")
    if height < 0 or width < 0 or step < 0:
        raise ImageDecodeError("bad_size", f"negative size: height={height} width={width} step={step}")
    if height == 0 or width == 0:
        raise ImageDecodeError("empty", f"zero-size image {width}x{height}")
    row = width * channels * nbytes
    if step < row:
        raise ImageDecodeError("bad_size", f"step {step} < width*bytes_per_pixel {row}")
    data = _buffer(getattr(msg, "data", None))
    if data.size != step * height:
        raise ImageDecodeError("bad_size", f"data has {data.size} bytes, expected step*height = {step * height}")
    rows = data.reshape(height, step)[:, :row]
    if nbytes == 1:
        return rows.reshape(height, width, channels)
    kind = "f" if nbytes == 4 else "u"
    dtype = np.dtype(f"{'>' if big_endian else '<'}{kind}{nbytes}")
    out = np.ascontiguousarray(rows).view(dtype).reshape(height, width, channels)
    return out.astype(dtype.newbyteorder("="), copy=copy)


_CV2_TO_RGB = {"bgr": cv2.COLOR_BGR2RGB, "rgba": cv2.COLOR_RGBA2RGB, "bgra": cv2.COLOR_BGRA2RGB}


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    """[H, W, C] in channel `order` -> contiguous uint8 RGB (cv2 conversions: ~20x faster than slicing)."""
    if order == "rgb":  # copy: never hand out a view of the message buffer (may be read-only bytes)
        return np.array(pixels, dtype=np.uint8, order="C", copy=True)
    if order in _CV2_TO_RGB:
        return cv2.cvtColor(np.ascontiguousarray(pixels), _CV2_TO_RGB[order])
    mono = pixels[..., 0]
    if order == "mono16":
        mono = _stretch16(mono)
    return cv2.cvtColor(np.ascontiguousarray(mono), cv2.COLOR_GRAY2RGB)


def _decode_compressed(msg: Any) -> np.ndarray:
    fmt = str(getattr(msg, "format", "") or "").lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError("unsupported_encoding", f"compressedDepth is not an image for the model: {fmt!r}")
    if fmt and not any(c in fmt for c in _COMPRESSED_CODECS):
        raise ImageDecodeError("unsupported_encoding", f"compressed format {fmt!r} (want jpeg or png)")
    data = _buffer(getattr(msg, "data", None))
    if data.size == 0:
        raise ImageDecodeError("empty", "CompressedImage has no data")
    try:
        # UNCHANGED keeps 16-bit mono PNGs and alpha; the colour branches below normalise to RGB.
        img: np.ndarray | None = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageDecodeError("decode_error", f"cv2.imdecode failed: {e}") from e
    if img is None or img.size == 0:
        raise ImageDecodeError("decode_error", f"cv2.imdecode could not decode {data.size} bytes ({fmt!r})")
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype == np.uint16:
        if img.shape[-1] != 1:
            img = (img >> 8).astype(np.uint8)  # 16-bit colour PNG: keep the high byte
        else:
            return _to_rgb(img, "mono16")
    if img.dtype != np.uint8:
        raise ImageDecodeError("unsupported_encoding", f"decoded image has dtype {img.dtype}")
    channels = img.shape[-1]
    order = {1: "mono", 3: "bgr", 4: "bgra"}.get(channels)  # OpenCV decodes to BGR(A)
    if order is None:
        raise ImageDecodeError("unsupported_encoding", f"decoded image has {channels} channels")
    return _to_rgb(img, order)


def image_to_rgb(msg: Any, type_name: str = IMAGE_TYPE) -> np.ndarray:
    """Image or CompressedImage message -> uint8 RGB [H, W, 3]; raises only `ImageDecodeError`.

    Image encodings: rgb8, bgr8, 8UC3 (= bgr8), rgba8, bgra8, 8UC4 (= bgra8), mono8, 8UC1, mono16 and
    16UC1 (stretched to 8 bit, see the module docstring); rows may be padded (step > width*bpp) and
    16-bit data may be big-endian. CompressedImage: jpeg or png, any image_transport format string.
    """
    try:
        name = normalize_type_name(type_name)
    except ValueError as e:
        raise ImageDecodeError("unsupported_encoding", str(e)) from e
    try:
        if name == COMPRESSED_TYPE:
            return _decode_compressed(msg)
        if name != IMAGE_TYPE:
            raise ImageDecodeError("unsupported_encoding", f"message type {name!r} is not an image")
        encoding = getattr(msg, "encoding", None)
        if not isinstance(encoding, str) or encoding.strip() not in _ENCODINGS:
            raise ImageDecodeError("unsupported_encoding", f"encoding {encoding!r}; supported: {sorted(_ENCODINGS)}")
        channels, nbytes, order = _ENCODINGS[encoding.strip()]
        big = bool(_int_field(msg, "is_bigendian")) if nbytes > 1 else False
        return _to_rgb(_raw_pixels(msg, channels, nbytes, big), order)
    except ImageDecodeError:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError, MemoryError, cv2.error) as e:
        raise ImageDecodeError("decode_error", f"{type(e).__name__}: {e}") from e


def depth_to_array(msg: Any) -> np.ndarray:
    """Depth Image -> float32 [H, W] metres: 16UC1 is millimetres (REP 118), 32FC1 metres.

    Invalid depth becomes NaN in both (0 in 16UC1; NaN/inf/<= 0 stay or become NaN in 32FC1).
    """
    depth = depth_pixels(msg)
    return millimetres_to_metres(depth) if depth.dtype == np.uint16 else depth


def depth_pixels(msg: Any) -> np.ndarray:
    """Depth Image -> [H, W] as the 3D stage reads it: 16UC1 as its uint16 millimetres, unconverted (a view of
    the message's buffer when its rows are unpadded, little endian and 2-byte aligned; else an aligned
    copy), 32FC1 as depth_to_array's float32 metres. The 3D stage converts only the pixels under the masks
    (geometry.depth.millimetres_to_metres' values), instead of the whole frame (~0.3 ms at 512x384)."""
    try:
        encoding = getattr(msg, "encoding", None)
        if not isinstance(encoding, str) or encoding.strip() not in _DEPTH_ENCODINGS:
            raise ImageDecodeError("unsupported_encoding", f"depth encoding {encoding!r}; want 16UC1 or 32FC1")
        nbytes, _kind = _DEPTH_ENCODINGS[encoding.strip()]
        big = bool(_int_field(msg, "is_bigendian"))
        if nbytes == 2:
            raw = _raw_pixels(msg, 1, 2, big, copy=False)[..., 0]
            # an unaligned view would be another type for the compiled 3D kernel (and slower to read)
            return raw if raw.flags.aligned else raw.copy()
        depth = _raw_pixels(msg, 1, nbytes, big)[..., 0].astype(np.float32)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
        return depth
    except ImageDecodeError:
        raise
    except (AttributeError, TypeError, ValueError, OverflowError, MemoryError, cv2.error) as e:
        raise ImageDecodeError("decode_error", f"{type(e).__name__}: {e}") from e


def _image_msg(factory: MessageFactory, header: Any, pixels: np.ndarray, encoding: str, step: int) -> Any:
    return factory.make(
        IMAGE_TYPE,
        header=header,
        height=int(pixels.shape[0]),
        width=int(pixels.shape[1]),
        encoding=encoding,
        is_bigendian=0,
        step=int(step),
        data=factory.u8(np.ascontiguousarray(pixels).view(np.uint8).reshape(-1)),
    )


def rgb_to_image_msg(factory: MessageFactory, rgb: np.ndarray, header: Any, encoding: str = "rgb8") -> Any:
    """uint8 RGB [H, W, 3] -> sensor_msgs/Image in `encoding` ('rgb8' or 'bgr8'), unpadded rows."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    if encoding == "bgr8":
        rgb = rgb[..., ::-1]
    elif encoding != "rgb8":
        raise ValueError(f"encoding must be rgb8 or bgr8, got {encoding!r}")
    return _image_msg(factory, header, rgb, encoding, 3 * rgb.shape[1])


def mono8_to_image_msg(factory: MessageFactory, mono: np.ndarray, header: Any) -> Any:
    """uint8 [H, W] -> mono8 sensor_msgs/Image (step = width)."""
    mono = np.asarray(mono)
    if mono.dtype != np.uint8 or mono.ndim != 2:
        raise ValueError(f"expected uint8 [H, W], got {mono.dtype} {mono.shape}")
    return _image_msg(factory, header, mono, "mono8", mono.shape[1])


def depth_to_image_msg(factory: MessageFactory, depth_mm: np.ndarray, header: Any) -> Any:
    """uint16 [H, W] depth in millimetres -> 16UC1 sensor_msgs/Image, little endian, step = 2*width (what
    `depth_to_array` reads back as metres)."""
    depth_mm = np.asarray(depth_mm)
    if depth_mm.dtype != np.uint16 or depth_mm.ndim != 2:
        raise ValueError(f"expected uint16 [H, W], got {depth_mm.dtype} {depth_mm.shape}")
    return _image_msg(factory, header, depth_mm.astype("<u2"), "16UC1", 2 * depth_mm.shape[1])


def labels_to_image_msg(factory: MessageFactory, labels: np.ndarray, header: Any) -> Any:
    """uint16 [H, W] instance labels -> mono16 sensor_msgs/Image, little endian, step = 2*width."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint16 or labels.ndim != 2:
        raise ValueError(f"expected uint16 [H, W], got {labels.dtype} {labels.shape}")
    return _image_msg(factory, header, labels.astype("<u2"), "mono16", 2 * labels.shape[1])
