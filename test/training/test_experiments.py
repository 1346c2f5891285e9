"""Paper-reproduction tooling (training/experiments): split, subsampling, config sharing, FLOP / parameter
counts, report files, and every study end to end in its tiny (CI) budget."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import cv2
import numpy as np
import pytest

from shapemask_training.evaluation import box_fill_predict
from shapemask_training.experiments import STUDIES, less_data, mask_width, novel_categories, perturbed_boxes
from shapemask_training.experiments.__main__ import main
from shapemask_training.experiments.budgets import BUDGETS, MODEL_SEED, Budget, get_budget
from shapemask_training.experiments.data_cache import SyntheticData, priors_path, subsample_image_ids
from shapemask_training.experiments.plots import new_figure
from shapemask_training.experiments.reports import output_stem, write_report
from shapemask_training.experiments.split import NOVEL_FAMILY_IDS, SEEN_FAMILY_IDS, check_split
from shapemask_training.experiments.study import plan_variants
from shapemask_training.experiments.variants import select_variants, variant_config
from support import REPO as REPO_ROOT
from support.configs import tiny_model_config

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)

MODULES = {m.STUDY: m for m in (novel_categories, perturbed_boxes, less_data, mask_width)}
FAKE_DATA = SyntheticData(
    root="/w/data/d",
    train_json="/w/data/d/train/annotations.json",
    train_image_dir="/w/data/d/train/images",
    val_json="/w/data/d/val/annotations.json",
    val_image_dir="/w/data/d/val/images",
    train_pattern="/w/data/d/tfrecords/train-*.tfrecord",
    category_ids=tuple(range(1, 11)),
)


def _configs(budget: Budget, work_dir: str = "/w") -> dict:
    """(study, variant) -> resolved config, with the priors path run_variant would use."""
    out = {}
    for study, module in MODULES.items():
        for v in module.variants():
            priors = priors_path(work_dir, FAKE_DATA, budget, v.prior_ids, v.fraction)
            out[study, v.name] = variant_config(study, budget, FAKE_DATA, work_dir, v, priors)
    return out


# ------------------------------------------------------------------------------------------------ split
def test_split_partitions_the_families_with_a_hole_and_a_concave_shape_on_each_side():
    from shapemask_ros.datasets.synthetic import SHAPE_FAMILIES, resolve_family

    check_split()
    assert set(SEEN_FAMILY_IDS).isdisjoint(NOVEL_FAMILY_IDS)
    assert set(SEEN_FAMILY_IDS) | set(NOVEL_FAMILY_IDS) == {f.id for f in SHAPE_FAMILIES}
    for half in (SEEN_FAMILY_IDS, NOVEL_FAMILY_IDS):
        fams = [resolve_family(i) for i in half]
        assert any(f.has_hole for f in fams) and any(f.concave for f in fams)
        assert any(not f.has_hole and not f.concave for f in fams)  # and a convex one


def test_check_split_rejects_unbalanced_or_broken_splits():
    with pytest.raises(ValueError, match="hole"):
        check_split(seen=(1, 2, 3, 4, 5), novel=(6, 7, 8, 9, 10))  # both hole families seen
    with pytest.raises(ValueError, match="overlap"):
        check_split(seen=(1, 3, 5, 7, 9), novel=(1, 2, 4, 6, 8, 10))
    with pytest.raises(ValueError, match="cover"):
        check_split(seen=(1, 3), novel=(2, 4))


# ---------------------------------------------------------------------------------------------- subsets
def test_subsampled_image_ids_are_nested_and_near_the_fraction():
    ids = list(range(1, 3001))
    subsets = {f: set(subsample_image_ids(ids, f)) for f in (1.0, 0.5, 0.1, 0.01)}
    assert subsets[0.01] <= subsets[0.1] <= subsets[0.5] <= subsets[1.0] == set(ids)
    for f, kept in subsets.items():
        sd = math.sqrt(len(ids) * f * (1 - f))
        assert abs(len(kept) - f * len(ids)) <= 4 * sd + 1, (f, len(kept))
    assert subsets[0.01], "1/100 of 3000 ids must keep some"
    with pytest.raises(ValueError, match="fraction"):
        subsample_image_ids(ids, 0.0)


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("budget", list(BUDGETS))
def test_studies_share_exactly_the_models_whose_configs_coincide(budget):
    b = get_budget(budget)
    cfgs = _configs(b)
    shared = [
        (("novel_categories", "full"), ("less_data", "fraction_1")),
        (("novel_categories", "neither"), ("less_data", "baseline_full_data")),
        (("novel_categories", "oracle"), ("perturbed_boxes", "shapemask")),
    ]
    if b.steps_for("mask_width") == b.steps:  # otherwise the width study trains its own 32-channel model
        shared.append((("perturbed_boxes", "shapemask"), ("mask_width", "width_32")))
    else:
        assert cfgs["mask_width", "width_32"].model_dir != cfgs["perturbed_boxes", "shapemask"].model_dir
    for a, b in shared:
        assert cfgs[a].model_dir == cfgs[b].model_dir, (a, b)
    # everything else trains its own model (4 coincidences merge 4 pairs, one of them transitively)
    assert len({cfg.model_dir for cfg in cfgs.values()}) == len(cfgs) - len(shared)
    assert all(cfg.model_dir.startswith("/w/models/") for cfg in cfgs.values())


def test_variant_configs_switch_only_what_each_study_varies():
    budget = get_budget("short")
    cfgs = _configs(budget)
    seen = ",".join(map(str, SEEN_FAMILY_IDS))
    switches = {
        name: (
            cfgs["novel_categories", name].model.mask.use_shape_prior,
            cfgs["novel_categories", name].model.mask.use_instance_embedding,
            cfgs["novel_categories", name].data.mask_split,
        )
        for name in ("full", "prior_only", "embedding_only", "neither", "oracle")
    }
    assert switches == {
        "full": (True, True, seen),
        "prior_only": (True, False, seen),
        "embedding_only": (False, True, seen),
        "neither": (False, False, seen),
        "oracle": (True, True, "all"),
    }
    p = {n: cfgs["perturbed_boxes", n] for n in ("shapemask", "shapemask_no_jitter", "crop_in_box")}
    assert p["shapemask"].data.box_jitter_sigma > 0 and p["shapemask_no_jitter"].data.box_jitter_sigma == 0
    assert p["crop_in_box"].model.mask.outer_box_scale == 1.0 < p["shapemask"].model.mask.outer_box_scale
    assert p["crop_in_box"].data.box_jitter_sigma == p["shapemask"].data.box_jitter_sigma
    fractions = [cfgs["less_data", f"fraction_{f:g}"].data.subsample_fraction for f in less_data.FRACTIONS]
    assert fractions == list(less_data.FRACTIONS)
    assert [cfgs["mask_width", f"width_{w}"].model.mask.channels for w in mask_width.WIDTHS] == [
        128,
        64,
        32,
        16,
    ]
    # same schedule, seed, data and image size for every model of a study
    for (study, _), cfg in cfgs.items():
        t = cfg.train
        assert (t.steps, t.batch_size, t.seed, cfg.model.image_size) == (
            budget.steps_for(study),
            budget.batch_size,
            MODEL_SEED,
            budget.image_size,
        )
        assert list(t.lr_decay_steps) == list(Budget.lr_decay_steps(t.steps))
        assert cfg.data.max_instances == budget.objects_per_image
        assert cfg.data.train_pattern == FAKE_DATA.train_pattern
        assert cfg.model.detector.num_classes == 10


def test_width_depth_check_changes_only_the_mask_heads_depth():
    from shapemask_ros.config.loading import to_dict
    from shapemask_training.experiments.width_depth_check import depth_variants

    budget = get_budget("full")
    study = _configs(budget)["mask_width", "width_16"]
    (v,) = depth_variants((16,), 4)
    priors = priors_path("/w", FAKE_DATA, budget, v.prior_ids, v.fraction)
    deep = variant_config("mask_width", budget, FAKE_DATA, "/w", v, priors)
    assert (deep.model.mask.channels, deep.model.mask.num_convs) == (16, 4) != (16, study.model.mask.num_convs)
    assert deep.model_dir != study.model_dir  # its own cached model
    a, b = to_dict(study), to_dict(deep)
    a["model"]["mask"].pop("num_convs"), b["model"]["mask"].pop("num_convs")
    for d in (a, b):
        d.pop("name"), d.pop("model_dir")
    assert a == b


def test_another_model_seed_trains_new_models_on_the_same_data_and_writes_apart():
    default, again, seed1 = get_budget("short"), get_budget("short", 0), get_budget("short", 1)
    base, same, other = _configs(default), _configs(again), _configs(seed1)
    assert {k: v.model_dir for k, v in base.items()} == {k: v.model_dir for k, v in same.items()}
    for key, cfg in other.items():
        assert cfg.model_dir != base[key].model_dir, key  # its own cached model ...
        assert cfg.model.mask.priors_path != base[key].model.mask.priors_path  # ... and its own k-means run
        assert cfg.train.seed == 1 and base[key].train.seed == MODEL_SEED
        assert cfg.data.train_pattern == base[key].data.train_pattern  # same data, same split
        assert cfg.data.mask_split == base[key].data.mask_split
    assert output_stem("less_data", default) == "less_data_short"
    assert output_stem("less_data", seed1) == "less_data_short_seed1"
    assert output_stem("less_data", get_budget("full", 2)) == "less_data_seed2"
    with pytest.raises(ValueError, match="seed"):
        get_budget("full", -1)


def test_partially_supervised_variants_use_priors_from_seen_masks_only():
    budget = get_budget("short")
    cfgs = _configs(budget)
    seen_priors = priors_path("/w", FAKE_DATA, budget, SEEN_FAMILY_IDS, 1.0)
    all_priors = priors_path("/w", FAKE_DATA, budget, None, 1.0)
    assert seen_priors != all_priors
    for name in ("full", "prior_only", "embedding_only", "neither"):
        assert cfgs["novel_categories", name].model.mask.priors_path == seen_priors
    assert cfgs["novel_categories", "oracle"].model.mask.priors_path == all_priors
    tenth = cfgs["less_data", "fraction_0.1"].model.mask.priors_path
    assert tenth not in (seen_priors, all_priors)


def test_budgets_fit_their_purpose():
    tiny, short, full = (get_budget(n) for n in ("tiny", "short", "full"))
    assert 64 <= tiny.image_size <= 96 and tiny.steps <= 5
    assert tiny.steps < short.steps < full.steps
    for b in (short, full):
        for study in STUDIES:
            first, second = Budget.lr_decay_steps(b.steps_for(study))
            assert b.warmup_steps < first < second <= b.steps_for(study)
    # 1/100 of the training images must still fill a batch (less_data refuses to run otherwise)
    for b in (tiny, short, full):
        assert len(subsample_image_ids(range(1, b.train_images + 1), 0.01)) >= b.batch_size, b.name
    with pytest.raises(ValueError, match="unknown budget"):
        get_budget("huge")


# ------------------------------------------------------------------------------------- FLOPs and params
def _profile_nodes(model, num_boxes: int) -> dict[str, int]:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    _, concrete, _ = mask_width._branch_function(model, num_boxes)
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(convert_variables_to_constants_v2(concrete).graph, options=opts)
    return {ch.name: int(ch.total_float_ops) for ch in prof.children}


def _conv_flops(nodes: dict[str, int]) -> int:
    """Convolutions, and the fine head's per-instance upsampling-and-logits map (a MatMul over the channels)."""
    return sum(
        v
        for k, v in nodes.items()
        if k.endswith(("/convolution", "/conv_transpose"))
        or (k.startswith("fine_head") and k.endswith("/upsampled_logits/MatMul"))
    )


