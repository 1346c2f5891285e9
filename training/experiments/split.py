"""The seen / novel split of the synthetic shape families, fixed once here (`SEEN_FAMILY_IDS`)."""

from __future__ import annotations

from collections.abc import Sequence

# Fixed once, before any result, by category-id parity: odd ids are "seen" (mask supervision), even ids
# are "novel" (boxes only). Rationale: each half must contain a convex shape, a shape with a hole and
# concave shapes, with both curved and straight outlines, so the novel half asks for nothing the seen half
# never showed in kind (the paper's VOC / non-VOC split likewise mixes shape types on both sides):
#   seen : ellipse (convex, curved), ring (hole, curved), star, cross, heart (concave)
#   novel: triangle (convex, straight), frame (hole, straight), crescent, l_shape, arrow (concave)
# `check_split` asserts these properties; never change the split to make a result come out.
SEEN_FAMILY_IDS: tuple[int, ...] = (1, 3, 5, 7, 9)
NOVEL_FAMILY_IDS: tuple[int, ...] = (2, 4, 6, 8, 10)
SPLIT_RATIONALE = (
    "seen = odd category ids (ellipse, ring, star, cross, heart), novel = even ids (triangle, frame, "
    "crescent, l_shape, arrow): fixed by id parity before any run; each half has a convex shape, a shape "
    "with a hole and three concave shapes."
)


def check_split(seen: Sequence[int] = SEEN_FAMILY_IDS, novel: Sequence[int] = NOVEL_FAMILY_IDS) -> None:
    """Raise ValueError unless seen/novel partition all families and each half has a hole and a concave
    family (the split's stated rationale)."""
    from shapemask_ros.datasets.synthetic import SHAPE_FAMILIES, resolve_family

    s, n = set(seen), set(novel)
    if s & n:
        raise ValueError(f"seen and novel families overlap: {sorted(s & n)}")
    if s | n != {f.id for f in SHAPE_FAMILIES}:
        raise ValueError("seen + novel must cover every shape family exactly once")
    for name, ids in (("seen", s), ("novel", n)):
        fams = [resolve_family(i) for i in ids]
        if not any(f.has_hole for f in fams) or not any(f.concave for f in fams):
            raise ValueError(f"the {name} half needs a family with a hole and a concave family")
