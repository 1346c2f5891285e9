"""COCO evaluation: results conversion, COCOeval metrics, split AP, box sources and the predictor driver."""

from __future__ import annotations

import json
import math
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from shapemask_ros.evaluation.coco_metrics import (
    evaluate,
    load_results_json,
    named_splits,
    results_from_instances,
    write_results_json,
)
from shapemask_ros.runtime.instances import Instances
from shapemask_training.evaluation import (
    BoxSource,
    evaluate_predictor,
    format_metrics_table,
    gt_boxes_for_image,
    noisy_boxes,
    shrink_boxes,
)

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)

H = W = 64
CATS = (3, 7)  # non-contiguous COCO ids: contiguous class 0 -> 3, 1 -> 7


def rect(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def disk(cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, thickness=-1)
    return m


# image id -> [(category id, full mask)]
OBJECTS = {
    1: [(3, rect(4, 6, 30, 34)), (7, disk(45, 40, 12))],
    2: [(3, disk(20, 22, 14)), (3, rect(36, 30, 60, 60))],
    5: [(7, rect(10, 10, 50, 40))],
}


def make_gt(objects=OBJECTS, crowd: dict[int, np.ndarray] | None = None) -> dict:
    """Small COCO dict: 64x64 images, RLE ground-truth masks, optional crowd regions."""
    images, anns = [], []
    for image_id, objs in objects.items():
        images.append({"id": image_id, "file_name": f"im{image_id}.png", "height": H, "width": W})
        entries = [(c, m, 0) for c, m in objs] + [(CATS[0], m, 1) for i, m in (crowd or {}).items() if i == image_id]
        for cat, m, iscrowd in entries:
            rle = mask_utils.encode(np.asfortranarray(m))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": iscrowd,
                    "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")},
                }
            )
    cats = [{"id": c, "name": f"cat{c}"} for c in CATS]
    return {"images": images, "annotations": anns, "categories": cats}