@pytest.mark.parametrize("channels,num_convs", [(16, 2), (8, 1)])
def test_analytic_conv_macs_match_the_tensorflow_profiler(channels, num_convs):
    from shapemask_ros.model.shapemask import build_model

    cfg = tiny_model_config(64, 3, channels=channels, num_convs=num_convs)
    model = build_model(cfg)
    one, two = _conv_flops(_profile_nodes(model, 1)), _conv_flops(_profile_nodes(model, 2))
    macs = mask_width.mask_branch_macs(cfg)
    assert two - one == 2 * macs["convolutions_per_instance"]
    assert 2 * one - two == 2 * macs["projection_per_image"]  # the only per-image conv: the 1x1 projection
    total = mask_width.profiler_flops(model, 2) - mask_width.profiler_flops(model, 1)
    assert 2 * macs["per_instance"] <= total < 1.25 * 2 * macs["per_instance"]  # + element-wise ops


def test_mask_branch_parameter_count_covers_every_head():
    from shapemask_ros.model.shapemask import build_model

    cfg = tiny_model_config(64, 3, channels=12, num_convs=2, num_priors=5)
    m, f = cfg.mask, cfg.detector.fpn_channels
    cm, k, c_, u = m.channels, m.num_priors, cfg.num_mask_classes, m.upsample_factor
    expected = (
        f * cm
        + cm  # projection
        + cm * c_ * k
        + c_ * k  # prior logits
        + 2 * (cm + cm)  # prior embedding and coarse embedding 1x1 (1 -> cm, with bias)
        + 2 * m.num_convs * (9 * cm * cm + 2 * cm)  # coarse + fine 3x3 stacks (no bias) with BN gamma/beta
        + 2 * (cm * c_ + c_)  # coarse and fine logits
        + u * u * cm * cm  # upsampling transposed conv (no bias; no BN after it, as in the reference)
    )
    params = mask_width.mask_branch_params(build_model(cfg))
    assert params["trainable"] == expected
    assert params["fixed_priors"] == c_ * k * m.crop_size**2


