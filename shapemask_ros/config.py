"""Typed configuration: the one source of defaults for model, data, training and inference.

YAML files only override fields (`load_config`); unknown keys are an error so a typo never silently
falls back to a default. Defaults follow the ShapeMask paper / tensorflow/tpu ShapeMask (see
docs/shapemask_spec.md in shared docs).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from shapemask_ros.geometry.objects3d import GeometryConfig as _GeometryConfig

# COCO category ids of the 20 PASCAL VOC classes (the paper's VOC / non-VOC split).
VOC_CATEGORY_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72)


@dataclass
class BackboneConfig:
    """Feature extractor producing C3..C5."""

    name: str = "resnet50"  # efficientnet_lite0 | resnet50 | resnet101 | tiny
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


@dataclass
class DataConfig:
    train_pattern: str = ""  # TFRecord glob (local or gs://)
    eval_pattern: str = ""
    eval_annotations: str = ""  # COCO JSON for COCOeval
    max_instances: int = 8  # sampled ground-truth instances per image
    max_boxes: int = 100  # padded ground-truth boxes per image for the detector
    scale_min: float = 0.8
    scale_max: float = 1.2
    hflip: bool = True
    box_jitter_sigma: float = 0.1  # paper 0.1, tensorflow/tpu default 0.025; 0 disables
    mask_split: str = "all"  # all | voc | nonvoc | comma separated category ids: which classes get mask loss
    subsample_fraction: float = 1.0  # keep this fraction of training images (by image id hash)
    shuffle_buffer: int = 256
    # category id -> contiguous class index; filled from the dataset when empty
    category_ids: tuple[int, ...] = ()


@dataclass
class TrainConfig:
    batch_size: int = 64  # global batch
    steps: int = 45000
    learning_rate: float = 0.08
    warmup_steps: int = 500
    warmup_start_factor: float = 0.067
    lr_decay_steps: tuple[int, ...] = (30000, 40000)
    lr_decay_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    gradient_clip_norm: float = 0.0  # 0 = off
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 100
    seed: int = 0
    mixed_precision: str = "auto"  # auto (bfloat16 on TPU) | float32 | bfloat16 | mixed_float16
    tpu: str = ""  # TPU name/address: selects TPUStrategy


@dataclass
class ExperimentConfig:
    """Everything `shapemask train` needs; loaded from YAML overrides on these defaults."""

    name: str = "default"
    model_dir: str = "out/model"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated dataclass field type."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (inner, *_rest) = typing.get_args(tp)
        return tuple(_coerce(inner, v, where) for v in value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ValueError(f"{where}: expected int, got {value!r}")
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown config keys at '{where or cls.__name__}': {sorted(unknown)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def merge(base: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of dataclass `base` with nested `overrides` applied (unknown keys rejected)."""
    current = dataclasses.asdict(base)

    def deep(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = deep(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    return _from_dict(type(base), deep(current, overrides))


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load an ExperimentConfig: dataclass defaults <- YAML file (local or gs://) <- `overrides`."""
    cfg = ExperimentConfig()
    if path:
        from shapemask_ros.utils.io import read_text

        data = yaml.safe_load(read_text(path)) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        cfg = merge(cfg, data)
    if overrides:
        cfg = merge(cfg, overrides)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict form (tuples as lists) for writing YAML/JSON."""

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        return v

    return conv(dataclasses.asdict(cfg))


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


# NodeConfig's geometry_* defaults come from GeometryConfig so they are written down once.
_GEOMETRY_DEFAULTS = _GeometryConfig()


@dataclass
class NodeConfig:
    """Parameters of the ROS node and of `bag-eval` (same frame processor, same defaults).

    Every field is a ROS parameter of the same name; `config/segment_params.yaml` documents them.
    """

    model_path: str = ""  # model bundle directory; "" = the shipped default model (models/real_lite0)
    backend: str = "auto"  # auto | tensorrt | onnxruntime | tensorflow
    engine_cache_dir: str = ""  # "" = $XDG_CACHE_HOME/shapemask_ros/engines
    image_topic: str = "/camera/image_raw"  # sensor_msgs/Image, or .../compressed for CompressedImage
    detections_topic: str = "/detections"  # vision_msgs/Detection2DArray; "" = self-detection mode
    self_detect: bool = False  # use the model's own RetinaNet boxes (also used when detections_topic == "")
    image_qos_reliability: str = "best_effort"  # reliable | best_effort (camera drivers mostly best_effort)
    image_qos_depth: int = 2
    detections_qos_reliability: str = "reliable"
    detections_qos_depth: int = 10
    score_threshold: float = 0.3  # detections below are ignored
    mask_threshold: float = 0.5  # probability threshold of the pasted mask
    max_objects: int = 100
    class_filter: tuple[str, ...] = ()  # keep only these class ids (strings as in the detector); () = all
    detection_image_width: int = 0  # size of the image the detector saw; 0 = same as the camera image
    detection_image_height: int = 0
    sync_slop_s: float = 0.05  # approximate match window after exact-stamp matching
    detector_latency_s: float = 0.5  # longest expected detector delay; sizes the image cache
    expected_rate_hz: float = 30.0  # camera rate; image cache = ceil(rate * latency) + 2
    publish_label_image: bool = True  # mono16 instance labels on /shapemask/labels
    publish_refined_detections: bool = True  # vision_msgs/Detection2DArray on /shapemask/detections
    publish_overlay: bool = True  # debug overlay on /shapemask/overlay (only built when subscribed)
    no_input_warn_s: float = 5.0  # warn when publishers exist but nothing arrives (QoS mismatch)
    output_namespace: str = "/shapemask"
    # 3D outputs for grasp planners (docs/geometry.md): off while depth_topic is "".
    depth_topic: str = ""  # depth Image registered to the colour image (16UC1 mm, 32FC1 m); "" = no 3D
    camera_info_topic: str = ""  # CameraInfo of the depth image; "" = camera_info next to depth_topic
    depth_qos_reliability: str = "best_effort"  # reliable | best_effort (also hears reliable publishers)
    depth_qos_depth: int = 2
    camera_info_qos_reliability: str = "best_effort"  # reliable | best_effort
    camera_info_qos_depth: int = 2
    depth_registration: str = "none"  # none: colour size | scale: same optical frame, other resolution
    depth_rectified: bool = False  # depth is rectified (image_rect): use CameraInfo P, no distortion
    depth_wait_s: float = 0.1  # a ready frame waits this long for its depth image, then goes out without 3D
    publish_objects3d: bool = True  # shapemask_ros/ObjectGeometryArray on <output_namespace>/objects3d
    publish_points: bool = True  # PointCloud2 on <output_namespace>/points (built only when subscribed)
    # Defaults read from geometry.objects3d.GeometryConfig (one source); registration is depth_registration.
    geometry_min_points: int = _GEOMETRY_DEFAULTS.min_points  # fewer inlier points -> status too_few_points
    geometry_mad_k: float = _GEOMETRY_DEFAULTS.mad_k  # depth band half-width in robust sigmas; <= 0 = off
    geometry_min_band_m: float = _GEOMETRY_DEFAULTS.min_band_m  # depth band never narrower than +- this
    geometry_percentile_low: float = _GEOMETRY_DEFAULTS.percentile_low  # percentile band; 0 / 100 = off
    geometry_percentile_high: float = _GEOMETRY_DEFAULTS.percentile_high
    geometry_min_depth_m: float = _GEOMETRY_DEFAULTS.min_depth_m  # nearer readings are invalid; 0 = off
    geometry_max_depth_m: float = _GEOMETRY_DEFAULTS.max_depth_m  # farther readings are invalid; 0 = off