def instances_from_masks(masks: list[np.ndarray], classes: list[int], scores: list[float] | None = None) -> Instances:
    """Instances whose regions are the masks' tight boxes (the crops carry the mask)."""
    boxes, crops, regions = [], [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        boxes.append([x1, y1, x2, y2])
        crops.append(m[y1:y2, x1:x2].copy())
        regions.append([x1, y1, x2 - x1, y2 - y1])
    n = len(masks)
    return Instances(
        boxes=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        class_ids=np.asarray(classes, np.int32),
        masks=crops,
        regions=np.asarray(regions, np.int32).reshape(n, 4),
        mask_scores=np.ones(n, np.float32),
        source_index=np.arange(n, dtype=np.int32),
        image_size=(H, W),
    )


def perfect_results(transform=lambda m: m, objects=OBJECTS) -> list[dict]:
    results = []
    for image_id, objs in objects.items():
        masks = [transform(m) for _, m in objs]
        classes = [CATS.index(c) for c, _ in objs]
        results += results_from_instances(image_id, instances_from_masks(masks, classes), CATS)
    return results


def test_results_format_and_non_contiguous_category_mapping():
    inst = instances_from_masks([rect(4, 6, 30, 34), disk(45, 40, 12)], [0, 1], [0.8, 0.6])
    res = results_from_instances(1, inst, CATS)
    assert [r["category_id"] for r in res] == [3, 7]
    assert res[0]["bbox"] == [4.0, 6.0, 26.0, 28.0]  # xywh of the xyxy box (4, 6, 30, 34)
    assert res[1]["score"] == pytest.approx(0.6)
    for r, full in zip(res, inst.full_masks(), strict=True):
        assert isinstance(r["segmentation"]["counts"], str)
        assert np.array_equal(mask_utils.decode(r["segmentation"]), full)
    json.dumps(res)  # plain Python types only


def test_unknown_and_out_of_range_classes_are_dropped_and_counted():
    from shapemask_ros.datasets.coco import SkipCounter

    inst = instances_from_masks([rect(0, 0, 8, 8), rect(10, 10, 20, 20), rect(30, 30, 40, 40)], [-1, 1, 2])
    counter = SkipCounter()
    res = results_from_instances(1, inst, CATS, counter=counter)
    assert [r["category_id"] for r in res] == [7]
    assert counter["unknown_class"] == 2


def test_mask_region_mismatch_is_a_clear_error():
    inst = instances_from_masks([rect(0, 0, 8, 8)], [0])
    inst.masks[0] = np.ones((3, 3), np.uint8)
    with pytest.raises(ValueError, match="region"):
        results_from_instances(1, inst, CATS)


def test_perfect_predictions_score_100_and_agree_between_dict_and_file(tmp_path):
    gt = make_gt()
    results = perfect_results()
    metrics = evaluate(gt, results, splits={"a": (3,), "b": (7,)})
    for t in ("bbox", "segm"):
        assert metrics[t]["AP"] == pytest.approx(100.0)
        assert metrics[t]["AP50"] == pytest.approx(100.0)
        assert metrics[t]["AP75"] == pytest.approx(100.0)
        assert metrics[t]["per_category"] == {3: pytest.approx(100.0), 7: pytest.approx(100.0)}
    assert math.isnan(metrics["segm"]["APl"])  # no large (> 96^2 px) objects in 64x64 images: undefined
    path = str(tmp_path / "gt.json")
    with open(path, "w") as f:
        json.dump(gt, f)
    res_path = str(tmp_path / "sub" / "results.json")
    write_results_json(res_path, results)
    assert load_results_json(res_path) == results
    from_file = evaluate(path, load_results_json(res_path))
    assert from_file["segm"]["AP"] == pytest.approx(metrics["segm"]["AP"])
    assert gt == make_gt()  # the caller's dict is not modified by COCOeval


def test_segm_ap_decreases_monotonically_with_erosion():
    kernel = np.ones((3, 3), np.uint8)
    aps = []
    for k in range(4):
        erode = (lambda m, k=k: cv2.erode(m, kernel, iterations=k)) if k else (lambda m: m)
        aps.append(evaluate(make_gt(), perfect_results(erode), iou_types=("segm",))["segm"]["AP"])
    assert aps[0] == pytest.approx(100.0)
    assert all(a > b for a, b in zip(aps, aps[1:], strict=False)), aps


def shift_right(m: np.ndarray, s: int) -> np.ndarray:
    out = np.zeros_like(m)
    out[:, s:] = m[:, : m.shape[1] - s]
    return out


def test_bbox_and_segm_ap_decrease_monotonically_with_shift():
    aps = {"bbox": [], "segm": []}
    for s in (0, 2, 4, 7):
        m = evaluate(make_gt(), perfect_results(lambda m, s=s: shift_right(m, s)))
        for t in aps:
            aps[t].append(m[t]["AP"])
    for t, seq in aps.items():
        assert seq[0] == pytest.approx(100.0)
        assert all(a > b for a, b in zip(seq, seq[1:], strict=False)), (t, seq)


def test_empty_results_give_zero_without_crashing():
    metrics = evaluate(make_gt(), [], splits={"a": (3,)})
    for t in ("bbox", "segm"):
        assert metrics[t]["AP"] == 0.0
        assert metrics[t]["AP50"] == 0.0
        assert metrics[t]["splits"]["a"] == 0.0
    assert metrics["num_results"] == 0


def test_image_without_predictions_halves_recall():
    # one category, one object per image, only image 1 predicted: precision 1 up to recall 0.5, then 0,
    # so AP = 51 of the 101 recall thresholds (0.00 .. 0.50).
    objects = {1: [(3, rect(4, 4, 40, 40))], 2: [(3, rect(10, 10, 50, 50))]}
    results = perfect_results(objects={1: objects[1]})
    metrics = evaluate(make_gt(objects), results, category_ids=(3,))
    assert metrics["segm"]["AP"] == pytest.approx(100.0 * 51 / 101)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0 * 51 / 101)


