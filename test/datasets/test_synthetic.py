"""Synthetic shapes: determinism, families, masks vs pixels, occlusion, topology, COCO round trip, depth."""

from __future__ import annotations

import contextlib
import io
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from shapemask_ros.datasets.coco import SkipCounter, iter_coco
from shapemask_ros.datasets.synthetic import (
    SHAPE_FAMILIES,
    ObjectSpec,
    build_scene,
    generate_dataset,
    rasterize,
    render_scene,
    resolve_family,
)


def _hull_fill_ratio(mask: np.ndarray) -> float:
    """Mask pixels / pixels of its rasterised convex hull (1 for convex shapes, less for concave ones)."""
    pts = np.argwhere(mask)[:, ::-1].astype(np.int32)
    hull = cv2.convexHull(pts)
    filled = np.zeros_like(mask)
    cv2.fillPoly(filled, [hull], 1)
    return float(mask.sum()) / float(filled.sum())


def _read_tree(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def test_same_seed_identical_bytes_different_seed_differs(tmp_path):
    a = _read_tree(os.path.dirname(generate_dataset(str(tmp_path / "a"), 4, 72, 96, seed=7, max_instances=4)))
    b = _read_tree(os.path.dirname(generate_dataset(str(tmp_path / "b"), 4, 72, 96, seed=7, max_instances=4)))
    c = _read_tree(os.path.dirname(generate_dataset(str(tmp_path / "c"), 4, 72, 96, seed=8, max_instances=4)))
    assert a == b
    assert a.keys() == c.keys()
    assert a["annotations.json"] != c["annotations.json"]
    assert all(a[k] != c[k] for k in a if k.startswith("images"))


def test_prefix_of_dataset_does_not_depend_on_count(tmp_path):
    short = json.loads(open(generate_dataset(str(tmp_path / "s"), 2, 64, 64, seed=3)).read())
    long = json.loads(open(generate_dataset(str(tmp_path / "l"), 5, 64, 64, seed=3)).read())
    n = len(short["annotations"])
    assert short["annotations"] == long["annotations"][:n]


def test_coco_round_trip_all_families_no_skips(tmp_path):
    path = generate_dataset(str(tmp_path), 30, 64, 80, seed=0, max_instances=5)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(path)
    assert sorted(coco.getCatIds()) == [f.id for f in SHAPE_FAMILIES]
    assert len(SHAPE_FAMILIES) >= 8
    counter = SkipCounter()
    records = list(iter_coco(path, counter))
    assert sum(counter.values()) == 0
    assert len(records) == 30
    insts = [i for r in records for i in r.instances]
    assert len(insts) == len(coco.getAnnIds())
    assert len({i.category_id for i in insts}) >= 8
    for r in records:
        img = cv2.imread(str(tmp_path / "images" / r.file_name))
        assert img.shape == (64, 80, 3)
        for inst in r.instances:
            ys, xs = np.nonzero(inst.mask)
            # iter_coco's box (from the COCO bbox) is the mask's tight box.
            np.testing.assert_allclose(inst.bbox_xyxy, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_masks_are_the_pixels_painted_with_the_object_colour():
    red, blue = (250, 10, 10), (10, 10, 250)
    objs = [ObjectSpec("star", (40, 40), 50, 15, 1.2, red), ObjectSpec("ring", (70, 50), 40, 0, 0.8, blue)]
    image, inst = render_scene(0, 96, 112, objects=objs, clutter=False)
    assert [c for c, _ in inst] == [resolve_family("star").id, resolve_family("ring").id]
    for (_, mask), colour in zip(inst, (red, blue), strict=True):
        painted = np.all(image == np.array(colour, np.uint8), axis=-1)
        np.testing.assert_array_equal(painted, mask.astype(bool))


def test_random_scenes_solid_objects_match_their_colour_and_no_pixel_is_shared():
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(15):
        scene = build_scene(rng, 96, 96, max_instances=6)
        stack = np.stack([i.mask for i in scene.instances]) if scene.instances else np.zeros((0, 96, 96))
        assert stack.sum(axis=0).max(initial=0) <= 1  # occlusion: no pixel in two masks
        assert scene.num_dropped == 0  # random placement never leaves an under-visible painted object
        for inst in scene.instances:
            spec = scene.objects[inst.object_index]
            assert inst.category_id == resolve_family(spec.family).id
            assert inst.visible_fraction >= 0.3
            if spec.texture == "solid":
                assert np.all(scene.image[inst.mask.astype(bool)] == np.array(spec.color, np.uint8))
                checked += 1
    assert checked >= 5


def test_occluded_pixels_leave_the_earlier_mask_and_hidden_objects_are_dropped():
    a = ObjectSpec("ellipse", (40, 40), 40, color=(200, 0, 0))
    b = ObjectSpec("frame", (60, 40), 40, color=(0, 200, 0))
    solo_a, solo_b = rasterize(a, 80, 100), rasterize(b, 80, 100)
    scene = build_scene(1, 80, 100, objects=[a, b], clutter=False)
    ma, mb = (i.mask.astype(bool) for i in scene.instances)
    assert not np.any(ma & mb)
    np.testing.assert_array_equal(ma, solo_a.astype(bool) & ~solo_b.astype(bool))
    np.testing.assert_array_equal(mb, solo_b.astype(bool))
    assert ma.sum() < solo_a.sum()

    small = ObjectSpec("triangle", (50, 40), 10)
    big = ObjectSpec("ellipse", (50, 40), 60)
    scene = build_scene(1, 80, 100, objects=[small, big])
    assert [i.object_index for i in scene.instances] == [1]
    assert scene.num_dropped == 1 and scene.drop_reasons == {"tiny": 1}


@pytest.mark.parametrize("name", ["ring", "frame"])
def test_hole_families_have_a_hole(name):
    for rot in (0.0, 30.0):
        mask = rasterize(ObjectSpec(name, (32, 32), 44, rot, 1.3), 64, 64)
        assert mask[32, 32] == 0 and mask[31, 31] == 0
        contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        assert len(contours) == 2 and (hierarchy[0, :, 3] >= 0).sum() == 1  # one outline, one hole


def test_concave_families_are_not_convex_and_convex_ones_are():
    fams = {f.name: f for f in SHAPE_FAMILIES}
    concave = {n for n, f in fams.items() if f.concave}
    assert concave >= {"star", "crescent", "cross", "l_shape", "heart", "arrow"}
    for f in SHAPE_FAMILIES:
        for rot, aspect in ((0.0, 1.0), (40.0, 1.4), (100.0, 0.7)):
            ratio = _hull_fill_ratio(rasterize(ObjectSpec(f.name, (64, 64), 80, rot, aspect), 128, 128))
            if f.concave or f.has_hole:
                assert ratio < 0.93, (f.name, ratio)
            else:
                assert ratio > 0.95, (f.name, ratio)


def test_families_filter(tmp_path):
    path = generate_dataset(str(tmp_path), 12, 64, 64, seed=1, families=["ring", 5])
    data = json.loads(open(path).read())
    assert {a["category_id"] for a in data["annotations"]} == {3, 5}
    assert len(data["categories"]) == len(SHAPE_FAMILIES)  # ids stay stable across splits
    with pytest.raises(ValueError, match="unknown shape family"):
        generate_dataset(str(tmp_path / "x"), 1, 64, 64, seed=1, families=["hexagon"])


def test_depth_planes_follow_masks_and_drawing_order():
    objs = [
        ObjectSpec("ellipse", (40, 40), 50, depth_m=1.5),
        ObjectSpec("cross", (55, 45), 40, depth_m=0.8),
        ObjectSpec("ring", (20, 60), 30),  # no depth given: placed by drawing order
    ]
    image, inst, depth = render_scene(2, 80, 96, objects=objs, return_depth=True, background_depth_m=4.0)
    assert depth.dtype == np.float32 and depth.shape == (80, 96)
    given = [1.5, 0.8, None]
    union = np.zeros((80, 96), bool)
    for (_, mask), d in zip(inst, given, strict=True):
        vals = depth[mask.astype(bool)]
        assert np.all(vals == vals[0]) and 0 < vals[0] < 4.0
        if d is not None:
            assert vals[0] == pytest.approx(d)
        union |= mask.astype(bool)
    assert np.all(depth[~union] == 4.0)

    scene = build_scene(3, 96, 96, max_instances=6, return_depth=True)
    depths = [o.depth_m for o in scene.objects]
    assert depths == sorted(depths, reverse=True)  # later objects (on top) are nearer


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="size"):
        render_scene(0, 64, 64, objects=[ObjectSpec("star", (10, 10), -3)])
    with pytest.raises(ValueError, match="texture"):
        render_scene(0, 64, 64, objects=[ObjectSpec("star", (10, 10), 5, texture="plaid")])
    with pytest.raises(ValueError, match="depth_m"):
        render_scene(0, 64, 64, objects=[ObjectSpec("star", (10, 10), 5, depth_m=float("nan"))])
    with pytest.raises(ValueError, match="at least 8x8"):
        render_scene(0, 4, 64)
