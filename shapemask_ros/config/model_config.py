"""The model's configuration: backbone, anchors, detector, postprocessing and the ShapeMask mask branch.

The one source of the model's defaults (they follow the ShapeMask paper / tensorflow/tpu ShapeMask; see
docs/shapemask_spec.md in shared docs). YAML files only override them (`shapemask_ros.config.loading.merge`;
an experiment's `model:` section, `load_model_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BackboneConfig:
    """Feature extractor producing C3..C5."""

    name: str = "resnet50"  # efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2 | resnet50 | resnet101 | tiny
    # Pretrained initialisation, used when training starts (checkpoints hold every weight afterwards):
    # weights: "imagenet" = Keras downloads its ImageNet weights (needs internet); None = none.
    weights: str | None = None
    # or a local ImageNet weights file: .h5 / .weights.h5 (ResNet), .npz from `shapemask convert-backbone`
    # (EfficientNet-Lite)
    weights_path: str | None = None
    # Frozen layers must start from pretrained weights: training refuses a frozen random stem.
    freeze_stem_and_stage1: bool = True
    freeze_all: bool = False  # whole backbone frozen (weights and BN statistics): small data, CPU training
    tiny_filters: tuple[int, ...] = (16, 32, 64, 128)  # channels of the 4 stages of the `tiny` backbone


@dataclass
class AnchorConfig:
    min_level: int = 3
    max_level: int = 7
    num_scales: int = 3
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    anchor_size: float = 4.0
    match_iou: float = 0.5


@dataclass
class DetectorConfig:
    fpn_channels: int = 256
    head_convs: int = 4
    head_channels: int = 256
    num_classes: int = 80  # detector classes (mask classes may be 1: class-agnostic)
    focal_alpha: float = 0.4
    focal_gamma: float = 1.5
    huber_delta: float = 0.15
    box_loss_weight: float = 50.0


@dataclass
class PostprocessConfig:
    pre_nms_top_k: int = 5000  # per class
    nms_iou: float = 0.5
    score_threshold: float = 0.05
    max_detections: int = 100


@dataclass
class MaskConfig:
    """ShapeMask mask branch."""

    class_agnostic: bool = True  # C = 1 mask class
    num_priors: int = 100  # K per mask class (paper: ~100 agnostic, ~20 class-specific)
    priors_path: str | None = None  # [C, K, 32, 32] float32 .npy; None = box priors until loaded
    channels: int = 128  # mask-branch width: 128 / 64 / 32 / 16
    crop_size: int = 32
    upsample_factor: int = 4  # fine mask = crop_size * upsample_factor (128)
    num_convs: int = 4
    outer_box_scale: float = 1.25
    canonical_size: float = 224.0  # level = floor(log2(sqrt(area)/224)) + 4
    canonical_level: int = 4
    use_shape_prior: bool = True  # ablation: False = uniform box prior
    use_instance_embedding: bool = True  # ablation: False = no centering in the fine head
    # The fine head also reads the backbone's stride-4 map (C2, through a 1x1 projection): at small input
    # sizes most boxes crop P3 (stride 8), too coarse for object boundaries. Not in the paper.
    detail_features: bool = False
    # ablations of two fixes (issue 12), for measuring what each moved; keep the defaults otherwise
    feature_alignment: str = "measured"  # "measured" = the backbone's cell centres; "naive" = stride*(i+0.5)
    loss_normalisation: str = "foreground"  # "foreground" = reference; "mean" = per-pixel mean per instance
    prior_loss_weight: float = 0.1
    coarse_loss_weight: float = 1.0
    fine_loss_weight: float = 1.0


@dataclass
class ModelConfig:
    image_size: int = 640  # square, fixed input (images are resized + padded)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)

    @property
    def num_mask_classes(self) -> int:
        return 1 if self.mask.class_agnostic else self.detector.num_classes