def test_split_ap_matches_hand_computation():
    # category 3 perfect, category 7 has no predictions -> split AP 100 vs 0, both = mean = 50.
    results = [r for r in perfect_results() if r["category_id"] == 3]
    splits = {"three": (3,), "seven": (7,), "both": (3, 7)}
    m = evaluate(make_gt(), results, splits=splits)["segm"]
    assert m["splits"] == {"three": pytest.approx(100.0), "seven": 0.0, "both": pytest.approx(50.0)}
    assert m["AP"] == pytest.approx(50.0)

    # Add a higher-scored false positive for category 3 (on image 5, which has none): ranked FP, TP, TP, TP
    # gives precision 0, 1/2, 2/3, 3/4 at recall 0, 1/3, 2/3, 1; interpolated precision is 3/4 everywhere.
    fp = results_from_instances(5, instances_from_masks([rect(0, 0, 20, 20)], [0], [0.99]), CATS)
    m = evaluate(make_gt(), results + fp, splits=splits)["segm"]
    assert m["per_category"][3] == pytest.approx(75.0)
    assert m["splits"]["both"] == pytest.approx((75.0 + 0.0) / 2)


def test_crowd_regions_and_bad_results_are_handled():
    # A detection on a crowd region is ignored, not a false positive; unusable results are counted.
    crowd = {5: rect(52, 48, 64, 64)}
    results = perfect_results()
    results += results_from_instances(5, instances_from_masks([rect(52, 48, 64, 64)], [0], [0.99]), CATS)
    results += [
        {"image_id": 999, "category_id": 3, "bbox": [0, 0, 4, 4], "score": 0.5},
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 4, 4], "score": float("nan")},
        {"image_id": 1, "score": 0.5},
        {"image_id": 1, "category_id": 3, "score": 0.5, "segmentation": {"size": [8, 8], "counts": "0"}},
    ]
    m = evaluate(make_gt(crowd=crowd), results)
    assert m["segm"]["AP"] == pytest.approx(100.0)
    assert m["dropped_results"]["unknown_image_id"] == 1
    assert m["dropped_results"]["non_finite"] == 1
    assert m["dropped_results"]["malformed_result"] == 1
    assert m["dropped_results"]["bad_segmentation"] == 1


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="iou_types"):
        evaluate(make_gt(), [], iou_types=("keypoints",))
    with pytest.raises(ValueError, match="category_ids"):
        evaluate(make_gt(), [], category_ids=(3, 99))
    with pytest.raises(ValueError, match="split"):
        evaluate(make_gt(), [], splits={"typo": (42,)})
    gt = make_gt()
    del gt["annotations"][0]["segmentation"]
    with pytest.raises(ValueError, match="segmentation"):
        evaluate(gt, [])
    with pytest.raises(ValueError, match="COCO"):
        evaluate({"images": []}, [])


def test_named_splits_use_voc_ids():
    s = named_splits(["voc", "nonvoc"], (1, 3, 8, 44))
    assert s == {"voc": (1, 3, 44), "nonvoc": (8,)}


def test_gt_boxes_skip_crowd_and_map_classes():
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = make_gt(crowd={2: rect(0, 0, 10, 10)})
    coco.createIndex()
    boxes, classes = gt_boxes_for_image(coco, 2, CATS)
    assert boxes.shape == (2, 4) and classes.tolist() == [0, 0]  # the crowd box is not among them
    assert np.allclose(boxes[1], [36, 30, 60, 60])
    boxes, classes = gt_boxes_for_image(coco, 1, (7,))  # only category 7 known -> contiguous class 0
    assert classes.tolist() == [0] and np.allclose(boxes[0], [33, 28, 58, 53])


def test_shrunk_boxes_are_seeded_and_inside_the_originals():
    rng = np.random.default_rng(123)
    xy = rng.uniform(0, 400, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 200, (200, 2))], axis=1).astype(np.float32)
    a = shrink_boxes(boxes, seed=0, image_id=7)
    assert np.array_equal(a, shrink_boxes(boxes, seed=0, image_id=7))
    assert not np.array_equal(a, shrink_boxes(boxes, seed=1, image_id=7))
    assert not np.array_equal(a, shrink_boxes(boxes, seed=0, image_id=8))
    assert np.all(a[:, :2] >= boxes[:, :2]) and np.all(a[:, 2:] <= boxes[:, 2:])
    f = (a[:, 2:] - a[:, :2]).astype(np.float64) / (boxes[:, 2:] - boxes[:, :2])
    assert f.min() >= 0.75 - 1e-4 and f.max() <= 1.0 + 1e-6
    assert f.min() < 0.8 and f.max() > 0.95  # the whole range is used
    # centres are kept
    assert np.allclose(a[:, :2] + a[:, 2:], boxes[:, :2] + boxes[:, 2:], atol=1e-3)


