"""Synthetic COCO-format instance dataset: distinct 2-D shape families on cluttered backgrounds.

Used by tests, the demo and the paper-reproduction studies, where held-out shape families play the role of
novel categories (so the families differ in topology and outline: holes, concavities, corners, curves).

Geometry follows the project's pixel convention (shapemask_ros.ops.sampling): pixel (r, c) covers
[c, c+1) x [r, r+1) and its centre is (c + 0.5, r + 0.5). An `ObjectSpec` centre is in those continuous
coordinates; polygons are shifted by -0.5 before cv2 rasterises them (cv2 puts integer coordinates on pixel
centres) and drawn with 4 fractional bits, without anti-aliasing, so a mask is exactly the set of pixels that
were painted with the object's texture.

Occlusion: objects are painted in list order (later on top). An earlier object's mask loses the pixels that
a later one covers; instances left with less than `min_visible_fraction` of their own area, or fewer than
`min_area` pixels, are dropped from the annotations (counted in `Scene.num_dropped`). Random scenes reject
placements that would cause such drops, so every painted object of a generated dataset is annotated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from shapemask_ros.utils.io import atomic_write_bytes, atomic_write_text, makedirs

log = logging.getLogger(__name__)

TEXTURES: tuple[str, ...] = ("solid", "stripes", "noise", "gradient")
_TEXTURE_PROBS = (0.5, 0.2, 0.15, 0.15)
_SHIFT = 4  # fractional bits for cv2.fillPoly (sub-pixel vertex positions)
_CIRCLE_POINTS = 72


@dataclass(frozen=True)
class ShapeFamily:
    """One synthetic category."""

    id: int
    name: str
    has_hole: bool = False
    concave: bool = False


SHAPE_FAMILIES: tuple[ShapeFamily, ...] = (
    ShapeFamily(1, "ellipse"),
    ShapeFamily(2, "triangle"),
    ShapeFamily(3, "ring", has_hole=True),
    ShapeFamily(4, "frame", has_hole=True),
    ShapeFamily(5, "star", concave=True),
    ShapeFamily(6, "crescent", concave=True),
    ShapeFamily(7, "cross", concave=True),
    ShapeFamily(8, "l_shape", concave=True),
    ShapeFamily(9, "heart", concave=True),
    ShapeFamily(10, "arrow", concave=True),
)
_BY_NAME = {f.name: f for f in SHAPE_FAMILIES}
_BY_ID = {f.id: f for f in SHAPE_FAMILIES}


def _circle(r: float = 1.0, cx: float = 0.0, cy: float = 0.0, n: int = _CIRCLE_POINTS) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _square(h: float) -> np.ndarray:
    return np.array([[-h, -h], [h, -h], [h, h], [-h, h]], dtype=np.float64)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _heart(n: int = 96) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))  # image y points down
    pts = np.stack([x, y], axis=1)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return (pts - (lo + hi) / 2) / ((hi - lo).max() / 2)


# Each family is a list of (polygon in the unit square [-1, 1]^2, fill value): value 1 paints, 0 cuts a hole.
_GEOMETRY: dict[str, list[tuple[np.ndarray, int]]] = {
    "ellipse": [(_circle(), 1)],
    "triangle": [(np.array([[0.0, -1.0], [0.95, 0.75], [-0.95, 0.75]]), 1)],
    "ring": [(_circle(1.0), 1), (_circle(0.55), 0)],
    "frame": [(_square(1.0), 1), (_square(0.55), 0)],
    "star": [(_star(), 1)],
    "crescent": [(_circle(1.0), 1), (_circle(0.85, cx=0.45), 0)],
    "cross": [
        (
            np.array(
                [
                    [-0.33, -1],
                    [0.33, -1],
                    [0.33, -0.33],
                    [1, -0.33],
                    [1, 0.33],
                    [0.33, 0.33],
                    [0.33, 1],
                    [-0.33, 1],
                    [-0.33, 0.33],
                    [-1, 0.33],
                    [-1, -0.33],
                    [-0.33, -0.33],
                ],
                dtype=np.float64,
            ),
            1,
        )
    ],
    "l_shape": [(np.array([[-1, -1], [-0.2, -1], [-0.2, 0.2], [1, 0.2], [1, 1], [-1, 1]], np.float64), 1)],
    "heart": [(_heart(), 1)],
    "arrow": [
        (
            np.array(
                [[-1, -0.2], [0.1, -0.2], [0.1, -0.7], [1, 0], [0.1, 0.7], [0.1, 0.2], [-1, 0.2]],
                dtype=np.float64,
            ),
            1,
        )
    ],
}


def resolve_family(family: str | int) -> ShapeFamily:
    """Look a family up by name or category id; unknown ones raise ValueError listing the valid names."""
    if isinstance(family, (int, np.integer)) and not isinstance(family, bool):
        if int(family) in _BY_ID:
            return _BY_ID[int(family)]
    elif isinstance(family, str) and family.strip().lower() in _BY_NAME:
        return _BY_NAME[family.strip().lower()]
    valid = ", ".join(f"{f.id}={f.name}" for f in SHAPE_FAMILIES)
    raise ValueError(f"unknown shape family {family!r}; valid: {valid}")


def resolve_families(families: Sequence[str | int] | None) -> tuple[ShapeFamily, ...]:
    """Families to draw from: all when None, else the named/numbered ones (deduplicated, in id order)."""
    if families is None:
        return SHAPE_FAMILIES
    if isinstance(families, (str, int)):
        families = [families]
    chosen = {resolve_family(f).id for f in families}
    if not chosen:
        raise ValueError("families= is empty; pass None for all families")
    return tuple(_BY_ID[i] for i in sorted(chosen))


def coco_categories() -> list[dict]:
    """COCO `categories` list for all families (always all, so a restricted split keeps the same ids)."""
    return [{"id": f.id, "name": f.name, "supercategory": "shape"} for f in SHAPE_FAMILIES]


@dataclass(frozen=True)
class ObjectSpec:
    """One object to paint. Coordinates in image pixels (pixel centres at +0.5).

    size: nominal diameter in pixels (geometric mean of the unrotated width and height).
    aspect: unrotated width / height. rotation_deg: counter-clockwise on screen.
    texture: solid | stripes | noise | gradient; `color2` and `texture_seed` parameterise it in the object's
    own frame, so a moving object keeps its texture from frame to frame.
    depth_m: distance of the object's fronto-parallel plane (for the depth image); None = by drawing order.
    """

    family: str | int
    center: tuple[float, float]
    size: float
    rotation_deg: float = 0.0
    aspect: float = 1.0
    color: tuple[int, int, int] = (220, 40, 40)
    texture: str = "solid"
    color2: tuple[int, int, int] | None = None
    texture_seed: int = 0
    depth_m: float | None = None

    def validate(self) -> ShapeFamily:
        """Check every field; returns the family. Raises ValueError with the offending field."""
        fam = resolve_family(self.family)
        vals = [*self.center, self.size, self.rotation_deg, self.aspect]
        if len(self.center) != 2 or not all(math.isfinite(float(v)) for v in vals):
            raise ValueError(f"ObjectSpec({fam.name}): center/size/rotation/aspect must be finite numbers")
        if self.size <= 0 or self.aspect <= 0:
            raise ValueError(f"ObjectSpec({fam.name}): size, aspect must be > 0: {self.size}, {self.aspect}")
        for name in ("color", "color2"):
            c = getattr(self, name)
            if c is not None and (len(c) != 3 or not all(0 <= int(v) <= 255 for v in c)):
                raise ValueError(f"ObjectSpec({fam.name}): {name} must be 3 values in 0..255, got {c}")
        if self.texture not in TEXTURES:
            raise ValueError(f"ObjectSpec({fam.name}): texture {self.texture!r} not in {TEXTURES}")
        if self.depth_m is not None and not (math.isfinite(self.depth_m) and self.depth_m > 0):
            raise ValueError(f"ObjectSpec({fam.name}): depth_m must be finite and > 0, got {self.depth_m}")
        return fam


@dataclass
class SceneInstance:
    """An annotated (visible enough) object of a rendered scene."""

    category_id: int
    mask: np.ndarray  # uint8 [H, W] {0, 1}: visible pixels
    object_index: int  # index into Scene.objects
    visible_fraction: float  # visible pixels / pixels the object painted


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3] RGB
    instances: list[SceneInstance]
    objects: list[ObjectSpec]  # everything painted, in drawing order (random scenes: the sampled specs)
    depth: np.ndarray | None = None  # float32 [H, W] metres, when requested
    num_dropped: int = 0  # painted objects left out of `instances` (mostly occluded or tiny)
    drop_reasons: dict[str, int] = field(default_factory=dict)


def _affine(spec: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    """Unit-frame -> pixel map (A [2, 2], centre [2]): p = A @ (u, v) + c."""
    sx = spec.size / 2.0 * math.sqrt(spec.aspect)
    sy = spec.size / 2.0 / math.sqrt(spec.aspect)
    th = math.radians(spec.rotation_deg)
    # Counter-clockwise on screen with y pointing down.
    rot = np.array([[math.cos(th), math.sin(th)], [-math.sin(th), math.cos(th)]])
    return rot @ np.diag([sx, sy]), np.asarray(spec.center, np.float64)


def rasterize(spec: ObjectSpec, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] {0, 1} mask of one object alone (clipped to the image)."""
    fam = spec.validate()
    a, c = _affine(spec)
    mask = np.zeros((height, width), np.uint8)
    for poly, value in _GEOMETRY[fam.name]:
        pts = poly @ a.T + c - 0.5  # cv2 puts integer coordinates on pixel centres
        pts = np.round(pts * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [pts], int(value), lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def _texture(spec: ObjectSpec, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """RGB float values [N, 3] of the object's texture at pixel indices (ys, xs)."""
    c1 = np.asarray(spec.color, np.float32)
    if spec.texture == "solid":
        return np.broadcast_to(c1, (len(ys), 3))
    c2 = np.asarray(spec.color2 if spec.color2 is not None else 255 - c1, np.float32)
    a, c = _affine(spec)
    d = np.stack([xs + 0.5 - c[0], ys + 0.5 - c[1]], axis=1)
    uv = d @ np.linalg.inv(a).T  # object-frame coordinates, roughly in [-1, 1]
    trng = np.random.default_rng(spec.texture_seed)
    if spec.texture == "stripes":
        ang = trng.uniform(0, np.pi)
        freq = trng.uniform(2.0, 5.0)
        t = (np.sin(np.pi * freq * (uv[:, 0] * np.cos(ang) + uv[:, 1] * np.sin(ang))) > 0).astype(np.float32)
    elif spec.texture == "gradient":
        ang = trng.uniform(0, 2 * np.pi)
        t = np.clip((uv[:, 0] * np.cos(ang) + uv[:, 1] * np.sin(ang) + 1.0) / 2.0, 0.0, 1.0)
        t = t.astype(np.float32)
    else:  # noise: a coarse random grid in the object frame, bilinearly interpolated
        grid = trng.uniform(-1.0, 1.0, (12, 12)).astype(np.float32)
        gx = ((uv[:, 0] + 1.0) / 2.0 * 11.0).astype(np.float32).reshape(-1, 1)
        gy = ((uv[:, 1] + 1.0) / 2.0 * 11.0).astype(np.float32).reshape(-1, 1)
        n = cv2.remap(grid, gx, gy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).reshape(-1)
        return np.clip(c1[None, :] + 45.0 * n[:, None], 0, 255)
    return c1[None, :] * (1.0 - t[:, None]) + c2[None, :] * t[:, None]


def _background(rng: np.random.Generator, height: int, width: int, clutter: bool) -> np.ndarray:
    """uint8 RGB background: gradient + blurry noise blobs + pixel noise + lines (never annotated)."""
    if not clutter:
        return np.full((height, width, 3), 128, np.uint8)
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xx / width * np.cos(ang) + yy / height * np.sin(ang) + 1.0) / 2.0
    img = c1[None, None, :] * (1 - t[..., None]) + c2[None, None, :] * t[..., None]
    gh, gw = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    blobs = cv2.resize(
        rng.uniform(0, 255, (gh, gw, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    alpha = rng.uniform(0.2, 0.6)
    img = (1 - alpha) * img + alpha * blobs + rng.normal(0.0, rng.uniform(2.0, 10.0), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    side = min(height, width)
    for _ in range(int(rng.integers(1, 7))):
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, color, int(rng.integers(1, max(2, side // 64) + 1)), cv2.LINE_AA)
    return img


def _rgb(values: np.ndarray) -> tuple[int, int, int]:
    """Three channel values as an RGB tuple of ints."""
    r, g, b = (int(v) for v in values)
    return r, g, b


def random_object(
    rng: np.random.Generator,
    height: int,
    width: int,
    families: Sequence[str | int] | None = None,
    size_range: tuple[float, float] = (0.1, 0.5),
) -> ObjectSpec:
    """Sample one object: family, centre, size (fraction of the short side, log-uniform), rotation, aspect,
    saturated colour and texture. With the aspect range the extent spans roughly 8%..60% of the image side."""
    fams = resolve_families(families)
    fam = fams[int(rng.integers(0, len(fams)))]
    side = min(height, width)
    size = side * math.exp(rng.uniform(math.log(size_range[0]), math.log(size_range[1])))
    center = (float(rng.uniform(0.12, 0.88) * width), float(rng.uniform(0.12, 0.88) * height))
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(100, 255), rng.uniform(115, 255)]]], np.uint8)
    color = _rgb(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
    texture = TEXTURES[int(rng.choice(len(TEXTURES), p=_TEXTURE_PROBS))]
    return ObjectSpec(
        family=fam.name,
        center=center,
        size=float(size),
        rotation_deg=float(rng.uniform(0.0, 360.0)),
        aspect=float(math.exp(rng.uniform(math.log(0.65), math.log(1.55)))),
        color=color,
        texture=texture,
        color2=_rgb(rng.integers(0, 256, 3)),
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def build_scene(
    rng: np.random.Generator | int,
    height: int,
    width: int,
    *,
    objects: Sequence[ObjectSpec] | None = None,
    families: Sequence[str | int] | None = None,
    max_instances: int = 6,
    min_instances: int = 1,
    clutter: bool = True,
    return_depth: bool = False,
    background_depth_m: float = 3.0,
    min_visible_fraction: float = 0.3,
    min_area: int = 16,
    max_attempts: int = 20,
) -> Scene:
    """Render one scene and return everything about it (see `render_scene` for the short form).

    objects: explicit placements painted in order (video sequences); None = sample 1..max_instances
      random objects of `families`, re-drawing placements that would leave an object under-visible.
    rng: drives the background clutter (and the random objects); reuse the same seed every frame for a
      static background.
    Depth (return_depth): background plane at background_depth_m, each object a fronto-parallel plane at its
      depth_m, painted in drawing order like the RGB image. Objects without depth_m get depths decreasing
      with drawing order (0.8 -> 0.4 x background), so later objects are nearer.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if int(height) < 8 or int(width) < 8:
        raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
    height, width = int(height), int(width)
    if not (math.isfinite(background_depth_m) and background_depth_m > 0):
        raise ValueError(f"background_depth_m must be finite and > 0, got {background_depth_m}")
    image = _background(rng, height, width, clutter)
    painted: list[np.ndarray] = []  # full masks, drawing order
    if objects is None:
        if max_instances < 1 or min_instances < 0 or min_instances > max_instances:
            raise ValueError(
                f"need 0 <= min_instances <= max_instances, 1 <= max_instances: {min_instances}, {max_instances}"
            )
        specs: list[ObjectSpec] = []
        visible: list[np.ndarray] = []
        for _ in range(int(rng.integers(min_instances, max_instances + 1))):
            for _attempt in range(max_attempts):
                spec = random_object(rng, height, width, families)
                m = rasterize(spec, height, width)
                if int(m.sum()) < min_area:
                    continue
                ok = all(
                    np.count_nonzero(v & ~m) >= max(min_area, min_visible_fraction * np.count_nonzero(p))
                    for v, p in zip(visible, painted, strict=True)
                )
                if ok:
                    visible = [v & ~m for v in visible] + [m.copy()]
                    specs.append(spec)
                    painted.append(m)
                    break
        depths = np.sort(rng.uniform(0.3, 0.9, len(specs)))[::-1] * background_depth_m
        specs = [dataclasses.replace(s, depth_m=float(d)) for s, d in zip(specs, depths, strict=True)]
    else:
        specs = list(objects)
        for s in specs:
            if not isinstance(s, ObjectSpec):
                raise TypeError(f"objects must be ObjectSpec, got {type(s).__name__}")
            s.validate()
        painted = [rasterize(s, height, width) for s in specs]

    n = len(specs)
    depth = np.full((height, width), background_depth_m, np.float32) if return_depth else None
    visible = [m.copy() for m in painted]
    for i, (spec, m) in enumerate(zip(specs, painted, strict=True)):
        ys, xs = np.nonzero(m)
        image[ys, xs] = np.clip(np.round(_texture(spec, ys, xs)), 0, 255).astype(np.uint8)
        for j in range(i):
            visible[j][ys, xs] = 0
        if depth is not None:
            default = background_depth_m * (0.8 - 0.4 * i / max(n - 1, 1))
            depth[ys, xs] = spec.depth_m if spec.depth_m is not None else default

    instances: list[SceneInstance] = []
    reasons: dict[str, int] = {}
    for i, (spec, m, v) in enumerate(zip(specs, painted, visible, strict=True)):
        full, vis = int(np.count_nonzero(m)), int(np.count_nonzero(v))
        reason = "tiny" if vis < min_area else "occluded" if vis < min_visible_fraction * full else ""
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
            log.debug("dropping object %d (%s): %d of %d pixels visible", i, reason, vis, full)
            continue
        instances.append(SceneInstance(resolve_family(spec.family).id, v, i, vis / full))
    dropped = sum(reasons.values())
    return Scene(image, instances, specs, depth, dropped, reasons)


def render_scene(
    rng: np.random.Generator | int,
    height: int,
    width: int,
    *,
    objects: Sequence[ObjectSpec] | None = None,
    families: Sequence[str | int] | None = None,
    max_instances: int = 6,
    clutter: bool = True,
    return_depth: bool = False,
    background_depth_m: float = 3.0,
    min_visible_fraction: float = 0.3,
) -> tuple:
    """Render a scene -> (image uint8 [H, W, 3] RGB, [(category_id, mask uint8 [H, W])...]) and, with
    return_depth=True, a third element: depth float32 [H, W] in metres. See `build_scene` for details and
    for per-object bookkeeping (which spec each mask belongs to, drop counts)."""
    scene = build_scene(
        rng,
        height,
        width,
        objects=objects,
        families=families,
        max_instances=max_instances,
        clutter=clutter,
        return_depth=return_depth,
        background_depth_m=background_depth_m,
        min_visible_fraction=min_visible_fraction,
    )
    pairs = [(inst.category_id, inst.mask) for inst in scene.instances]
    return (scene.image, pairs, scene.depth) if return_depth else (scene.image, pairs)


def encode_mask(mask: np.ndarray) -> dict:
    """uint8 [H, W] mask -> COCO compressed RLE with `counts` as str (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def generate_dataset(
    out_dir: str,
    num_images: int,
    height: int,
    width: int,
    seed: int,
    max_instances: int = 6,
    families: Sequence[str | int] | None = None,
    *,
    clutter: bool = True,
    image_format: str = "png",
    progress: bool = False,
) -> str:
    """Write a COCO dataset (out_dir/images/NNNNNN.png + out_dir/annotations.json); returns the JSON path.

    Image i is rendered from its own child seed of `seed` (numpy SeedSequence.spawn), so a dataset is
    byte-identical for the same arguments and its first n images do not depend on num_images. `categories`
    always lists all families, so datasets restricted with `families=` share category ids. Images are
    written first and the JSON last (both atomically): a JSON on disk means a complete dataset.
    COCO `file_name` is relative to out_dir/images.
    """
    if int(num_images) < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("png", "jpg"):
        raise ValueError(f"image_format must be png or jpg, got {image_format!r}")
    fams = resolve_families(families)
    image_dir = os.path.join(out_dir, "images")
    makedirs(image_dir)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    params = [int(cv2.IMWRITE_PNG_COMPRESSION), 3] if fmt == "png" else [int(cv2.IMWRITE_JPEG_QUALITY), 95]
    children = np.random.SeedSequence(int(seed)).spawn(int(num_images))
    for idx, child in enumerate(tqdm(children, desc="synthetic", unit="img", disable=not progress)):
        image_id = idx + 1
        scene = build_scene(
            np.random.default_rng(child),
            height,
            width,
            families=[f.id for f in fams],
            max_instances=max_instances,
            clutter=clutter,
        )
        name = f"{image_id:06d}.{fmt}"
        ok, buf = cv2.imencode(f".{fmt}", cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise RuntimeError(f"cv2 could not encode {name}")
        atomic_write_bytes(os.path.join(image_dir, name), buf.tobytes())
        images.append({"id": image_id, "file_name": name, "height": int(height), "width": int(width)})
        for inst in scene.instances:
            rle = encode_mask(inst.mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": inst.category_id,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {
            "description": "shapemask_ros synthetic shapes",
            "seed": int(seed),
            "families": [f.name for f in fams],
            "max_instances": int(max_instances),
        },
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(),
    }
    path = os.path.join(out_dir, "annotations.json")
    atomic_write_text(path, json.dumps(data))
    return path
