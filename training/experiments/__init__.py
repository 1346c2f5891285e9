"""Paper-reproduction studies on the synthetic shapes benchmark (issue 5): `python -m training.experiments`.

One module per study (novel_categories, perturbed_boxes, less_data, mask_width); shared data preparation,
training, evaluation and report writing live in `common`.
"""

STUDIES: tuple[str, ...] = ("novel_categories", "perturbed_boxes", "less_data", "mask_width")
