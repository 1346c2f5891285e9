"""sensor_msgs/Image and CompressedImage decoding/encoding (shapemask_ros.ros_bridge.image_codec)."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shapemask_ros.geometry.depth import millimetres_to_metres
from shapemask_ros.ros_bridge.image_codec import (
    ImageDecodeError,
    depth_pixels,
    depth_to_array,
    depth_to_image_msg,
    image_to_rgb,
    labels_to_image_msg,
    mono8_to_image_msg,
    rgb_to_image_msg,
)
from support.ros import FACTORY, compressed_msg, header, image_msg, jpeg_bytes, random_rgb

H, W = 5, 7


def _pad(rows: np.ndarray, pad: int) -> tuple[np.ndarray, int]:
    """[H, row_bytes] uint8 -> flat data with `pad` junk bytes after each row, and the step."""
    h, row = rows.shape
    out = np.full((h, row + pad), 0xAB, np.uint8)
    out[:, :row] = rows
    return out.reshape(-1), row + pad


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize(
    "encoding,channel_order",
    [
        ("rgb8", [0, 1, 2]),
        ("bgr8", [2, 1, 0]),
        ("8UC3", [2, 1, 0]),
        ("rgba8", [0, 1, 2, 3]),
        ("bgra8", [2, 1, 0, 3]),
    ],
)
def test_colour_encodings_round_trip(encoding, channel_order, pad):
    rgb = random_rgb(H, W)
    rgba = np.concatenate([rgb, np.full((H, W, 1), 77, np.uint8)], axis=-1)
    raw = rgba[..., channel_order]
    data, step = _pad(raw.reshape(H, -1), pad)
    out = image_to_rgb(image_msg(data, H, W, encoding, step), "sensor_msgs/msg/Image")
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3"])
def test_pure_red_stays_red(encoding):
    red = {"rgb8": [255, 0, 0], "bgr8": [0, 0, 255], "8UC3": [0, 0, 255], "rgba8": [255, 0, 0, 255]}
    px = red.get(encoding, [0, 0, 255, 255])
    raw = np.tile(np.asarray(px, np.uint8), (H, W, 1))
    out = image_to_rgb(image_msg(raw.reshape(-1), H, W, encoding, W * len(px)))
    assert (out[..., 0] == 255).all() and (out[..., 1:] == 0).all()


@pytest.mark.parametrize("pad", [0, 2])
def test_mono8_replicated(pad):
    mono = random_rgb(H, W)[..., 0]
    data, step = _pad(mono, pad)
    out = image_to_rgb(image_msg(data, H, W, "mono8", step))
    np.testing.assert_array_equal(out, np.repeat(mono[..., None], 3, -1))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("big", [0, 1])
@pytest.mark.parametrize("pad", [0, 1])
def test_mono16_endianness_padding_and_stretch(encoding, big, pad):
    values = np.linspace(1000, 5000, H * W).round().astype(np.uint16).reshape(H, W)
    raw = values.astype(">u2" if big else "<u2").view(np.uint8).reshape(H, 2 * W)
    data, step = _pad(raw, pad)
    out = image_to_rgb(image_msg(data, H, W, encoding, step, big=big))
    expect = np.round((values.astype(np.float32) - 1000) * 255.0 / 4000).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expect)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_constant_mono16_is_black():
    raw = np.full((H, W), 4242, "<u2").view(np.uint8)
    assert image_to_rgb(image_msg(raw.reshape(-1), H, W, "mono16", 2 * W)).max() == 0


def test_rclpy_style_buffers_accepted():
    """rclpy gives uint8[] as array.array('B') (or bytes); both decode like the numpy field."""
    rgb = random_rgb(H, W)
    for data in (array.array("B", rgb.tobytes()), rgb.tobytes(), list(rgb.reshape(-1))):
        msg = image_msg(np.zeros(1, np.uint8), H, W, "rgb8", 3 * W)
        msg.data = data
        out = image_to_rgb(msg)
        np.testing.assert_array_equal(out, rgb)
        assert out.flags.writeable  # a copy, even from read-only bytes
    numpy_msg = image_msg(rgb.reshape(-1).copy(), H, W, "rgb8", 3 * W)
    assert not np.shares_memory(image_to_rgb(numpy_msg), numpy_msg.data)


@pytest.mark.parametrize(
    "ext,fmt",
    [
        (".png", "png"),
        (".png", "bgr8; png compressed bgr8"),
        (".jpg", "jpeg"),
        (".jpg", "rgb8; jpeg compressed bgr8"),
    ],
)
def test_compressed_round_trip(ext, fmt):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :8] = (255, 0, 0)
    rgb[:, 8:16] = (0, 255, 0)
    rgb[:, 16:] = (0, 0, 255)
    out = image_to_rgb(compressed_msg(jpeg_bytes(rgb, ext), fmt), "sensor_msgs/CompressedImage")
    assert out.shape == (16, 24, 3)
    if ext == ".png":
        np.testing.assert_array_equal(out, rgb)
    else:  # lossy, but the channel order must survive: each stripe stays its colour
        assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 12
        assert out[8, 3].argmax() == 0 and out[8, 11].argmax() == 1 and out[8, 20].argmax() == 2


def test_compressed_mono16_png_stretched():
    depth = np.array([[100, 200], [300, 500]], np.uint16)
    ok, buf = cv2.imencode(".png", depth)
    assert ok
    out = image_to_rgb(compressed_msg(buf, "16UC1; png compressed"), "sensor_msgs/msg/CompressedImage")
    np.testing.assert_array_equal(out[..., 1], [[0, 64], [128, 255]])


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        (dict(encoding="yuv422"), "unsupported_encoding"),
        (dict(encoding="32FC1", step=4 * W, n=4 * W * H), "unsupported_encoding"),
        (dict(step=3 * W - 1, n=(3 * W - 1) * H), "bad_size"),
        (dict(n=3 * W * H - 1), "bad_size"),
        (dict(n=3 * W * H + 5), "bad_size"),
        (dict(height=0, n=0), "empty"),
        (dict(width=0, step=0, n=0), "empty"),
        (dict(height=-1), "bad_size"),
    ],
)
def test_bad_images_raise_reason(kwargs, reason):
    n = kwargs.pop("n", 3 * W * H)
    args = dict(height=H, width=W, encoding="rgb8", step=3 * W) | kwargs
    msg = image_msg(np.zeros(n, np.uint8), args["height"], args["width"], args["encoding"], args["step"])
    with pytest.raises(ImageDecodeError) as e:
        image_to_rgb(msg)
    assert e.value.reason == reason


@pytest.mark.parametrize(
    "data,fmt,reason",
    [
        (np.zeros(0, np.uint8), "jpeg", "empty"),
        (np.arange(64, dtype=np.uint8), "jpeg", "decode_error"),
        (np.arange(64, dtype=np.uint8), "16UC1; compressedDepth png", "unsupported_encoding"),
        (np.arange(64, dtype=np.uint8), "h264", "unsupported_encoding"),
    ],
)
def test_bad_compressed_raise_reason(data, fmt, reason):
    with pytest.raises(ImageDecodeError) as e:
        image_to_rgb(compressed_msg(data, fmt), "sensor_msgs/msg/CompressedImage")
    assert e.value.reason == reason


def test_wrong_message_type_is_unsupported():
    with pytest.raises(ImageDecodeError) as e:
        image_to_rgb(header(), "std_msgs/msg/Header")
    assert e.value.reason == "unsupported_encoding"


_ENCODINGS = [
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "16UC1",
    "8UC3",
    "32FC1",
    "",
    "RGB8",
    "jpeg",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=st.one_of(st.sampled_from(_ENCODINGS), st.text(max_size=8)),
    height=st.integers(-3, 9),
    width=st.integers(-3, 9),
    step=st.integers(-5, 40),
    n=st.integers(0, 300),
    big=st.integers(0, 3),
)
def test_fuzz_image_only_raises_decode_error(encoding, height, width, step, n, big):
    msg = image_msg(np.arange(n, dtype=np.uint8), height, width, encoding, step, big=big)
    try:
        out = image_to_rgb(msg)
    except ImageDecodeError as e:
        assert e.reason in {"unsupported_encoding", "bad_size", "empty", "decode_error"}
        return
    assert out.shape == (height, width, 3) and out.dtype == np.uint8


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=200),
    fmt=st.sampled_from(["jpeg", "png", "", "rgb8; jpeg compressed bgr8", "x"]),
    keep_png_header=st.booleans(),
)
def test_fuzz_compressed_only_raises_decode_error(data, fmt, keep_png_header):
    if keep_png_header:  # a truncated/corrupt PNG exercises the decoder itself
        data = bytes(jpeg_bytes(random_rgb(4, 4), ".png")[:24]) + data
    try:
        out = image_to_rgb(compressed_msg(np.frombuffer(data, np.uint8), fmt), "sensor_msgs/msg/CompressedImage")
    except ImageDecodeError:
        return
    assert out.ndim == 3 and out.shape[2] == 3


def test_depth_to_array_units_and_invalid():
    mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    raw = mm.astype(">u2").view(np.uint8).reshape(-1)
    d = depth_to_array(image_msg(raw, 2, 2, "16UC1", 4, big=1))
    assert np.isnan(d[0, 0]) and d[0, 1] == pytest.approx(1.0) and d[1, 0] == pytest.approx(1.5)
    m = np.array([[0.5, np.nan], [np.inf, 2.25]], np.float32)
    data, step = _pad(m.astype("<f4").view(np.uint8).reshape(2, 8), 4)
    d2 = depth_to_array(image_msg(data, 2, 2, "32FC1", step))
    assert d2.dtype == np.float32 and d2[0, 0] == 0.5 and d2[1, 1] == 2.25
    assert np.isnan(d2[0, 1]) and np.isnan(d2[1, 0])
    with pytest.raises(ImageDecodeError):
        depth_to_array(image_msg(np.zeros(12, np.uint8), 2, 2, "rgb8", 6))


@pytest.mark.parametrize("big", [0, 1])
def test_depth_16uc1_is_float32_millimetres_divided_by_1000(big):
    # the one-pass conversion gives the bits of raw.astype(float32) / 1000.0 (what the node published before)
    mm = np.random.default_rng(1).integers(0, 65536, (48, 64), dtype=np.uint16)
    mm[::5, ::3] = 0
    raw, step = _pad(mm.astype(">u2" if big else "<u2").view(np.uint8).reshape(48, 128), 6)
    d = depth_to_array(image_msg(raw, 48, 64, "16UC1", step, big=big))
    want = mm.astype(np.float32) / 1000.0
    want[mm == 0] = np.nan
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d.view(np.uint32), want.view(np.uint32))  # NaN payloads included


def test_depth_pixels_keep_16uc1_millimetres_without_a_copy():
    """depth_pixels: an unpadded little-endian 16UC1 buffer is read in place (the 3D stage converts only the
    pixels under masks); padded, big-endian or odd-aligned buffers become an aligned native copy; 32FC1 is
    depth_to_array's metres; and depth_to_array is millimetres_to_metres of the millimetres, bit for bit."""
    mm = np.random.default_rng(2).integers(0, 65536, (48, 64), dtype=np.uint16)
    mm[::5, ::3] = 0
    flat = mm.astype("<u2").view(np.uint8).reshape(-1)
    msg = image_msg(flat, 48, 64, "16UC1", 128)
    px = depth_pixels(msg)
    assert px.dtype == np.uint16 and np.shares_memory(px, msg.data)
    np.testing.assert_array_equal(px, mm, strict=True)
    odd = np.empty(flat.size + 1, np.uint8)[1:]  # the data starts at an odd address
    odd[:] = flat
    padded, step = _pad(mm.astype(">u2").view(np.uint8).reshape(48, 128), 6)
    for m in (image_msg(odd, 48, 64, "16UC1", 128), image_msg(padded, 48, 64, "16UC1", step, big=1)):
        px = depth_pixels(m)
        assert px.flags.aligned and px.dtype == np.uint16 and not np.shares_memory(px, m.data)
        np.testing.assert_array_equal(px, mm, strict=True)
        want = millimetres_to_metres(mm)
        np.testing.assert_array_equal(depth_to_array(m).view(np.uint32), want.view(np.uint32))
    f = np.array([[0.5, np.nan], [-1.0, 2.25]], np.float32)
    m32 = image_msg(f.astype("<f4").view(np.uint8).reshape(-1), 2, 2, "32FC1", 8)
    np.testing.assert_array_equal(depth_pixels(m32), depth_to_array(m32), strict=True)


