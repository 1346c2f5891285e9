"""ShapeMask losses: RetinaNet focal + Huber box losses (targets matched in-graph) and the mask losses.

Normalisers are summed over replicas so a step under any tf.distribute strategy equals the step on
one device with the global batch.
"""

from __future__ import annotations

import tensorflow as tf

from shapemask_ros.config.model_config import ModelConfig
from shapemask_ros.model.anchors import encode_boxes


def _cross_replica_sum(x):
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def pairwise_iou(a, b):
    """a [A,4], b [G,4] -> [A,G]."""
    lt = tf.maximum(a[:, None, :2], b[None, :, :2])
    rb = tf.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = tf.reduce_prod(tf.maximum(rb - lt, 0.0), axis=-1)
    area_a = tf.reduce_prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = tf.reduce_prod(tf.maximum(b[:, 2:] - b[:, :2], 0.0), axis=-1)
    return inter / tf.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-8)


def match_anchors(anchors, gt_boxes, gt_classes, match_iou: float = 0.5):
    """One image. Returns (positive [A] bool, matched class [A] int32, box targets [A,4]).

    Anchors with IoU >= match_iou are positive; every valid ground truth also claims its best anchor
    (so small objects are never left without a positive).
    """
    valid = gt_classes >= 0
    iou = pairwise_iou(anchors, gt_boxes)
    iou = tf.where(valid[None, :], iou, -1.0)
    best_gt = tf.argmax(iou, axis=1, output_type=tf.int32)
    best_iou = tf.reduce_max(iou, axis=1)
    positive = best_iou >= match_iou
    # force-match: best anchor of each valid gt
    best_anchor = tf.argmax(iou, axis=0, output_type=tf.int32)  # [G]
    force = tf.logical_and(valid, tf.reduce_max(iou, axis=0) > 0.0)
    idx = tf.boolean_mask(best_anchor, force)
    gts = tf.boolean_mask(tf.range(tf.shape(gt_boxes)[0]), force)
    num_a = tf.shape(anchors)[0]
    positive = tf.logical_or(positive, tf.scatter_nd(idx[:, None], tf.ones_like(idx, tf.bool), [num_a]))
    best_gt = tf.tensor_scatter_nd_update(best_gt, idx[:, None], gts)
    matched_cls = tf.gather(gt_classes, best_gt)
    box_t = encode_boxes(tf.gather(gt_boxes, best_gt), anchors)
    return positive, matched_cls, box_t


def focal_loss(logits, targets, alpha: float, gamma: float):
    """Element-wise sigmoid focal loss."""
    p = tf.sigmoid(logits)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    p_t = targets * p + (1 - targets) * (1 - p)
    a_t = targets * alpha + (1 - targets) * (1 - alpha)
    return a_t * tf.pow(1.0 - p_t, gamma) * ce


def detection_losses(outputs, batch, anchors, cfg: ModelConfig):
    """Focal class loss and Huber box loss, both normalised by (#positives + 1) over the global batch."""
    d = cfg.detector
    cls_out = tf.cast(outputs["cls_outputs"], tf.float32)
    box_out = tf.cast(outputs["box_outputs"], tf.float32)
    pos, mcls, box_t = tf.map_fn(
        lambda a: match_anchors(anchors, a[0], a[1], cfg.anchors.match_iou),
        (batch["gt_boxes"], batch["gt_classes"]),
        fn_output_signature=(tf.bool, tf.int32, tf.float32),
    )
    posf = tf.cast(pos, tf.float32)
    num_pos = _cross_replica_sum(tf.reduce_sum(posf))
    cls_t = tf.one_hot(mcls, d.num_classes) * posf[..., None]
    cls_loss = tf.reduce_sum(focal_loss(cls_out, cls_t, d.focal_alpha, d.focal_gamma)) / (num_pos + 1.0)
    huber = tf.keras.losses.Huber(delta=d.huber_delta, reduction="none")
    err = huber(box_t[..., None], box_out[..., None])  # [B, A, 4]
    box_loss = tf.reduce_sum(err * posf[..., None]) / (4.0 * (num_pos + 1.0))
    return cls_loss, d.box_loss_weight * box_loss, num_pos