# ------------------------------------------------------------------------------------------- box fill
def test_box_fill_masks_are_the_pixels_whose_centres_lie_in_the_box():
    rng = np.random.default_rng(0)
    h, w = 20, 30
    xy = rng.uniform(-3, 25, (40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.3, 12, (40, 2))], 1)
    inst = box_fill_predict(np.zeros((h, w, 3), np.uint8), boxes, None)
    full = inst.full_masks()
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    for b, m in zip(boxes, full, strict=True):
        want = (xs >= b[0]) & (xs < b[2]) & (ys >= b[1]) & (ys < b[3])
        if want.any():
            assert np.array_equal(m.astype(bool), want)
        else:  # a box thinner than a pixel centre spacing still gets a 1-px line (never an empty mask)
            assert m.any() and min(m.any(0).sum(), m.any(1).sum()) == 1
    assert (inst.class_ids == -1).all() and (inst.source_index == np.arange(40)).all()
    with pytest.raises(ValueError, match="given boxes"):
        box_fill_predict(np.zeros((h, w, 3), np.uint8), None, None)


# ----------------------------------------------------------------------------------------------- claims
def _row(name: str, gt=None, model=None, shrunk=None, box_ap=30.0, **extra) -> dict:
    """A variant row: gt / model / shrunk = (AP, novel AP) with ground-truth / detected / shrunk boxes."""

    def ev(v):
        return {"segm": {"AP": v[0], "splits": {"novel": v[1], "seen": v[0]}}, "bbox": {"AP": box_ap}}

    evals = {k: ev(v) for k, v in (("gt", gt), ("model", model), ("gt_shrunk", shrunk)) if v is not None}
    return {"name": name, "eval": evals, **extra}


