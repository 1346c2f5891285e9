"""Copy-paste variety options: off by default (composites as before), each changing what it should, labels
always exactly the visible pixels."""

from __future__ import annotations

import hashlib
import json
import os

import cv2
import numpy as np
import pytest

from shapemask_training.data.copy_paste import CopyPasteConfig, Cutout, _cutout_choice, make_composites, paste

pytestmark = pytest.mark.tf  # imports the training package (see conftest.py)

# sha256 of the composites (annotations.json, then every image file in name order) that the copy-paste of
# commit 048c80f (before the variety options) writes for `_tiny_dataset` with `_TINY_CFG`, OpenCV 5.0.0
# (requirements.txt): the defaults must keep reproducing them. A new OpenCV can change resampling or JPEG
# bytes; then regenerate with that commit's training/data/copy_paste.py.
BEFORE_OPTIONS_SHA256 = "e482cf28d70a074c952c8884ea965d4f3ef9cb1f830eb817fe2deae458eb9d04"
_TINY_CFG = dict(images=8, min_pastes=1, max_pastes=4, min_source_area=60, min_area=16, seed=3)

# pure colours of the cut-outs that the visibility tests tell apart
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def _tiny_dataset(root) -> str:
    """Four noise images with filled polygons of two named categories (COCO JSON with polygon labels)."""
    rng = np.random.default_rng(11)
    os.makedirs(root, exist_ok=True)
    images, anns = [], []
    for i, (h, w) in enumerate([(72, 96), (96, 64), (80, 80), (60, 120)]):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": h, "width": w})
        for k in range(2):
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
            angles = np.sort(rng.uniform(0, 2 * np.pi, 5 + k))
            radii = rng.uniform(0.15, 0.3, angles.size) * min(h, w)
            pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).round()
            cv2.fillPoly(img, [pts.astype(np.int32)], tuple(int(v) for v in rng.integers(0, 256, 3)))
            x1, y1 = pts.min(0)
            x2, y2 = pts.max(0)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1 + (i + k) % 2,
                    "segmentation": [pts.reshape(-1).tolist()],
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "area": 0.0,
                    "iscrowd": 0,
                }
            )
        cv2.imwrite(str(root / f"{i}.png"), img)
    cats = [{"id": 1, "name": "mug"}, {"id": 2, "name": "shoe"}]
    path = root / "tiny.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path)


def _digest(out_dir) -> str:
    h = hashlib.sha256((out_dir / "annotations.json").read_bytes())
    for name in sorted(os.listdir(out_dir / "images")):
        h.update((out_dir / "images" / name).read_bytes())
    return h.hexdigest()


def _composites(tmp_path, name: str, **options) -> tuple[dict, str]:
    ann = _tiny_dataset(tmp_path / "src")
    src = str(tmp_path / "src")
    out = tmp_path / name
    coco = make_composites([(ann, src, 1.0)], [(ann, src)], str(out), CopyPasteConfig(**_TINY_CFG, **options), False)
    return coco, _digest(out)


def test_defaults_write_the_composites_made_before_the_options(tmp_path):
    assert _composites(tmp_path, "now")[1] == BEFORE_OPTIONS_SHA256


def test_class_balanced_choice_weights_cutouts_by_their_category_repeat_factor(tmp_path):
    pool = [Cutout(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.uint8), 1) for _ in range(9)]
    pool.append(Cutout(np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.uint8), 2))
    # f(1) = 0.9 -> r = 1, f(2) = 0.1 -> r = sqrt(0.4 / 0.1) = 2: the rare cut-out is twice as likely as each other
    p = _cutout_choice(pool, 0.4, "pool")
    assert p is not None and p == pytest.approx([1 / 11] * 9 + [2 / 11])
    assert _cutout_choice(pool, 0.0, "pool") is None  # off: uniform, drawn as before
    assert _cutout_choice(pool[:9], 0.4, "one category") is None  # nothing to balance: drawn as before
    # on a named source it changes which cut-outs are pasted; on a class-agnostic one it changes nothing
    named = _composites(tmp_path, "named", cutout_repeat_threshold=0.9)
    assert named[1] != _composites(tmp_path, "plain")[1]


def test_class_balanced_choice_leaves_a_class_agnostic_source_unchanged(tmp_path):
    ann = _tiny_dataset(tmp_path / "src")
    data = json.loads(open(ann).read())
    data["categories"] = [{"id": 1, "name": "object"}]
    for a in data["annotations"]:
        a["category_id"] = 1
    agn = tmp_path / "src" / "agnostic.json"
    agn.write_text(json.dumps(data))
    src = str(tmp_path / "src")
    digests = []
    for name, t in (("a", 0.0), ("b", 0.9)):
        cfg = CopyPasteConfig(**_TINY_CFG, cutout_repeat_threshold=t)
        make_composites([(str(agn), src, 1.0)], [(str(agn), src)], str(tmp_path / name), cfg, False)
        digests.append(_digest(tmp_path / name))
    assert digests[0] == digests[1]


