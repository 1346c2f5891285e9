"""tf.data input pipeline: TFRecords (from `shapemask_training.data.tfrecords`) -> ShapeMask training / eval batches.

Every tensor in a batch has a static shape (fixed image size S, `max_boxes` padded ground truth, a fixed
number of sampled mask instances, fixed batch size), as TPUs need. Batch dict (B = batch size,
N = data_cfg.max_instances, M = data_cfg.max_boxes, c = mask.crop_size, f = c * mask.upsample_factor):

  image             [B, S, S, 3] float32 RGB 0..255, resized to fit S (random scale in training), randomly
                    cropped when larger (training), zero-padded bottom/right
  image_info        [B, 4] float32 (orig_h, orig_w, scale, 0): boxes_input = boxes_orig * scale
                    (minus the random crop offset in training)
  gt_boxes          [B, M, 4] float32 xyxy input pixels; padding 0
  gt_classes        [B, M] int32 contiguous class index (position in `category_ids`); padding -1
  mask_boxes        [B, N, 4] sampled instances' boxes (jittered in training); padding 0
  mask_outer_boxes  [B, N, 4] outer box of `mask_boxes` (scale mask.outer_box_scale), clipped to S x S
  mask_classes      [B, N] int32 contiguous class index; padding 0 (safe to gather with; see mask_valid)
  mask_targets      [B, N, c, c] float32 {0, 1}: instance mask over the outer box (bin-centre grid)
  fine_mask_targets [B, N, f, f] float32 {0, 1}
  mask_valid        [B, N] float32: 1 = real instance whose class is in data_cfg.mask_split
  image_id          [B] int64, eval batches only; -1 marks padding examples of the last eval batch

Instances whose category id is not in `category_ids` are treated as background.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from shapemask_ros.config.model_config import ModelConfig
from shapemask_ros.datasets.category_splits import mask_split_ids
from shapemask_ros.model.roi_sampling import outer_boxes
from shapemask_training.config import DataConfig
from shapemask_training.data import tfrecords as rec
from shapemask_training.data.targets import (
    clip_boxes_tf,
    cut_boxes_tf,
    jitter_boxes_tf,
    keep_min_size,
    mask_targets,
)

log = logging.getLogger(__name__)

_HASH_BUCKETS = 1 << 30


def subsample_keep(image_ids: tf.Tensor, fraction: float) -> tf.Tensor:
    """Deterministic image-id subsampling: True where an id's hash falls below `fraction`.

    The hash (FarmHash Fingerprint64 of the decimal id) is stable across runs and machines, and a smaller
    fraction's subset is contained in every larger fraction's subset.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"subsample_fraction must be in (0, 1], got {fraction}")
    ids = tf.strings.as_string(tf.cast(image_ids, tf.int64))
    bucket = tf.strings.to_hash_bucket_fast(ids, _HASH_BUCKETS)
    return bucket < int(round(fraction * _HASH_BUCKETS))


_FEATURES = {
    rec.KEY_IMAGE: tf.io.FixedLenFeature([], tf.string),
    rec.KEY_SOURCE_ID: tf.io.FixedLenFeature([], tf.int64),
    rec.KEY_CLASS: tf.io.VarLenFeature(tf.int64),
    rec.KEY_X1: tf.io.VarLenFeature(tf.float32),
    rec.KEY_Y1: tf.io.VarLenFeature(tf.float32),
    rec.KEY_X2: tf.io.VarLenFeature(tf.float32),
    rec.KEY_Y2: tf.io.VarLenFeature(tf.float32),
    rec.KEY_MASK: tf.io.VarLenFeature(tf.string),
}


