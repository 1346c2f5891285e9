"""Paper-reproduction studies on the synthetic shapes benchmark (issue 5): `python -m shapemask_training.experiments`.

One module per study (novel_categories, perturbed_boxes, less_data, mask_width). The machinery they share,
one concern a module (the studies and tests import each name from the module that defines it):

- `split`: the seen / novel split of the shape families; `budgets`: `Budget` (run sizes) and the model seed;
- `data_cache`: cached synthetic data, TFRecords and shape priors; `hashing`: the cache keys;
- `variants`: `Variant`, config resolution, cached training, `run_variant`; `scoring`: COCO evaluation;
- `study`: `StudyPlan`, `run_study`, `evaluate_cached`; `provenance`: command, commit, versions, machine;
- `reports`: markdown / JSON reports and `write_report`; `plots`: figure helpers.

`real_novel` is the same question on real images (issue 13), `real_voc` the paper's VOC -> non-VOC split on
real COCO (issue 23): each its own entry point (`python -m shapemask_training.experiments.real_novel`), since they
train the real-model config on imported real sets rather than a synthetic budget; `real_study` is the runner
both use (recipe, scoring, results JSON and its markdown).
"""

STUDIES: tuple[str, ...] = ("novel_categories", "perturbed_boxes", "less_data", "mask_width")