def _shape(kind: str, size: int) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    if kind == "square":
        m[:] = 1
    elif kind == "L":  # asymmetric, so a wrong flip or rotation of the mask shows
        m[:, : size // 3] = 1
        m[-size // 3 :, :] = 1
    return m


def _visible(img: np.ndarray, colour) -> np.ndarray:
    """Pixels closer to `colour` than to black and every other test colour (what the eye calls that object)."""
    palette = np.asarray([(0, 0, 0), *COLOURS], np.float32)
    d = ((img[..., None, :].astype(np.float32) - palette) ** 2).sum(-1)
    return d.argmin(-1) == 1 + COLOURS.index(colour)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_rotated_pastes_keep_the_mask_on_the_pasted_pixels():
    bg = np.zeros((300, 300, 3), np.uint8)
    k = np.ones((3, 3), np.uint8)
    fill_ratios = []
    for seed in range(6):
        cfg = CopyPasteConfig(scale_min=0.8, scale_max=0.8, rotate_max=40, min_area=1)
        cut = Cutout(np.full((60, 60, 3), COLOURS[0], np.uint8), _shape("L", 60))
        img, (m,), _ = paste(bg, [], [cut], np.random.default_rng(seed), cfg)
        vis = _visible(img, COLOURS[0])
        assert _iou(m, vis) >= 0.99
        # off the one-pixel feather along the outline, label and pasted pixels agree exactly
        edge = cv2.dilate(m.astype(np.uint8), k) != cv2.erode(m.astype(np.uint8), k)
        assert not ((m != vis) & ~edge).any()
        square = Cutout(np.full((60, 60, 3), COLOURS[0], np.uint8), _shape("square", 60))
        _, (sq,), _ = paste(bg, [], [square], np.random.default_rng(seed), cfg)
        ys, xs = np.nonzero(sq)
        fill_ratios.append(sq.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    assert min(fill_ratios) < 0.8  # the squares were turned (an upright one fills its box)


def test_blurred_edges_soften_the_image_but_keep_the_label_hard():
    bg = np.zeros((200, 200, 3), np.uint8)
    cut = Cutout(np.full((50, 50, 3), 255, np.uint8), _shape("square", 50))
    widths = {}
    for blur in (0.0, 5.0):
        cfg = CopyPasteConfig(scale_min=0.4, scale_max=0.4, edge_blur_max=blur, min_area=1)
        w = []
        for seed in range(5):
            img, (m,), (area,) = paste(bg, [], [cut], np.random.default_rng(seed), cfg)
            grey = img[..., 0].astype(int)
            assert m.dtype == bool and area == m.sum() == 80 * 80  # the hard 80 x 80 square, blur or not
            # the label sits on the blend's half-way contour, the soft edge spreads around it
            assert _iou(m, grey >= 128) >= 0.98
            w.append(int(((grey > 12) & (grey < 243)).sum()))  # pixels in the transition
        widths[blur] = np.mean(w)
    assert widths[5.0] > 3 * widths[0.0]
    # a red object cut from a green photo: the blurred rim fades red into the new background, no green shows
    rgb = np.zeros((50, 50, 3), np.uint8)
    rgb[...] = (0, 255, 0)
    rgb[5:45, 5:45] = (255, 0, 0)
    alpha = np.zeros((50, 50), np.uint8)
    alpha[5:45, 5:45] = 1
    cfg = CopyPasteConfig(scale_min=0.4, scale_max=0.4, edge_blur_max=5.0, min_area=1)
    for seed in (1, 2, 3):  # sigma 1.3 to 3.6
        img, (m,), _ = paste(bg, [], [Cutout(rgb, alpha)], np.random.default_rng(seed), cfg)
        rim = img[~m].astype(int).sum(0)  # outside the label: the blurred rim only
        assert rim[0] > 5000 and rim[1] < 0.2 * rim[0]  # mostly the object's red (without: more green than red)


def test_photometric_jitter_changes_only_the_pasted_pixels_not_the_labels():
    bg = np.full((64, 64, 3), 30, np.uint8)
    cut = Cutout(np.full((64, 64, 3), (200, 60, 60), np.uint8), _shape("square", 64))
    # the cut-out fills the image exactly: its geometry does not depend on the draws, only its colour
    base = CopyPasteConfig(scale_min=1.0, scale_max=1.0, min_area=1)
    img0, masks0, _ = paste(bg, [], [cut], np.random.default_rng(0), base)
    colours = set()
    for seed in range(6):
        cfg = CopyPasteConfig(scale_min=1.0, scale_max=1.0, min_area=1, brightness=0.4, saturation=0.4, hue=0.2)
        img, masks, _ = paste(bg, [], [cut], np.random.default_rng(seed), cfg)
        assert (masks[0] == masks0[0]).all()
        colours.add(tuple(int(v) for v in img[32, 32]))
    assert tuple(int(v) for v in img0[32, 32]) == (200, 60, 60)
    assert len(colours) == 6 and (200, 60, 60) not in colours
    # a smaller cut-out: the background around it keeps its pixels exactly
    small = Cutout(np.full((20, 20, 3), (200, 60, 60), np.uint8), _shape("square", 20))
    cfg = CopyPasteConfig(scale_min=0.3, scale_max=0.3, min_area=1, brightness=0.4, contrast=0.4, hue=0.2)
    img, (m,), _ = paste(bg, [], [small], np.random.default_rng(1), cfg)
    ring = cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # the 1-px feather
    assert (img[~ring] == 30).all()


def test_scale_log_draws_log_uniformly_and_max_outside_crops_instead_of_squashing():
    bg = np.zeros((200, 200, 3), np.uint8)
    cut = Cutout(np.full((40, 40, 3), 255, np.uint8), _shape("square", 40))
    sides = []
    rng = np.random.default_rng(0)
    for _ in range(400):
        cfg = CopyPasteConfig(scale_min=0.1, scale_max=0.9, scale_log=True, min_area=1)
        _, (m,), _ = paste(bg, [], [cut], rng, cfg)
        sides.append(np.sqrt(m.sum()) / 200)
    assert np.median(sides) == pytest.approx(0.3, abs=0.04)  # geometric mean of 0.1 and 0.9 (uniform: 0.5)
    # a 3:1 bar one and a half times the image's width, its colour a ramp along its length
    ramp = np.repeat(np.linspace(0, 255, 90)[None, :, None], 30, 0).repeat(3, 2).astype(np.uint8)
    bar = Cutout(ramp, np.ones((30, 90), np.uint8))
    bg = np.zeros((100, 100, 3), np.uint8)
    for outside, squashed in ((0.0, True), (0.3, False)):
        cfg = CopyPasteConfig(scale_min=1.5, scale_max=1.5, max_outside=outside, min_area=1)
        for seed in range(4):
            img, (m,), _ = paste(bg, [], [bar], np.random.default_rng(seed), cfg)
            ys, xs = np.nonzero(m)
            assert np.ptp(ys) + 1 <= 50 and np.ptp(xs) + 1 <= 100  # 150 x 50: never taller than 50
            if squashed:
                assert np.ptp(xs) + 1 == 100  # the whole 150 squeezed into the image's 100
            span = np.ptp(img[m][:, 0].astype(int))
            # squashed to the image: the whole ramp shows; cropped by the border: at most 2/3 of it
            assert (span > 240) if squashed else (span < 0.7 * 255)
            rows = (m.sum(1) > 0).sum()
            assert rows >= 0.7 * 50 - 1  # at most 30 % of its height past the border


@pytest.mark.parametrize(
    "options",
    [{}, {"rotate_max": 25.0, "max_outside": 0.3, "scale_min": 0.2, "scale_max": 1.2, "scale_log": True}],
    ids=["defaults", "varied"],
)
def test_occlusion_labels_are_what_stays_visible(options):
    """Objects below lose what is pasted over them: every label (background and pasted) is exactly the
    pixels that still show its colour, up to the one-pixel feather."""
    h, w = 160, 200
    bg = np.zeros((h, w, 3), np.uint8)
    below = np.zeros((h, w), np.uint8)
    below[40:120, 50:150] = 1
    bg[below.astype(bool)] = COLOURS[0]
    cuts = [
        Cutout(np.full((40, 40, 3), c, np.uint8), _shape(k, 40), 1)
        for c, k in zip(COLOURS[1:], ["L", "square"] * 2, strict=True)
    ]
    checked = 0
    for seed in range(6):
        cfg = CopyPasteConfig(min_area=1, **{"scale_min": 0.3, "scale_max": 0.5, **options})
        img, masks, areas = paste(bg, [below], cuts, np.random.default_rng(seed), cfg)
        assert len(masks) == 5 and areas[0] == below.sum()
        assert np.max(np.sum(masks, axis=0)) == 1  # no pixel labelled twice
        # the one-pixel feathers of every label boundary blend two colours: left out of the comparison
        k = np.ones((3, 3), np.uint8)
        edges = np.any([cv2.dilate(m.astype(np.uint8), k) != cv2.erode(m.astype(np.uint8), k) for m in masks], 0)
        for m, colour, area in zip(masks, COLOURS, areas, strict=True):
            assert m.sum() <= area
            if m.sum() >= 100:
                vis = _visible(img, colour)
                assert not (m & ~vis & ~edges).any()  # labelled but covered
                assert not (vis & ~m & ~edges).any()  # visible but unlabelled
                checked += 1
    assert checked >= 15


def test_variety_options_are_off_by_default_and_validated():
    d = CopyPasteConfig()
    assert (d.scale_min, d.scale_max, d.scale_log, d.max_outside, d.rotate_max, d.edge_blur_max) == (
        0.15,
        0.6,
        False,
        0.0,
        0.0,
        0.0,
    )
    assert not d.photometric and d.cutout_repeat_threshold == 0.0
    for bad in ({"max_outside": 1.0}, {"hue": 0.7}, {"scale_min": 0.5, "scale_max": 0.4}, {"brightness": -0.1}):
        with pytest.raises(ValueError):
            CopyPasteConfig(**bad)