def test_noisy_boxes_move_each_edge_by_sigma_of_its_side_seeded_and_inside_the_image():
    n = 20000
    box = np.array([[200.0, 300.0, 300.0, 500.0]], np.float32)  # w 100, h 200, far from the image edges
    a = noisy_boxes(np.repeat(box, n, 0), seed=0, image_id=3, height=2000.0, width=2000.0)
    assert np.array_equal(a, noisy_boxes(np.repeat(box, n, 0), seed=0, image_id=3, height=2000.0, width=2000.0))
    assert not np.array_equal(a, noisy_boxes(np.repeat(box, n, 0), seed=1, image_id=3, height=2000.0, width=2000.0))
    moved = (a - box) / np.array([100.0, 200.0, 100.0, 200.0])
    np.testing.assert_allclose(moved.std(0), 0.1, rtol=0.05)  # every edge, sigma x its side
    assert np.all(np.abs(moved.mean(0)) < 0.005)
    assert abs(np.corrcoef(moved[:, 0], moved[:, 2])[0, 1]) < 0.05  # edges move independently
    # near the image border: clipped; a box pushed out of the image keeps its true extent
    edge = np.array([[0.0, 0.0, 4.0, 4.0]] * 500, np.float32)
    b = noisy_boxes(edge, seed=0, image_id=1, height=4.0, width=4.0, sigma=2.0)
    assert b.min() >= 0.0 and b.max() <= 4.0
    assert np.all(b[:, 2:] - b[:, :2] >= 1.0)


def test_box_source_parse():
    assert BoxSource.parse("gt_shrunk") is BoxSource.GT_SHRUNK
    assert BoxSource.parse("gt_noisy") is BoxSource.GT_NOISY
    with pytest.raises(ValueError, match="model, gt, gt_shrunk, gt_noisy"):
        BoxSource.parse("shrunk")


# ------------------------------------------------------------------------------------------ the driver


@pytest.fixture()
def coco_dir(tmp_path):
    """GT json + PNGs whose pixels are pure red (RGB), so a channel swap would be seen."""
    objects = {1: [(3, rect(4, 6, 30, 34)), (7, rect(36, 30, 60, 60))], 2: [(7, rect(8, 8, 40, 50))]}
    gt = make_gt(objects)
    gt["images"].append({"id": 9, "file_name": "im9.png", "height": H, "width": W})  # no objects
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[..., 2] = 200
    for im in gt["images"]:
        cv2.imwrite(str(tmp_path / im["file_name"]), bgr)
    path = str(tmp_path / "gt.json")
    with open(path, "w") as f:
        json.dump(gt, f)
    return path, str(tmp_path)


class BoxFiller:
    """Fake predictor: fills each given box (rounded) as its mask; records its calls.

    Given boxes: class-agnostic output (class -1), the driver must restore the given classes.
    No boxes ("model" mode): detects one fixed box of class 1, scored higher on each call.
    """

    def __init__(self):
        self.calls = []

    def __call__(self, image, boxes, classes):
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
        assert image[0, 0].tolist() == [200, 0, 0]  # RGB, not BGR
        self.calls.append((boxes, classes))
        if boxes is None:
            masks, out_classes, scores = [rect(8, 8, 40, 50)], [1], [0.1 * len(self.calls)]
        else:
            masks = [rect(*np.round(b).astype(int)) for b in boxes]
            out_classes, scores = [-1] * len(boxes), None
        return instances_from_masks(masks, out_classes, scores)


