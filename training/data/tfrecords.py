"""`shapemask make-tfrecords`: COCO instances JSON + image folder -> sharded TFRecords.

One `tf.train.Example` per image:
  image/encoded      the original JPEG/PNG bytes (other formats, or images TF cannot decode but OpenCV can,
                     are re-encoded losslessly as PNG and counted)
  image/format       b"jpeg" | b"png"
  image/height, image/width, image/source_id (COCO image id), image/filename
  image/object/class/label     COCO category ids [N] int64
  image/object/bbox/{x1,y1,x2,y2}   float pixel boxes, clipped to the image
  image/object/mask  one PNG per instance (full image size, 8-bit, values {0, 1})

Masks are stored as one PNG per instance rather than COCO RLE: deflate makes binary masks about as small
as RLE, and `tf.io.decode_png` decodes them in-graph (a plain TF op, also on TPU hosts), so the parser
needs no Python.

Shards `<out>-00000-of-00008.tfrecord` are filled round-robin; each is written under a temporary name and
renamed when complete (through `tf.io.gfile`, so `gs://` works). Images with no valid instance are still
written (the detector learns background) and counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from shapemask_ros.datasets.coco import SkipCounter, image_path, iter_coco, load_coco_json
from shapemask_ros.utils.io import atomic_write_text, read_bytes

log = logging.getLogger(__name__)

# Feature keys shared with shapemask_training.data.parser.
KEY_IMAGE = "image/encoded"
KEY_FORMAT = "image/format"
KEY_HEIGHT = "image/height"
KEY_WIDTH = "image/width"
KEY_SOURCE_ID = "image/source_id"
KEY_FILENAME = "image/filename"
KEY_CLASS = "image/object/class/label"
KEY_X1 = "image/object/bbox/x1"
KEY_Y1 = "image/object/bbox/y1"
KEY_X2 = "image/object/bbox/x2"
KEY_Y2 = "image/object/bbox/y2"
KEY_MASK = "image/object/mask"

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def shard_path(out_prefix: str, index: int, num_shards: int) -> str:
    """Path of shard `index` of `num_shards`: `<out_prefix>-00003-of-00008.tfrecord`."""
    return f"{out_prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def encode_mask_png(mask: np.ndarray) -> bytes:
    """uint8 {0, 1} mask [H, W] -> PNG bytes (8-bit grayscale, maximum deflate)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(mask, dtype=np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError("PNG encoding of a mask failed")
    return buf.tobytes()


def _prepare_image(data: bytes, height: int, width: int) -> tuple[bytes, str, str]:
    """Check `data` decodes to (height, width) the way the parser decodes it.

    Returns (bytes to store, format, status) with status "ok" | "reencoded" | "unreadable" |
    "size_mismatch". JPEG/PNG that TF decodes are kept byte for byte.
    """
    fmt = "jpeg" if data.startswith(_JPEG_MAGIC) else "png" if data.startswith(_PNG_MAGIC) else ""
    shape = None
    if fmt:
        try:
            shape = tuple(tf.io.decode_image(data, channels=3, expand_animations=False).shape[:2])
        except tf.errors.OpError:
            shape = None
    if shape is None:
        # Other formats (BMP, TIFF, ...) or e.g. CMYK JPEGs: let OpenCV decode, store lossless PNG.
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            return b"", "", "unreadable"
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            return b"", "", "unreadable"
        data, fmt, shape = buf.tobytes(), "png", img.shape[:2]
        status = "reencoded"
    else:
        status = "ok"
    if shape != (height, width):
        return b"", "", "size_mismatch"
    return data, fmt, status


def _bytes_list(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int_list(values: list[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _float_list(values: list[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def make_example(
    image_bytes: bytes,
    image_format: str,
    height: int,
    width: int,
    image_id: int,
    filename: str,
    category_ids: list[int],
    boxes_xyxy: np.ndarray,
    mask_pngs: list[bytes],
) -> tf.train.Example:
    """Build one image's `tf.train.Example` (boxes [N, 4] float pixels, one PNG per instance)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    if not (len(category_ids) == boxes.shape[0] == len(mask_pngs)):
        raise ValueError("category_ids, boxes and masks must have the same length")
    feature = {
        KEY_IMAGE: _bytes_list([image_bytes]),
        KEY_FORMAT: _bytes_list([image_format.encode()]),
        KEY_HEIGHT: _int_list([int(height)]),
        KEY_WIDTH: _int_list([int(width)]),
        KEY_SOURCE_ID: _int_list([int(image_id)]),
        KEY_FILENAME: _bytes_list([filename.encode("utf-8")]),
        KEY_CLASS: _int_list([int(c) for c in category_ids]),
        KEY_X1: _float_list(boxes[:, 0].tolist()),
        KEY_Y1: _float_list(boxes[:, 1].tolist()),
        KEY_X2: _float_list(boxes[:, 2].tolist()),
        KEY_Y2: _float_list(boxes[:, 3].tolist()),
        KEY_MASK: _bytes_list(mask_pngs),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_tfrecords(
    annotations_path: str,
    image_dir: str,
    out_prefix: str,
    num_shards: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert a COCO instances file and its images into `num_shards` TFRecord shards.

    Returns stats: images_written, instances_written, images_without_instances, skipped (reason -> count:
    the annotation reasons of `iter_coco` plus missing_image / unreadable_image / image_size_mismatch),
    reencoded_images, shards (paths), category_ids. The same stats (with category names) are written to
    `<out_prefix>-meta.json`.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    categories = sorted(load_coco_json(annotations_path)["categories"], key=lambda c: c["id"])
    out_dir = os.path.dirname(out_prefix)
    if out_dir:
        tf.io.gfile.makedirs(out_dir)
    paths = [shard_path(out_prefix, i, num_shards) for i in range(num_shards)]
    tmp_paths = [f"{p}.tmp-{os.getpid()}" for p in paths]
    counter = SkipCounter()
    stats: dict[str, Any] = {
        "images_written": 0,
        "instances_written": 0,
        "images_without_instances": 0,
        "reencoded_images": 0,
    }
    writers = [tf.io.TFRecordWriter(p) for p in tmp_paths]
    try:
        records = iter_coco(annotations_path, counter)
        for rec in tqdm(records, desc="make-tfrecords", unit="img", disable=not progress):
            path = image_path(image_dir, rec)
            if not tf.io.gfile.exists(path):
                counter.skip("missing_image", path)
                continue
            try:
                raw = read_bytes(path)
            except (OSError, tf.errors.OpError) as e:
                counter.skip("unreadable_image", f"{path}: {e}")
                continue
            data, fmt, status = _prepare_image(raw, rec.height, rec.width)
            if status == "unreadable":
                counter.skip("unreadable_image", path)
                continue
            if status == "size_mismatch":
                counter.skip("image_size_mismatch", f"{path}: annotated {rec.height}x{rec.width}")
                continue
            stats["reencoded_images"] += status == "reencoded"
            inst = rec.instances
            boxes = np.stack([i.bbox_xyxy for i in inst]) if inst else np.zeros((0, 4))
            example = make_example(
                data,
                fmt,
                rec.height,
                rec.width,
                rec.image_id,
                rec.file_name,
                [i.category_id for i in inst],
                boxes,
                [encode_mask_png(i.mask) for i in inst],
            )
            writers[stats["images_written"] % num_shards].write(example.SerializeToString())
            stats["images_written"] += 1
            stats["instances_written"] += len(inst)
            stats["images_without_instances"] += not inst
        for w in writers:
            w.close()
        for tmp, final in zip(tmp_paths, paths, strict=True):
            tf.io.gfile.rename(tmp, final, overwrite=True)
    except BaseException:
        for w in writers:
            w.close()
        for tmp in tmp_paths:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)
        raise
    stats["skipped"] = dict(sorted(counter.items()))
    stats["shards"] = paths
    stats["category_ids"] = [int(c["id"]) for c in categories]
    meta = dict(stats, category_names=[str(c.get("name", c["id"])) for c in categories])
    atomic_write_text(f"{out_prefix}-meta.json", json.dumps(meta, indent=2))
    log.info(
        "wrote %d images (%d instances) to %d shards; skipped %s",
        stats["images_written"],
        stats["instances_written"],
        num_shards,
        stats["skipped"],
    )
    return stats


def add_tfrecords_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask make-tfrecords`."""
    parser.add_argument("--annotations", required=True, help="COCO instances JSON (local or gs://)")
    parser.add_argument("--images", required=True, help="image directory the JSON's file_names are relative to")
    parser.add_argument("--out", required=True, help="output prefix, e.g. gs://bucket/coco/train")
    parser.add_argument("--shards", type=int, default=8, help="number of shards (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_make_tfrecords(args: argparse.Namespace) -> int:
    """Run `make-tfrecords` from parsed arguments; prints the stats as JSON. Returns the exit code."""
    stats = write_tfrecords(
        args.annotations,
        args.images,
        args.out,
        num_shards=args.shards,
        progress=not getattr(args, "no_progress", False),
    )
    print(json.dumps(stats, indent=2))
    return 0
