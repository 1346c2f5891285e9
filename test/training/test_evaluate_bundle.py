"""`shapemask evaluate-bundle`: class-agnostic scoring of bundles on any COCO set, next to box-filled masks."""

from __future__ import annotations

import json

import pytest

from shapemask_training.evaluate_bundle import agnostic_coco, evaluate_bundles, format_report
from support import REPO

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def test_agnostic_coco_maps_every_category_to_one_and_renumbers_ids_from_1():
    data = {
        "images": [{"id": 5}],
        "categories": [{"id": 0, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [{"id": 0, "image_id": 5, "category_id": 0}, {"id": 3, "image_id": 5, "category_id": 7}],
    }
    out = agnostic_coco(data)
    assert out["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert [(a["id"], a["category_id"]) for a in out["annotations"]] == [(1, 1), (2, 1)]
    assert data["annotations"][0]["id"] == 0  # the input is not modified


@pytest.fixture(scope="module")
def tiny_set_and_bundle(tmp_path_factory):
    from shapemask_ros.datasets.synthetic import generate_dataset
    from shapemask_ros.export.bundle import export_bundle
    from shapemask_ros.model.shapemask import build_model
    from support.configs import tiny_model_config

    root = tmp_path_factory.mktemp("evalb")
    ann = generate_dataset(str(root / "set"), 3, 64, 80, seed=4, max_instances=3)
    cfg = tiny_model_config(image_size=64, num_classes=1)
    bundle = export_bundle(build_model(cfg), str(root / "bundle"), ["object"], saved_model=False)
    return ann, str(root / "set" / "images"), bundle


@pytest.mark.slow
def test_bundles_are_scored_per_box_source_with_the_box_filled_floor(tiny_set_and_bundle):
    ann, images, bundle = tiny_set_and_bundle
    res = evaluate_bundles(ann, images, [("tiny", bundle)], ("gt", "gt_shrunk", "model"), progress=False)
    assert set(res["rows"]) == {"tiny", "box-filled masks"}
    assert set(res["rows"]["tiny"]) == {"gt", "gt_shrunk", "model"}
    assert set(res["rows"]["box-filled masks"]) == {"gt", "gt_shrunk"}  # no floor without given boxes
    n = sum(1 for a in json.load(open(ann))["annotations"] if not a.get("iscrowd"))
    assert res["instances"] == n and res["images"] == 3
    fill = res["rows"]["box-filled masks"]["gt"]["mask_AP"]
    assert 0.0 < fill <= 100.0  # synthetic shapes are not boxes, but boxes overlap them
    md = format_report(res, "tiny set")
    ratio = res["rows"]["tiny"]["gt"]["mask_AP"] / fill
    assert f"| tiny | gt | {res['rows']['tiny']['gt']['mask_AP']:.1f} |" in md and f"{ratio:.2f}" in md
    assert "| tiny | model |" in md and "| box-filled masks | model |" not in md
    flip = evaluate_bundles(ann, images, [("tiny", bundle)], ("gt",), box_fill=False, progress=False, flip_average=True)
    assert set(flip["rows"]) == {"tiny", "tiny +flip"}
    assert flip["rows"]["tiny"]["gt"] == {
        **res["rows"]["tiny"]["gt"],
        "eval_s": flip["rows"]["tiny"]["gt"]["eval_s"],
        "predict_ms": flip["rows"]["tiny"]["gt"]["predict_ms"],
    }


REPORTS = sorted((REPO / "docs/results/real_data").glob("*.json"))


@pytest.mark.parametrize("path", [p for p in REPORTS if "rows" in json.loads(p.read_text())], ids=lambda p: p.stem)
def test_committed_bundle_reports_are_the_rendering_of_their_json(path):
    """docs/results/real_data/{coco128,iotkits_valid,variants_*}.md are `format_report` of the JSON beside them
    (the heading is the --title given on the command line, not stored in the JSON)."""
    result = json.loads(path.read_text())
    md = path.with_suffix(".md").read_text().splitlines()
    assert md[0].startswith("### ")
    assert format_report(result, md[0][4:]).splitlines() == md
    assert result["command"].startswith("shapemask evaluate-bundle ")