def _verdicts(claims: list) -> list:
    return [cl["holds"] for cl in claims]


def test_novel_category_claims_follow_the_issue_targets():
    def rows(full, neither, prior, emb, box_ap=30.0):
        return [
            _row("full", (40, full), (20, full / 2), box_ap=box_ap),
            _row("prior_only", (40, prior), (20, 1), box_ap=box_ap),
            _row("embedding_only", (40, emb), (20, 1), box_ap=box_ap),
            _row("neither", (40, neither), (20, neither / 2), box_ap=box_ap),
            _row("oracle", (40, 35), (20, 15), box_ap=box_ap),
        ]

    assert _verdicts(novel_categories.claims(rows(30, 12, 20, 18))) == [True, True, True, True]
    assert _verdicts(novel_categories.claims(rows(20, 12, 11, 13))) == [False, False, False, True]
    # an untrained detector gives no verdict on detection-based AP, whatever the numbers
    assert _verdicts(novel_categories.claims(rows(30, 12, 20, 18, box_ap=2.0)))[1] is None
    # nothing learned at all: no verdicts rather than "reproduced"
    assert _verdicts(novel_categories.claims(rows(0, 0, 0, 0))) == [None, None, None, None]


def test_a_partial_run_gives_no_verdict_on_claims_that_need_missing_variants():
    full_and_base = [_row("full", (40, 30), (20, 15)), _row("neither", (40, 12), (20, 6))]
    # the main claim is judged; the ablations that were not run are 'n/a', not an error or a verdict
    assert _verdicts(novel_categories.claims(full_and_base)) == [True, True, None, None]
    assert _verdicts(perturbed_boxes.claims([_row("shapemask", gt=(40, 0), shrunk=(38, 0))])) == [None] * 3
    assert [v.name for v in select_variants(novel_categories.variants(), ["neither", "full"])] == [
        "full",
        "neither",
    ]
    assert len(select_variants(novel_categories.variants(), None)) == 5
    with pytest.raises(ValueError, match="unknown variant"):
        select_variants(novel_categories.variants(), ["full", "fulll"])
    with pytest.raises(ValueError, match="without --variants"):
        mask_width.run(get_budget("tiny"), "unused", "unused", only=["128"])