def test_encoders_round_trip_through_decoder():
    rgb = random_rgb(H, W, seed=3)
    hdr = header(7, 9, "cam")
    for enc in ("rgb8", "bgr8"):
        msg = rgb_to_image_msg(FACTORY, rgb, hdr, encoding=enc)
        assert msg.encoding == enc and msg.step == 3 * W and msg.header is hdr
        np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    labels = np.arange(H * W, dtype=np.uint16).reshape(H, W) * 1000
    lm = labels_to_image_msg(FACTORY, labels, hdr)
    assert (lm.encoding, lm.step, lm.is_bigendian) == ("mono16", 2 * W, 0)
    np.testing.assert_array_equal(np.frombuffer(lm.data.tobytes(), "<u2").reshape(H, W), labels)
    m8 = mono8_to_image_msg(FACTORY, labels.astype(np.uint8), hdr)
    assert (m8.encoding, m8.step) == ("mono8", W)
    np.testing.assert_array_equal(image_to_rgb(m8)[..., 0], labels.astype(np.uint8))
    with pytest.raises(ValueError):
        labels_to_image_msg(FACTORY, labels.astype(np.int32), hdr)
    dm = depth_to_image_msg(FACTORY, labels, hdr)  # millimetres; 0 = no reading
    assert (dm.encoding, dm.step, dm.is_bigendian, dm.height, dm.width) == ("16UC1", 2 * W, 0, H, W)
    depth = depth_to_array(dm)
    np.testing.assert_allclose(depth[labels > 0], labels[labels > 0] / 1000.0, rtol=1e-6)
    assert np.isnan(depth[labels == 0]).all()
    with pytest.raises(ValueError):
        depth_to_image_msg(FACTORY, labels.astype(np.float32), hdr)
