"""COCO category splits: which categories' masks are supervised or scored ('all', the paper's 20 PASCAL VOC
categories and the other 60, or explicit ids). Read by training (`data.mask_split`, priors) and by evaluation
(AP per split)."""

from __future__ import annotations

# COCO category ids of the 20 PASCAL VOC classes (the paper's VOC / non-VOC split).
VOC_CATEGORY_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)


def mask_split_ids(split: str, all_ids: tuple[int, ...]) -> tuple[int, ...]:
    """Category ids whose masks are supervised: 'all' | 'voc' | 'nonvoc' | '1,2,3'."""
    s = split.strip().lower()
    if s == "all":
        return tuple(all_ids)
    if s == "voc":
        return tuple(i for i in all_ids if i in VOC_CATEGORY_IDS)
    if s == "nonvoc":
        return tuple(i for i in all_ids if i not in VOC_CATEGORY_IDS)
    try:
        ids = tuple(int(t) for t in s.split(",") if t.strip())
    except ValueError as e:
        raise ValueError(f"mask_split must be all|voc|nonvoc|comma-separated ids, got {split!r}") from e
    unknown = set(ids) - set(all_ids)
    if unknown:
        raise ValueError(f"mask_split names category ids not in the dataset: {sorted(unknown)}")
    return ids