def test_fix_ablations_run_only_when_named_and_undo_exactly_one_fix():
    plan = novel_categories.PLAN
    assert [v.name for v in plan_variants(plan, None)] == [v.name for v in novel_categories.variants()]
    picked = select_variants(plan_variants(plan, ["full", "full_mean_loss"]), ["full", "full_mean_loss"])
    assert [v.name for v in picked] == ["full", "full_mean_loss"]
    budget = get_budget("short")
    cfgs = {}
    for v in plan_variants(plan, ["full"]):
        priors = priors_path("/w", FAKE_DATA, budget, v.prior_ids, v.fraction)
        cfgs[v.name] = variant_config(novel_categories.STUDY, budget, FAKE_DATA, "/w", v, priors)
    full = cfgs["full"]
    for name, field, value in (
        ("full_mean_loss", "loss_normalisation", "mean"),
        ("full_naive_alignment", "feature_alignment", "naive"),
    ):
        cfg = cfgs[name]
        assert getattr(cfg.model.mask, field) == value != getattr(full.model.mask, field)
        undone = dataclasses.replace(cfg.model.mask, **{field: getattr(full.model.mask, field)})
        assert undone == full.model.mask and cfg.data == full.data and cfg.train == full.train
        assert cfg.model_dir != full.model_dir


def test_perturbed_box_claims_compare_the_losses():
    def rows(sm, nojit, crop):
        return [
            _row("shapemask", gt=(40, 0), shrunk=(40 + sm, 0)),
            _row("shapemask_no_jitter", gt=(40, 0), shrunk=(40 + nojit, 0)),
            _row("crop_in_box", gt=(40, 0), shrunk=(40 + crop, 0)),
        ]

    assert _verdicts(perturbed_boxes.claims(rows(-2, -4, -10))) == [True, True, True]
    assert _verdicts(perturbed_boxes.claims(rows(-2, -1, -3))) == [True, False, False]
    assert _verdicts(perturbed_boxes.claims(rows(-5, -6, -6))) == [False, False, True]