class _Parser:
    """Per-example decode + augmentation + targets (a tf.function body inside Dataset.map)."""

    def __init__(
        self,
        data_cfg: DataConfig,
        model_cfg: ModelConfig,
        is_training: bool,
        category_ids: tuple[int, ...],
    ) -> None:
        if not category_ids:
            raise ValueError("category_ids is empty: pass the dataset's COCO category ids")
        if len(set(category_ids)) != len(category_ids):
            raise ValueError("category_ids has duplicates")
        if data_cfg.scale_min <= 0 or data_cfg.scale_max < data_cfg.scale_min:
            raise ValueError(f"bad scale range [{data_cfg.scale_min}, {data_cfg.scale_max}]")
        self.data_cfg = data_cfg
        self.is_training = is_training
        self.size = int(model_cfg.image_size)
        self.crop = int(model_cfg.mask.crop_size)
        self.fine = int(model_cfg.mask.crop_size * model_cfg.mask.upsample_factor)
        self.outer_scale = float(model_cfg.mask.outer_box_scale)
        self.max_inst = int(data_cfg.max_instances)
        self.max_boxes = int(data_cfg.max_boxes)
        split = set(mask_split_ids(data_cfg.mask_split, tuple(category_ids)))
        self.class_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(category_ids, tf.int64), tf.range(len(category_ids), dtype=tf.int32)
            ),
            default_value=-1,
        )
        # in_split[contiguous index]; index -1 (unknown) is never looked up (those instances are dropped).
        self.in_split = tf.constant([c in split for c in category_ids], tf.bool)

    def __call__(self, serialized: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        s = self.size
        ex = tf.io.parse_single_example(serialized, _FEATURES)
        seeds = tf.random.experimental.stateless_split(seed, num=6)
        image = tf.io.decode_image(ex[rec.KEY_IMAGE], channels=3, expand_animations=False)
        shape = tf.shape(image)
        h, w = shape[0], shape[1]
        hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)

        classes = self.class_table.lookup(tf.sparse.to_dense(ex[rec.KEY_CLASS]))
        boxes = tf.stack([tf.sparse.to_dense(ex[k]) for k in (rec.KEY_X1, rec.KEY_Y1, rec.KEY_X2, rec.KEY_Y2)], 1)
        pngs = tf.sparse.to_dense(ex[rec.KEY_MASK])

        # Horizontal flip, in original pixels (x -> W - x).
        flip = tf.constant(False)
        if self.is_training and self.data_cfg.hflip:
            flip = tf.random.stateless_uniform([], seeds[0]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        boxes = tf.cond(
            flip,
            lambda: tf.stack([wf - boxes[:, 2], boxes[:, 1], wf - boxes[:, 0], boxes[:, 3]], 1),
            lambda: boxes,
        )

        # Resize to fit S x S (times a random scale in training), then random crop, then pad.
        scale = float(s) / tf.maximum(hf, wf)
        if self.is_training:
            scale *= tf.random.stateless_uniform([], seeds[1], self.data_cfg.scale_min, self.data_cfg.scale_max)
        new_h = tf.maximum(tf.cast(tf.round(hf * scale), tf.int32), 1)
        new_w = tf.maximum(tf.cast(tf.round(wf * scale), tf.int32), 1)
        image = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]), method="bilinear")
        off_y = tf.constant(0, tf.int32)
        off_x = tf.constant(0, tf.int32)
        if self.is_training:
            off_y = tf.random.stateless_uniform([], seeds[2], 0, tf.maximum(new_h - s, 0) + 1, dtype=tf.int32)
            off_x = tf.random.stateless_uniform([], seeds[5], 0, tf.maximum(new_w - s, 0) + 1, dtype=tf.int32)
        image = image[off_y : off_y + s, off_x : off_x + s, :]
        image = tf.image.pad_to_bounding_box(image, 0, 0, s, s)
        image = tf.clip_by_value(image, 0.0, 255.0)
        offset = tf.cast(tf.stack([off_x, off_y, off_x, off_y]), tf.float32)
        # Image content occupies [0, content_w] x [0, content_h] of the input; the rest is padding.
        content_h = tf.cast(tf.minimum(new_h - off_y, s), tf.float32)
        content_w = tf.cast(tf.minimum(new_w - off_x, s), tf.float32)
        boxes = boxes * scale - offset
        boxes = tf.stack(
            [
                tf.clip_by_value(boxes[:, 0], 0.0, content_w),
                tf.clip_by_value(boxes[:, 1], 0.0, content_h),
                tf.clip_by_value(boxes[:, 2], 0.0, content_w),
                tf.clip_by_value(boxes[:, 3], 0.0, content_h),
            ],
            1,
        )
        valid = (classes >= 0) & (boxes[:, 2] - boxes[:, 0] >= 1.0) & (boxes[:, 3] - boxes[:, 1] >= 1.0)

        # Detector ground truth: every valid instance, padded to max_boxes.
        gt_idx = tf.where(valid)[:, 0][: self.max_boxes]
        gt_boxes = _pad(tf.gather(boxes, gt_idx), self.max_boxes, 0.0)
        gt_classes = _pad(tf.gather(classes, gt_idx), self.max_boxes, -1)

        # Mask instances: valid ones, those in the mask split first (so partial supervision wastes no
        # slots), shuffled within each group in training.
        n = tf.shape(classes)[0]
        supervised = valid & tf.gather(self.in_split, tf.maximum(classes, 0))
        key = 2.0 * tf.cast(~valid, tf.float32) + tf.cast(~supervised, tf.float32)
        if self.is_training:
            key += tf.random.stateless_uniform([n], seeds[3], 0.0, 0.5)
        order = tf.argsort(key, stable=True)
        k = tf.minimum(tf.reduce_sum(tf.cast(valid, tf.int32)), self.max_inst)
        sel = order[:k]
        sel_boxes = tf.gather(boxes, sel)
        jitter_seed = seeds[4]
        if self.is_training and self.data_cfg.box_cut_prob > 0:
            # its own seeds split from the jitter's: configs without cuts keep every draw they had
            cut_seed, jitter_seed = tf.unstack(tf.random.experimental.stateless_split(seeds[4], num=2))
            sel_boxes = cut_boxes_tf(sel_boxes, self.data_cfg.box_cut_prob, self.data_cfg.box_cut_max, cut_seed)
            sel_boxes = keep_min_size(clip_boxes_tf(sel_boxes, s, s), s, s)
        if self.is_training and self.data_cfg.box_jitter_sigma > 0:
            sel_boxes = jitter_boxes_tf(sel_boxes, self.data_cfg.box_jitter_sigma, jitter_seed, s, s)
        sel_outer = outer_boxes(sel_boxes, s, s, self.outer_scale)

        # Decode only the sampled masks; the slots past k are zeros (fixed count for map_fn).
        sel_pngs = _pad(tf.gather(pngs, sel), self.max_inst, "")

        def decode(i: tf.Tensor) -> tf.Tensor:
            return tf.cond(
                i < k,
                lambda: tf.io.decode_png(sel_pngs[i], channels=1)[:, :, 0],
                lambda: tf.zeros(tf.stack([h, w]), tf.uint8),
            )

        masks = tf.map_fn(decode, tf.range(self.max_inst), fn_output_signature=tf.TensorSpec([None, None], tf.uint8))
        masks = tf.cast(masks > 0, tf.float32)
        masks = tf.cond(flip, lambda: tf.reverse(masks, axis=[2]), lambda: masks)
        # Sample the original-resolution mask at the outer box's bin centres mapped back to original
        # pixels: the same points as in the augmented input, but interpolated only once.
        outer_orig = (_pad(sel_outer, self.max_inst, 0.0) + offset) / scale
        coarse = mask_targets(masks, outer_orig, self.crop, zero_outside=True)
        fine = mask_targets(masks, outer_orig, self.fine, zero_outside=True)
        slot_real = tf.range(self.max_inst) < k

        out = {
            "image": tf.ensure_shape(image, [s, s, 3]),
            "image_info": tf.stack([hf, wf, scale, 0.0]),
            "gt_boxes": tf.ensure_shape(gt_boxes, [self.max_boxes, 4]),
            "gt_classes": tf.ensure_shape(gt_classes, [self.max_boxes]),
            "mask_boxes": tf.ensure_shape(_pad(sel_boxes, self.max_inst, 0.0), [self.max_inst, 4]),
            "mask_outer_boxes": tf.ensure_shape(_pad(sel_outer, self.max_inst, 0.0), [self.max_inst, 4]),
            "mask_classes": tf.ensure_shape(_pad(tf.gather(classes, sel), self.max_inst, 0), [self.max_inst]),
            "mask_targets": tf.ensure_shape(coarse * _slot(slot_real), [self.max_inst, self.crop, self.crop]),
            "fine_mask_targets": tf.ensure_shape(fine * _slot(slot_real), [self.max_inst, self.fine, self.fine]),
            "mask_valid": tf.ensure_shape(
                tf.cast(slot_real & _pad(tf.gather(supervised, sel), self.max_inst, False), tf.float32),
                [self.max_inst],
            ),
        }
        if not self.is_training:
            out["image_id"] = ex[rec.KEY_SOURCE_ID]
        return out


