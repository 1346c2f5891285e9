"""Input validation and letterboxing."""

from __future__ import annotations

import numpy as np
import pytest

from shapemask_ros.runtime.preprocess import letterbox, validate_boxes, validate_image


def test_valid_rgb_image_passes_unchanged():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = validate_image(img)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("shape", [(4, 6), (4, 6, 1)])
def test_grey_is_replicated(shape):
    img = np.arange(24, dtype=np.uint8).reshape(shape)
    out = validate_image(img)
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], img.reshape(4, 6))


def test_rgba_drops_alpha():
    img = np.zeros((3, 3, 4), np.uint8)
    img[..., 0], img[..., 3] = 10, 255
    out = validate_image(img)
    assert out.shape == (3, 3, 3) and out[0, 0].tolist() == [10, 0, 0] and out.flags.c_contiguous


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ([[1, 2], [3, 4]], "numpy array"),
        (np.zeros((2, 2, 3, 1), np.uint8), "dimensions"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((5, 0, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), "1, 3 or 4 channels"),
        (np.full((4, 4, 3), 0.5, np.float32), r"0\.\.1.*\* 255"),
        (np.full((4, 4, 3), 200.0, np.float64), r"np.clip\(image, 0, 255\)"),
        (np.zeros((4, 4), np.uint16), "16-bit"),
        (np.zeros((4, 4, 3), np.int32), "uint8"),
        (np.zeros((4, 4, 3), bool), "uint8"),
    ],
)
def test_bad_images_raise_clear_errors(image, message):
    with pytest.raises(ValueError, match=message):
        validate_image(image)


@pytest.mark.parametrize(("h", "w"), [(30, 50), (50, 30), (64, 64), (10, 100)])
def test_letterbox_keeps_aspect_and_pads_bottom_right(h, w):
    img = np.full((h, w, 3), 100, np.uint8)
    out, scale = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.float32
    assert scale == pytest.approx(64 / max(h, w))
    nh, nw = round(h * scale), round(w * scale)
    assert max(nh, nw) == 64
    np.testing.assert_allclose(out[:nh, :nw], 100.0)  # constant image stays constant (values 0..255)
    assert not out[nh:].any() and not out[:, nw:].any()


def test_letterbox_resamples_with_pixel_centres():
    # a horizontal ramp value = x + 0.5 (pixel centre) is linear, so bilinear resizing by 2 keeps it linear
    # in output pixel centres: out(x') = (x' + 0.5) / scale, away from the clamped border
    w = 32
    ramp = np.tile((np.arange(w) * 8).astype(np.uint8), (16, 1))
    img = np.repeat(ramp[:, :, None], 3, axis=2)
    out, scale = letterbox(img, 64)
    assert scale == 2.0
    xs = np.arange(2, 62)
    expected = ((xs + 0.5) / scale - 0.5) * 8
    np.testing.assert_allclose(out[5, xs, 0], expected, atol=1e-3)


def test_validate_boxes_drops_counts_and_clips():
    boxes = np.array(
        [
            [10, 10, 20, 20],  # 0 ok
            [np.nan, 1, 5, 5],  # 1 non_finite
            [5, 5, 5, 9],  # 2 empty (zero width)
            [9, 9, 3, 12],  # 3 empty (x2 < x1)
            [200, 10, 300, 20],  # 4 outside (right of the image)
            [-50, -50, -1, -1],  # 5 outside (top-left)
            [-5, 30, 15, 60],  # 6 clipped
            [1, 2, 3, np.inf],  # 7 non_finite
            [90, 40, 100, 50],  # 8 ok, touches the border exactly
        ]
    )
    classes = np.arange(9)
    kept, cls, src, dropped = validate_boxes(boxes, classes, (50, 100))
    assert src.tolist() == [0, 6, 8]
    assert cls.tolist() == [0, 6, 8]
    assert dict(dropped) == {"non_finite": 2, "empty_box": 2, "outside_image": 2, "clipped": 1}
    np.testing.assert_allclose(kept, [[10, 10, 20, 20], [0, 30, 15, 50], [90, 40, 100, 50]])
    assert kept.dtype == np.float32 and cls.dtype == np.int32 and src.dtype == np.int32


def test_validate_boxes_defaults_and_empty():
    kept, cls, src, dropped = validate_boxes([[1, 1, 4, 4]], None, (10, 10))
    assert cls.tolist() == [-1] and src.tolist() == [0] and not dropped
    kept, cls, src, dropped = validate_boxes([], None, (10, 10))
    assert kept.shape == (0, 4) and cls.shape == (0,) and src.shape == (0,)
    # integral floats are accepted as class ids
    _, cls, _, _ = validate_boxes([[1, 1, 4, 4]], np.array([3.0]), (10, 10))
    assert cls.tolist() == [3]


@pytest.mark.parametrize(
    ("boxes", "classes", "message"),
    [
        (np.zeros((3, 5)), None, r"\[N, 4\]"),
        (np.zeros(4), None, r"\[N, 4\]"),
        ([["a", "b", "c", "d"]], None, "numeric"),
        (np.zeros((2, 4)), [1], r"shape \[2\]"),
        (np.zeros((1, 4)), [1.5], "integers"),
        (np.zeros((1, 4)), ["person"], "integers"),
    ],
)
def test_validate_boxes_rejects_malformed_input(boxes, classes, message):
    with pytest.raises(ValueError, match=message):
        validate_boxes(boxes, classes, (10, 10))


def test_box_array_is_the_one_shape_check_of_boxes():
    """validate_boxes (the Predictor) and parse_boxes (`shapemask predict --boxes`) share box_array."""
    from shapemask_ros.runtime.commands import parse_boxes
    from shapemask_ros.runtime.preprocess import box_array

    assert box_array([]).shape == (0, 4) and box_array([[1, 2, 3, 4]]).dtype == np.float64
    for bad in ([[1, 2, 3]], [1, 2, 3, 4], [[[1, 2, 3, 4]]]):
        with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
            box_array(bad)
        with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
            parse_boxes(bad)
        with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
            validate_boxes(bad, None, (10, 10))