def test_less_data_claims_use_the_share_of_full_data_ap():
    def rows(full, tenth, hundredth, base):
        aps = {
            "fraction_1": full,
            "fraction_0.5": full,
            "fraction_0.1": tenth,
            "fraction_0.01": hundredth,
            "baseline_full_data": base,
        }
        return [_row(n, (30, v), (10, v)) for n, v in aps.items()]

    assert _verdicts(less_data.claims(rows(30, 25, 15, 10))) == [True, True]
    assert _verdicts(less_data.claims(rows(30, 23, 9, 10))) == [False, False]


def test_width_claims_check_ap_parameters_and_time():
    def rows(aps, times, params=(500_000, 130_000, 35_000, 9_000)):
        return [
            _row(f"width_{w}", (ap, 0), channels=w, params={"trainable": p}, timing={"median_ms": t})
            for w, ap, t, p in zip(mask_width.WIDTHS, aps, times, params, strict=True)
        ]

    assert _verdicts(mask_width.claims(rows((40, 40, 39.5, 39), (90, 30, 12, 8)))) == [True, True, True]
    assert _verdicts(mask_width.claims(rows((40, 40, 39, 37), (90, 30, 31, 8)))) == [False, True, False]


# ---------------------------------------------------------------------------------------------- reports
def test_write_report_is_strict_json_and_a_real_png(tmp_path):
    fig, (ax,) = new_figure()
    ax.plot([1, 2], [3, 4])
    payload = {"ap": float("nan"), "n": np.int64(3), "ok": np.bool_(True), "xs": [np.float32(0.5)]}
    paths = write_report(str(tmp_path), "s", payload, "# t\n", fig)
    data = json.loads((tmp_path / "s.json").read_text(), parse_constant=_reject)
    assert data == {"ap": None, "n": 3, "ok": True, "xs": [0.5]}
    assert (tmp_path / "s.md").read_text() == "# t\n"
    img = cv2.imread(paths["png"])
    assert img is not None and min(img.shape[:2]) > 100
    assert sorted(os.listdir(tmp_path)) == ["s.json", "s.md", "s.png"]  # no temporary files left


RESULTS = os.path.join(REPO_ROOT, "docs", "results")


def _committed_reports() -> list[str]:
    stems = [f[:-5] for f in sorted(os.listdir(RESULTS)) if f.endswith(".json")] if os.path.isdir(RESULTS) else []
    return [s for s in stems if os.path.exists(os.path.join(RESULTS, f"{s}.md"))]


@pytest.mark.parametrize("stem", _committed_reports())
def test_committed_result_tables_are_what_the_code_renders_from_their_json(stem):
    """The markdown in docs/results is the study's own rendering of the JSON beside it (nothing hand-edited),
    and the JSON alone is enough to re-render it (rows that trained nothing stored as null, not NaN)."""
    study = next(s for s in STUDIES if stem == s or stem.startswith(f"{s}_"))
    payload = json.loads(open(os.path.join(RESULTS, f"{stem}.json")).read(), parse_constant=_reject)
    rendered = MODULES[study].markdown(payload)
    assert rendered == open(os.path.join(RESULTS, f"{stem}.md")).read(), (
        f"docs/results/{stem}.md differs from what {study}.markdown() renders from {stem}.json"
    )


def test_committed_reports_cover_every_study_at_the_full_budget():
    stems = set(_committed_reports())
    assert {s for s in STUDIES if s in stems} == set(STUDIES)


def _reject(token: str):
    raise AssertionError(f"non-strict JSON constant {token}")