def mask_losses(outputs, batch, cfg: ModelConfig):
    """Prior MSE (0.1), coarse and fine sigmoid CE (1.0 each) with the reference normalisation.

    Each loss is summed over the pixels of the valid (supervised) sampled instances and divided by the
    number of their foreground target pixels, summed over the global batch (32x32 targets for the prior
    and coarse losses, 128x128 for the fine loss); the prior MSE carries a factor 1/2 (`tf.nn.l2_loss`).
    """
    m = cfg.mask
    if m.loss_normalisation == "mean":
        return _mean_mask_losses(outputs, batch, cfg)
    if m.loss_normalisation != "foreground":
        raise ValueError(f"mask.loss_normalisation must be 'foreground' or 'mean', got {m.loss_normalisation!r}")
    valid = tf.cast(batch["mask_valid"], tf.float32)[:, :, None, None]  # [B, N, 1, 1]
    t32 = tf.cast(batch["mask_targets"], tf.float32) * valid
    t128 = tf.cast(batch["fine_mask_targets"], tf.float32) * valid
    # Why: per-pixel means made the mask branch ~2-3x weaker against the detection losses than in
    # tensorflow/tpu (ShapemaskLoss / ShapemaskMseLoss), whose 0.1/1/1 weights assume this normaliser.
    fg32 = tf.maximum(_cross_replica_sum(tf.reduce_sum(t32)), 1.0)
    fg128 = tf.maximum(_cross_replica_sum(tf.reduce_sum(t128)), 1.0)
    prior = 0.5 * tf.reduce_sum(tf.square(outputs["prior"] - t32) * valid) / fg32
    coarse_ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=t32, logits=outputs["coarse_logits"])
    coarse = tf.reduce_sum(coarse_ce * valid) / fg32
    fine_ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=t128, logits=outputs["fine_logits"])
    fine = tf.reduce_sum(fine_ce * valid) / fg128
    return m.prior_loss_weight * prior, m.coarse_loss_weight * coarse, m.fine_loss_weight * fine


def _mean_mask_losses(outputs, batch, cfg: ModelConfig):
    """The pre-issue-12 normalisation (ablation only): per-pixel means, averaged over valid instances."""
    m = cfg.mask
    valid = tf.cast(batch["mask_valid"], tf.float32)  # [B, N]
    n_valid = tf.maximum(_cross_replica_sum(tf.reduce_sum(valid)), 1.0)
    t32 = tf.cast(batch["mask_targets"], tf.float32)
    t128 = tf.cast(batch["fine_mask_targets"], tf.float32)

    def per_instance(x):
        return tf.reduce_sum(tf.reduce_mean(x, axis=[2, 3]) * valid) / n_valid

    prior = per_instance(tf.square(outputs["prior"] - t32))
    coarse = per_instance(tf.nn.sigmoid_cross_entropy_with_logits(labels=t32, logits=outputs["coarse_logits"]))
    fine = per_instance(tf.nn.sigmoid_cross_entropy_with_logits(labels=t128, logits=outputs["fine_logits"]))
    return m.prior_loss_weight * prior, m.coarse_loss_weight * coarse, m.fine_loss_weight * fine


def weight_decay_loss(variables, weight_decay: float):
    """0.5 * wd * sum(w^2) over all trainable variables (as in the reference)."""
    if weight_decay <= 0 or not variables:
        return tf.constant(0.0)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])


def total_loss(outputs, batch, anchors, cfg: ModelConfig, variables, weight_decay: float):
    """All losses as a dict (each a replica-local share of the global-batch loss except weight decay)."""
    cls_l, box_l, num_pos = detection_losses(outputs, batch, anchors, cfg)
    prior_l, coarse_l, fine_l = mask_losses(outputs, batch, cfg)
    wd = weight_decay_loss(variables, weight_decay)
    ctx = tf.distribute.get_replica_context()
    replicas = ctx.num_replicas_in_sync if ctx is not None else 1
    # weight decay is identical on every replica: divide so the summed gradient counts it once
    total = cls_l + box_l + prior_l + coarse_l + fine_l + wd / replicas
    return {
        "total": total,
        "cls_loss": cls_l,
        "box_loss": box_l,
        "prior_loss": prior_l,
        "coarse_loss": coarse_l,
        "fine_loss": fine_l,
        "weight_decay": wd,
        "num_positives": num_pos,
    }