def _pad(x: tf.Tensor, size: int, value: float | int | str | bool) -> tf.Tensor:
    """Pad (or truncate) the first dimension of `x` to `size` with `value`."""
    x = x[:size]
    pad = [[0, size - tf.shape(x)[0]]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.pad(x, pad, constant_values=tf.constant(value, x.dtype))


def _slot(real: tf.Tensor) -> tf.Tensor:
    return tf.cast(real, tf.float32)[:, None, None]


def _source_id(serialized: tf.Tensor) -> tf.Tensor:
    return tf.io.parse_single_example(serialized, {rec.KEY_SOURCE_ID: tf.io.FixedLenFeature([], tf.int64)})[
        rec.KEY_SOURCE_ID
    ]


def build_dataset(
    file_pattern: str,
    data_cfg: DataConfig,
    model_cfg: ModelConfig,
    is_training: bool,
    batch_size: int,
    category_ids: tuple[int, ...],
    seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of ShapeMask inputs and targets from TFRecord shards matching `file_pattern`.

    Training: shards and examples shuffled, repeated forever, images subsampled by id hash
    (data_cfg.subsample_fraction), random flip / scale / crop / box jitter, drop_remainder=True.
    Eval: one pass in file order, no augmentation; the last batch is filled up with padding examples
    (image_id -1, no valid boxes) so every batch has `batch_size` elements. A `seed` makes the whole
    pipeline (order and augmentation) deterministic.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 < data_cfg.subsample_fraction <= 1.0:
        raise ValueError(f"subsample_fraction must be in (0, 1], got {data_cfg.subsample_fraction}")
    files = sorted(tf.io.gfile.glob(file_pattern)) if file_pattern else []
    # `prefix-*` also matches the writer's `prefix-meta.json` sidecar: never read it as records
    files = [f for f in files if not f.endswith("-meta.json")]
    if not files:
        raise ValueError(f"no TFRecord files match {file_pattern!r}")
    parser = _Parser(data_cfg, model_cfg, is_training, tuple(int(c) for c in category_ids))
    deterministic = seed is not None or not is_training

    ds = tf.data.Dataset.from_tensor_slices(files)
    if is_training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 16),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if is_training:
        fraction = float(data_cfg.subsample_fraction)
        if fraction < 1.0:
            ds = ds.filter(lambda x: subsample_keep(_source_id(x)[None], fraction)[0])
        ds = ds.shuffle(max(int(data_cfg.shuffle_buffer), 1), seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat()
    # One stateless seed pair per example: deterministic given `seed`, fresh randomness otherwise.
    seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
    ds = tf.data.Dataset.zip((ds, seeds))
    ds = ds.map(parser, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if not is_training and batch_size > 1:
        ds = ds.concatenate(tf.data.Dataset.from_tensors(_padding_example(ds.element_spec)).repeat(batch_size - 1))
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options)


def _padding_example(spec: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
    """An all-padding example matching `spec` (image_id -1, gt_classes -1, everything else 0)."""
    out = {}
    for name, sp in spec.items():
        value = -1 if name in ("image_id", "gt_classes") else 0
        out[name] = tf.fill(sp.shape, tf.constant(value, sp.dtype))
    return out
