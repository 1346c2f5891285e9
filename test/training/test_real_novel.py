"""The real-image novel-category study (issue 13, item 7): every variant trains the shipped real config with
only its own switches, data and seed changed, the schedule scales with the budget, and the report is the
code's rendering of its JSON (also for the committed one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shapemask_training.config import load_config
from shapemask_training.experiments import real_novel as rn
from shapemask_training.experiments import real_study

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)

REPO = Path(__file__).resolve().parents[2]


def _config(name, steps, seed, pattern, priors, tmp):
    return real_study.variant_config(
        name, steps, seed, pattern, priors, tmp, mask=rn.VARIANTS[name][1], study="real_novel"
    )


def _cfg(name, steps=600, seed=0, tmp="w"):
    return _config(name, steps, seed, f"/d/{rn.VARIANTS[name][2]}/train-*.tfrecord", "/p.npy", tmp)


def test_variants_change_only_their_switches_and_share_the_rest_of_the_real_config():
    base = load_config(str(real_study.BASE_CONFIG))
    flags = {n: (_cfg(n).model.mask.use_shape_prior, _cfg(n).model.mask.use_instance_embedding) for n in rn.VARIANTS}
    assert flags == {
        "neither": (False, False),
        "embedding_only": (False, True),
        "prior_only": (True, False),
        "full": (True, True),
        "oracle": (True, True),
    }
    full = _cfg("full")
    # everything else is the shipped real model's: backbone, widths, batch, learning rate
    assert full.model.backbone == base.model.backbone
    assert (full.model.mask.channels, full.model.mask.num_convs) == (
        base.model.mask.channels,
        base.model.mask.num_convs,
    )
    assert (full.train.batch_size, full.train.learning_rate) == (base.train.batch_size, base.train.learning_rate)
    assert full.model.mask.priors_path == "/p.npy" and full.data.train_pattern.startswith("/d/boards/")
    assert _cfg("oracle").data.train_pattern.startswith("/d/boards+coco/")


def test_schedule_scales_with_the_budget_and_models_are_cached_per_variant_seed_and_budget():
    c = _cfg("full", steps=400)
    assert (c.train.steps, c.train.warmup_steps, list(c.train.lr_decay_steps)) == (400, 80, [300, 368])
    dirs = {_cfg(n, s, seed).model_dir for n in rn.VARIANTS for s in (400, 600) for seed in (0, 1)}
    assert len(dirs) == len(rn.VARIANTS) * 4
    # the cache key is the configuration's content: rebuilt from the same inputs it is the same directory,
    # with only the work dir changed it moves with it, and the priors file (an input) changes it
    full = _cfg("full")
    assert full.model_dir == _config("full", 600, 0, "/d/boards/train-*.tfrecord", "/p.npy", "w").model_dir
    assert _cfg("full", tmp="other").model_dir == full.model_dir.replace("w/models", "other/models", 1)
    other_priors = _config("full", 600, 0, "/d/boards/train-*.tfrecord", "/q.npy", "w")
    assert other_priors.model_dir != full.model_dir


def _run(variant, seed, ap):
    score = {"AP": ap, "AP50": ap + 20, "AP75": ap - 5, "APs": None, "APm": None, "APl": None}
    return {
        "variant": variant,
        "label": rn.VARIANTS[variant][0],
        "seed": seed,
        "steps": 600,
        "train_source": rn.VARIANTS[variant][2],
        "train": {"model_dir": f"/w/models/{variant}{seed}", "train_wall_s": 100.0},
        "novel": score,
        "seen": {**score, "AP": 80.0 + seed},
    }


def test_report_has_seeds_side_by_side_means_and_ratio_to_the_baseline():
    results = {
        "runs": [_run("neither", 0, 10.0), _run("neither", 1, 12.0), _run("full", 0, 15.0), _run("full", 1, 18.0)],
        "floors": {"novel": {"AP": 12.6, "AP50": 45.0, "AP75": 4.1}, "seen": {"AP": 30.4}},
        "commands": ["python -m shapemask_training.experiments.real_novel --seed 0"],
    }
    md = rn.render(results)
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "| 10.0 | 12.0 | 11.0 | 1.00× | 0.87× |" in rows["baseline (no prior, no embedding)"]
    assert "| 15.0 | 18.0 | 16.5 | 1.50× | 1.31× |" in rows["ShapeMask (priors + embedding)"]
    assert rows["ShapeMask (priors + embedding)"].endswith("| 80.0 | 81.0 |")
    assert "| 12.6 | 12.6 | 12.6 | – | 1.00× |" in rows["box-filled masks (floor)"]
    assert "prior only" not in md  # variants not run yet are left out, not shown as zeros
    assert "--seed 0" in md


def test_committed_report_is_the_rendering_of_its_json():
    path = REPO / "docs" / "results" / "real_data" / f"{rn.REPORT_STEM}.json"
    if not path.exists():
        pytest.skip("the study has not been committed yet")
    results = json.loads(path.read_text())
    assert (path.with_suffix(".md")).read_text() == rn.render(results)