def test_cli_rejects_unknown_study_and_budget(capsys):
    with pytest.raises(SystemExit):
        main(["no_such_study", "--budget", "tiny"])
    with pytest.raises(SystemExit):
        main(["novel_categories", "--budget", "huge"])
    assert "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ tiny end to end
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Every study in the tiny budget through the CLI, sharing one work dir (as a user would)."""
    out, work = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("work")
    payloads = {}
    for study in STUDIES:
        assert main([study, "--budget", "tiny", "--out", str(out), "--work-dir", str(work)]) == 0
        payloads[study] = json.loads((out / f"{study}_tiny.json").read_text(), parse_constant=_reject)
    return out, payloads, work


def _ap_ok(v) -> bool:
    return v is None or 0.0 <= v <= 100.0


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_tiny_study_writes_table_json_and_plot(tiny_runs, study):
    out, payloads, _ = tiny_runs
    p = payloads[study]
    module = MODULES[study]
    names = [v.name for v in module.variants()]
    budget = get_budget("tiny")
    assert p["study"] == study and p["budget"] == "tiny" and p["steps"] == budget.steps_for(study)
    assert [r["name"] for r in p["variants"]] == names
    assert f"shapemask_training.experiments {study} --budget tiny" in p["provenance"]["command"]
    assert p["provenance"]["seeds"]["model"] == MODEL_SEED and p["provenance"]["budget"]["steps"] == budget.steps
    for r in p["variants"]:
        assert r["train"]["steps"] == budget.steps_for(study) and r["train"]["seed"] == MODEL_SEED
        assert r["train"]["train_wall_s"] > 0
        assert r["eval"], r["name"]
        for source, ev in r["eval"].items():
            assert source in ("gt", "gt_shrunk", "model")
            assert ev["num_images"] == budget.val_images
            assert _ap_ok(ev["segm"]["AP"]) and all(_ap_ok(v) for v in ev["segm"]["splits"].values())
    assert p["claims"] and all(cl["holds"] in (True, False, None) for cl in p["claims"])
    if study != "mask_width":  # the box-filled reference is scored on the same images with given boxes
        ref = p["reference"]["eval"]
        assert set(ref) <= {"gt", "gt_shrunk"} and ref["gt"]["num_images"] == budget.val_images
        assert p["reference"]["label"] in (out / f"{study}_tiny.md").read_text()
    md = (out / f"{study}_tiny.md").read_text()
    for r in p["variants"]:
        assert r["label"] in md or str(r.get("channels")) in md
    assert "## Claims" in md and p["provenance"]["command"] in md
    img = cv2.imread(str(out / f"{study}_tiny.png"))
    assert img is not None and min(img.shape[:2]) > 100


@pytest.mark.slow
def test_tiny_studies_reuse_models_trained_by_earlier_studies(tiny_runs):
    _, p, _ = tiny_runs
    reused = {s: {r["name"] for r in p[s]["variants"] if r["train"]["reused"]} for s in p}
    assert reused["novel_categories"] == set()
    assert reused["perturbed_boxes"] == {"shapemask"}
    assert reused["less_data"] == {"fraction_1", "baseline_full_data"}
    assert reused["mask_width"] == {"width_32"}
    assert p["less_data"]["variants"][-1]["train_images"] == get_budget("tiny").train_images  # all images
    kept = [r["train_images"] for r in p["less_data"]["variants"][:4]]
    assert kept[0] > kept[1] > kept[2] > kept[3] >= 1


@pytest.mark.slow
def test_tiny_width_study_measures_cost_falling_with_width(tiny_runs):
    _, p, _ = tiny_runs
    rows = p["mask_width"]["variants"]
    assert [r["channels"] for r in rows] == list(mask_width.WIDTHS)
    for key in ("params", "macs"):
        vals = [r[key]["trainable" if key == "params" else "per_instance"] for r in rows]
        assert all(a > b for a, b in zip(vals, vals[1:], strict=False)), (key, vals)
    assert all(r["timing"]["median_ms"] > 0 and r["timing"]["repeats"] >= 1 for r in rows)
    # the profiler agrees with the analytic count within the element-wise overhead
    for r in rows:
        assert 2 * r["macs"]["per_instance"] <= r["profiler_flops"]["per_instance"] < 2.5 * r["macs"]["per_instance"]


@pytest.mark.slow
def test_evaluate_only_scores_cached_models_without_training(tiny_runs, tmp_path, capsys):
    out, payloads, work = tiny_runs
    models = sorted(os.listdir(work / "models"))
    assert main(["novel_categories", "--budget", "tiny", "--out", str(tmp_path), "--work-dir", str(work),
                 "--variants", "full,neither", "--evaluate-only", "gt,gt_shrunk"]) == 0  # fmt: skip
    assert sorted(os.listdir(work / "models")) == models  # nothing trained
    res = json.loads((tmp_path / "novel_categories_tiny_eval_gt_gt_shrunk.json").read_text())["variants"]
    assert set(res) >= {"full", "neither", "box_fill"} and "prior_only" not in res
    for name in ("full", "neither"):
        assert set(res[name]) == {"gt", "gt_shrunk"}
        assert set(res[name]["gt"]["segm"]["splits"]) == {"seen", "novel"}
    # the same model and boxes as the study's own evaluation give the same AP
    study_full = next(r for r in payloads["novel_categories"]["variants"] if r["name"] == "full")
    want = study_full["eval"]["gt"]["segm"]["AP"]
    assert res["full"]["gt"]["segm"]["AP"] == (None if want is None else pytest.approx(want, abs=1e-9))
    assert "| full | gt_shrunk |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="--variants full"):
        main(["novel_categories", "--budget", "tiny", "--out", str(tmp_path), "--work-dir", str(tmp_path / "empty"),
              "--variants", "full", "--evaluate-only", "gt"])  # fmt: skip


@pytest.mark.slow
def test_seed_flag_trains_a_new_model_and_writes_a_seed_report(tiny_runs, tmp_path):
    _, payloads, work = tiny_runs
    before = set(os.listdir(work / "models"))
    assert main(["novel_categories", "--budget", "tiny", "--out", str(tmp_path), "--work-dir", str(work),
                 "--variants", "neither", "--seed", "1"]) == 0  # fmt: skip
    added = set(os.listdir(work / "models")) - before
    assert len(added) == 1  # one new model, nothing reused from seed 0
    p = json.loads((tmp_path / "novel_categories_tiny_seed1.json").read_text())
    row = next(r for r in p["variants"] if r["name"] == "neither")
    seed0 = next(r for r in payloads["novel_categories"]["variants"] if r["name"] == "neither")
    assert row["train"]["seed"] == 1 and not row["train"]["reused"]
    assert added == {os.path.basename(row["train"]["model_dir"])}
    assert row["train"]["model_dir"] != seed0["train"]["model_dir"]
    assert p["provenance"]["seeds"]["model"] == 1 and p["provenance"]["seeds"]["priors_kmeans"] == 1
    assert row["priors_path"] != seed0["priors_path"]
    assert "--seed 1" in p["provenance"]["command"]


def test_provenance_records_paths_relative_to_the_repository(monkeypatch):
    """Committed results never carry this machine's absolute paths (work dir, argv0, paths in the command)."""
    from shapemask_training.experiments import provenance as prov
    from shapemask_training.experiments.variants import REPO_ROOT as ROOT
    from shapemask_training.experiments.variants import repo_relative

    monkeypatch.setattr(prov.sys, "argv", [str(ROOT / "training/experiments/__main__.py")])
    work = str(ROOT / "out/experiments")
    p = prov.provenance(get_budget("tiny"), ["less_data", "--work-dir", work, "--out", "/elsewhere/x"], work)
    assert p["work_dir"] == "out/experiments" and p["argv0"] == "training/experiments/__main__.py"
    assert "--work-dir out/experiments" in p["command"] and "--out /elsewhere/x" in p["command"]
    assert str(ROOT) not in json.dumps(p)
    assert repo_relative("gs://bucket/p.npy") == "gs://bucket/p.npy" and repo_relative("") == ""
    assert repo_relative(str(ROOT) + "2/x") == "../" + ROOT.name + "2/x"  # a sibling folder is not inside