def test_evaluate_predictor_gt_boxes_oracle_scores_100(coco_dir):
    gt_path, image_dir = coco_dir
    pred = BoxFiller()
    metrics, results = evaluate_predictor(pred, gt_path, image_dir, "gt", CATS, progress=False)
    assert len(pred.calls) == 2  # image 9 has no ground-truth boxes: not predicted on
    assert metrics["segm"]["AP"] == pytest.approx(100.0) and metrics["bbox"]["AP"] == pytest.approx(100.0)
    assert sorted(r["category_id"] for r in results) == [3, 7, 7]
    assert metrics["box_source"] == "gt" and metrics["num_images"] == 3


def test_evaluate_predictor_shrunk_boxes_are_deterministic_and_worse(coco_dir):
    gt_path, image_dir = coco_dir
    runs = []
    for seed in (0, 0, 1):
        pred = BoxFiller()
        metrics, _ = evaluate_predictor(pred, gt_path, image_dir, BoxSource.GT_SHRUNK, CATS, seed=seed, progress=False)
        runs.append((metrics, [b for b, _ in pred.calls]))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[2][1], strict=True))
    assert runs[0][0]["segm"]["AP"] == runs[1][0]["segm"]["AP"]
    assert runs[0][0]["segm"]["AP"] < 100.0  # the box-filling predictor cannot recover the lost border


def test_evaluate_predictor_model_mode_max_images_and_missing_image(coco_dir):
    gt_path, image_dir = coco_dir
    pred = BoxFiller()
    metrics, results = evaluate_predictor(pred, gt_path, image_dir, "model", CATS, max_images=2, progress=False)
    assert [b for b, _ in pred.calls] == [None, None]
    assert metrics["num_images"] == 2  # image 9 is past max_images and not evaluated
    # the fixed detection is a false positive on image 1 and exactly image 2's object (category 7); image 2's
    # is scored higher: precision 1 up to recall 0.5 -> AP = 51 / 101
    assert metrics["segm"]["per_category"][7] == pytest.approx(100.0 * 51 / 101)
    assert metrics["segm"]["per_category"][3] == 0.0

    os.remove(os.path.join(image_dir, "im2.png"))
    metrics, _ = evaluate_predictor(BoxFiller(), gt_path, image_dir, "gt", CATS, progress=False)
    assert metrics["skipped_images"] == {"unreadable_image": 1}
    assert metrics["segm"]["per_category"][7] < 100.0  # its object counts as missed, AP is not inflated
    with pytest.raises(RuntimeError, match="image_dir"):
        evaluate_predictor(BoxFiller(), gt_path, image_dir + "/nowhere", "gt", CATS, progress=False)


def test_format_metrics_table():
    metrics = evaluate(make_gt(), perfect_results(), splits={"voc": (3,), "nonvoc": (7,)})
    metrics["bbox"]["APs"] = float("nan")
    table = format_metrics_table(metrics, per_category=True, category_names={3: "cat3"})
    lines = table.strip().splitlines()
    assert lines[0].split("|")[1:-1] == [
        " IoU type ",
        " AP ",
        " AP50 ",
        " AP75 ",
        " APs ",
        " APm ",
        " APl ",
        " AP[nonvoc] ",
        " AP[voc] ",
    ]
    assert lines[2].startswith("| bbox | 100.0 | 100.0 | 100.0 | n/a |")
    assert any(line.startswith("| 3 cat3 | 100.0 | 100.0 |") for line in lines)
    with pytest.raises(ValueError):
        format_metrics_table({})


def test_segm_area_ranges_use_mask_area_not_box_area():
    # A false positive whose mask is small (~908 px < 32^2) but whose box is medium (35^2 = 1225 px) counts
    # in the small range of segm AP (FP ranked first: APs 50) but not of bbox AP (APs 100).
    objects = {1: [(3, disk(20, 20, 10))], 2: []}
    tp = results_from_instances(1, instances_from_masks([disk(20, 20, 10)], [0], [0.5]), CATS)
    fp_mask = disk(30, 30, 17)
    assert fp_mask.sum() < 32**2 < 35**2
    fp = results_from_instances(2, instances_from_masks([fp_mask], [0], [0.9]), CATS)
    m = evaluate(make_gt(objects), tp + fp, category_ids=(3,))
    assert m["segm"]["APs"] == pytest.approx(50.0)
    assert m["bbox"]["APs"] == pytest.approx(100.0)
