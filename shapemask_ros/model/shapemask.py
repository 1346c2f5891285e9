"""The assembled ShapeMask model and its two inference modes.

- `call({"image", "mask_boxes", "mask_classes"[, "mask_valid"]}, training)`: everything training needs
  (`mask_valid` [B, N]: the slots whose features make the mask heads' batch-norm statistics).
- `detect_and_segment(image)`: RetinaNet boxes -> masks.
- `segment_boxes(image, boxes, classes)`: given boxes (an external detector / ground truth) -> masks.
Images are float32 RGB in 0..255, already resized + padded to the square input size.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from shapemask_ros.config.model_config import ModelConfig
from shapemask_ros.model.anchors import anchors_per_location, generate_anchors
from shapemask_ros.model.backbone import backbone_feature_centres, build_backbone, preprocess_images
from shapemask_ros.model.fpn import FPN, pyramid_centres
from shapemask_ros.model.mask_heads import CoarseMaskHead, FineMaskHead, ShapePriorHead
from shapemask_ros.model.retinanet_head import RetinaNetHead
from shapemask_ros.model.roi_sampling import assign_levels, multilevel_crop, outer_boxes

DETAIL_LEVEL = 2  # the stride-4 backbone map read by `mask.detail_features`


class ShapeMask(keras.Model):
    """RetinaNet (ResNet-FPN) detector + ShapeMask mask branch."""

    def __init__(self, cfg: ModelConfig, pretrained_backbone: bool = False, **kwargs):
        super().__init__(name="shapemask", **kwargs)
        self.cfg = cfg
        a, m, d = cfg.anchors, cfg.mask, cfg.detector
        self.levels = list(range(a.min_level, a.max_level + 1))
        self.num_mask_classes = cfg.num_mask_classes
        self.backbone = build_backbone(
            cfg.backbone, cfg.image_size, pretrained=pretrained_backbone, with_c2=m.detail_features
        )
        self.fpn = FPN(d.fpn_channels, a.min_level, a.max_level, name="fpn")
        # where cell 0 of each pyramid level sits in the input: the ROI crop samples features there
        if m.feature_alignment not in ("measured", "naive"):
            raise ValueError(f"mask.feature_alignment must be 'measured' or 'naive', got {m.feature_alignment!r}")
        c_centres = backbone_feature_centres(cfg.backbone.name, cfg.image_size)
        self.level_centres = (
            pyramid_centres(c_centres, cfg.image_size, a.max_level)
            if m.feature_alignment == "measured"
            else None  # the ablation: multilevel_crop's stride / 2
        )
        # detail_features: C2 (stride 4) projected to the mask width, cropped like the pyramid, added to the
        # fine head's input. Zero-initialised: training starts from the plain ShapeMask fine head.
        self.detail_centres = (
            {DETAIL_LEVEL: c_centres[DETAIL_LEVEL]} if m.feature_alignment == "measured" else None
        )  # None: multilevel_crop's stride / 2, as for the pyramid
        self.detail_projection = (
            layers.Conv2D(m.channels, 1, kernel_initializer="zeros", name="detail_projection")
            if m.detail_features
            else None
        )
        self.head = RetinaNetHead(
            d.num_classes,
            anchors_per_location(a),
            self.levels,
            d.head_convs,
            d.head_channels,
            name="retinanet_head",
        )
        # 1x1 projection 256 -> mask channels. It is linear and bilinear weights sum to 1, so projecting
        # the pyramid before cropping equals projecting each crop, and is cheaper for more than a few boxes.
        self.mask_projection = layers.Conv2D(m.channels, 1, name="mask_projection")
        self.prior_head = ShapePriorHead(
            self.num_mask_classes, m.num_priors, m.crop_size, m.use_shape_prior, name="prior_head"
        )
        self.coarse_head = CoarseMaskHead(self.num_mask_classes, m.channels, m.num_convs, name="coarse_head")
        self.fine_head = FineMaskHead(
            self.num_mask_classes,
            m.channels,
            m.num_convs,
            m.upsample_factor,
            m.use_instance_embedding,
            name="fine_head",
        )
        self.anchor_boxes = generate_anchors(cfg.image_size, a)

    # ----------------------------------------------------------------- pieces
    def preprocess(self, images):
        return preprocess_images(self.cfg.backbone.name, images)

    def features(self, images, training=False):
        """{level: P_level} for the anchor levels, plus {2: C2} when the mask branch reads detail features."""
        cs = self.backbone(self.preprocess(images), training=training)
        feats = self.fpn(list(cs[-3:]), training=training)
        if self.detail_projection is not None:
            feats[DETAIL_LEVEL] = cs[0]
        return feats

    def mask_branch(self, feats, boxes, classes, training=False, valid=None):
        """boxes [B, N, 4] tight boxes (input pixels), classes [B, N] int -> dict of [B, N, ...] tensors.

        valid [B, N] (training): only these slots feed the mask heads' batch-norm statistics, so padded
        slots (constant patches) do not change them; None = all slots (inference uses moving statistics).
        """
        m = self.cfg.mask
        boxes = ops.cast(boxes, "float32")
        b = ops.shape(boxes)[0]
        outer = outer_boxes(boxes, self.cfg.image_size, self.cfg.image_size, m.outer_box_scale)
        levels = assign_levels(outer, self.levels[0], self.levels[-1], m.canonical_size, m.canonical_level)
        proj = {l: self.mask_projection(feats[l]) for l in self.levels}
        x = multilevel_crop(proj, outer, levels, m.crop_size, self.level_centres)  # [B, N, n, n, Cm]
        n, cm = m.crop_size, m.channels
        x = ops.reshape(x, (-1, n, n, cm))
        flat_boxes = ops.reshape(boxes, (-1, 4))
        flat_outer = ops.reshape(outer, (-1, 4))
        cls = ops.reshape(ops.cast(classes, "int32"), (-1,))
        if self.num_mask_classes == 1:
            cls = ops.zeros_like(cls)
        # equality instead of one_hot: exports to Equal + Cast, parsed by every TensorRT version
        onehot = ops.cast(
            ops.equal(
                ops.clip(cls, 0, self.num_mask_classes - 1)[:, None],
                ops.arange(self.num_mask_classes, dtype="int32")[None, :],
            ),
            "float32",
        )
        slots = None if valid is None else ops.reshape(ops.cast(valid, "float32") > 0.5, (-1,))
        prior, _ = self.prior_head(x, flat_boxes, flat_outer, onehot)
        coarse = self.coarse_head(x, prior, onehot, training=training, slot_mask=slots)
        fine_x = x
        if self.detail_projection is not None:
            detail = {DETAIL_LEVEL: self.detail_projection(feats[DETAIL_LEVEL])}
            at_detail = ops.full_like(levels, DETAIL_LEVEL)
            fine_x = x + ops.reshape(multilevel_crop(detail, outer, at_detail, n, self.detail_centres), (-1, n, n, cm))
        fine = self.fine_head(fine_x, coarse, onehot, training=training, slot_mask=slots)
        fs = n * m.upsample_factor
        # -1 (not the computed box count) keeps the reshape valid for zero boxes in exported graphs
        return {
            "prior": ops.reshape(prior, (b, -1, n, n)),
            "coarse_logits": ops.reshape(coarse, (b, -1, n, n)),
            "fine_logits": ops.reshape(fine, (b, -1, fs, fs)),
            "outer_boxes": outer,
        }

    # ----------------------------------------------------------------- modes
    def call(self, inputs, training=False):
        feats = self.features(inputs["image"], training=training)
        cls, box = self.head(feats, training=training)
        out = {"cls_outputs": cls, "box_outputs": box}
        if "mask_boxes" in inputs:
            out.update(
                self.mask_branch(
                    feats, inputs["mask_boxes"], inputs["mask_classes"], training, inputs.get("mask_valid")
                )
            )
        return out

    def segment_boxes(self, images, boxes, classes):
        """Given boxes -> {"masks": [B,N,M,M] probabilities in the outer-box frame, "outer_boxes"}."""
        feats = self.features(images, training=False)
        out = self.mask_branch(feats, boxes, classes, training=False)
        return {"masks": ops.sigmoid(out["fine_logits"]), "outer_boxes": out["outer_boxes"]}

    def detect_and_segment(self, images):
        """Image -> detections + masks. With batch 1 the outputs are cut to the detections found."""
        from shapemask_ros.model.postprocess import detect

        feats = self.features(images, training=False)
        cls, box = self.head(feats, training=False)
        boxes, scores, classes, num = detect(
            cls, box, ops.convert_to_tensor(self.anchor_boxes), self.cfg.postprocess, self.cfg.image_size
        )
        if images.shape[0] == 1:
            boxes, scores, classes = boxes[:, : num[0]], scores[:, : num[0]], classes[:, : num[0]]
        mask_classes = classes if self.num_mask_classes > 1 else ops.zeros_like(classes)
        out = self.mask_branch(feats, boxes, mask_classes, training=False)
        return {
            "boxes": boxes,
            "scores": scores,
            "classes": classes,
            "num_detections": num,
            "masks": ops.sigmoid(out["fine_logits"]),
            "outer_boxes": out["outer_boxes"],
        }

    def set_priors(self, priors: np.ndarray) -> None:
        """Load fixed shape priors [C, K, n, n] (validated against the configuration)."""
        priors = np.asarray(priors, np.float32)
        want = tuple(self.prior_head.priors.shape)
        if priors.shape != want:
            raise ValueError(f"priors have shape {priors.shape}, the model expects {want}")
        if not np.all(np.isfinite(priors)):
            raise ValueError("priors contain non-finite values")
        self.prior_head.priors.assign(priors)


def build_model(cfg: ModelConfig, priors: np.ndarray | None = None, pretrained_backbone: bool = False) -> ShapeMask:
    """Create the model and its weights (one dummy call), optionally loading shape priors.

    pretrained_backbone: load the backbone's ImageNet weights (`backbone.weights` / `weights_path`); only
    training needs them, everything else restores a checkpoint.
    """
    model = ShapeMask(cfg, pretrained_backbone=pretrained_backbone)
    s = cfg.image_size
    model(
        {
            "image": np.zeros((1, s, s, 3), np.float32),
            "mask_boxes": np.array([[[0, 0, s / 2, s / 2]]], np.float32),
            "mask_classes": np.zeros((1, 1), np.int32),
        },
        training=False,
    )
    if priors is not None:
        model.set_priors(priors)
    elif cfg.mask.priors_path:
        from shapemask_ros.utils.io import load_npy

        model.set_priors(load_npy(cfg.mask.priors_path))
    return model
