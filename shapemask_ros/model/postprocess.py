"""Detection post-processing: decode, per-class top-k, per-class NMS, max detections (TF ops).

Per-class NMS runs as ONE NonMaxSuppression over class-offset boxes (boxes of different classes can
never overlap), which exports to a single ONNX NonMaxSuppression node that TensorRT supports.
"""

from __future__ import annotations

import tensorflow as tf

from shapemask_ros.config.model_config import PostprocessConfig
from shapemask_ros.model.anchors import decode_boxes


def detect_single(cls_logits, box_deltas, anchors, cfg: PostprocessConfig, image_size: int):
    """One image: cls_logits [A, C], box_deltas [A, 4] -> boxes [D,4], scores [D], classes [D], num ()."""
    num_anchors = anchors.shape[0]
    num_classes = cls_logits.shape[-1]
    d = cfg.max_detections
    k = min(cfg.pre_nms_top_k, num_anchors)
    scores = tf.sigmoid(tf.cast(cls_logits, tf.float32))
    boxes = tf.clip_by_value(decode_boxes(tf.cast(box_deltas, tf.float32), anchors), 0.0, float(image_size))
    top_scores, top_idx = tf.math.top_k(tf.transpose(scores), k=k)  # [C, k] per class
    cand = tf.gather(boxes, top_idx)  # [C, k, 4]
    offset = tf.reshape(tf.range(num_classes, dtype=tf.float32) * (2.0 * image_size + 1.0), (-1, 1, 1))
    flat_boxes = tf.reshape(cand + offset, (-1, 4))
    flat_scores = tf.reshape(top_scores, (-1,))
    keep = tf.image.non_max_suppression(
        flat_boxes,
        flat_scores,
        max_output_size=d,
        iou_threshold=cfg.nms_iou,
        score_threshold=cfg.score_threshold,
    )
    num = tf.shape(keep)[0]
    pad = d - num
    out_boxes = tf.pad(tf.gather(tf.reshape(cand, (-1, 4)), keep), [[0, pad], [0, 0]])
    out_scores = tf.pad(tf.gather(flat_scores, keep), [[0, pad]])
    out_classes = tf.pad(tf.cast(keep // k, tf.int32), [[0, pad]])
    return out_boxes, out_scores, out_classes, tf.cast(num, tf.int32)


def detect(cls_logits, box_deltas, anchors, cfg: PostprocessConfig, image_size: int):
    """Batched (static batch) -> boxes [B,D,4], scores [B,D], classes [B,D] int32, num_detections [B]."""
    outs = [detect_single(cls_logits[i], box_deltas[i], anchors, cfg, image_size) for i in range(cls_logits.shape[0])]
    return tuple(tf.stack(t, axis=0) for t in zip(*outs, strict=True))
