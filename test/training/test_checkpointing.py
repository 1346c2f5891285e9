"""Checkpoints keyed by variable path: every variable round-trips, also for layer names with dots."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from shapemask_training.checkpointing import checkpoint_for, restore_model

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="blocks.0.depthwise_conv")(inp)  # EfficientNet-style dotted names
    x = keras.layers.BatchNormalization(name="blocks.0.bn1")(x)
    x = keras.layers.Conv2D(2, 1, name="plain_conv")(x)
    model = keras.Model(inp, x)
    model.get_layer("blocks.0.bn1").trainable = False  # frozen weights must be saved too
    return model


def test_dotted_and_frozen_variables_round_trip(tmp_path):
    a, b = _model(0), _model(1)
    path = checkpoint_for(a).save(str(tmp_path / "ckpt"))
    restore_model(b, path)
    for va, vb in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))


def test_restore_refuses_a_checkpoint_of_another_model(tmp_path):
    a = _model(0)
    path = checkpoint_for(a).save(str(tmp_path / "ckpt"))
    inp = keras.Input((8, 8, 3))
    other = keras.Model(inp, keras.layers.Conv2D(4, 3, name="blocks.9.other")(inp))
    with pytest.raises(ValueError, match="lacks 2 model variables"):
        restore_model(other, path)
