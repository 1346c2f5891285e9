"""Training tests: loss decreases, resume after an interrupted run, MirroredStrategy step == one device."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from shapemask_training.checkpointing import save_checkpoint
from shapemask_training.run import load_trained_model
from shapemask_training.trainer import Trainer, WarmupStepSchedule
from support.batches import hand_batch
from support.configs import REPO, tiny_experiment, tiny_model_config

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def test_lr_schedule_warmup_and_steps():
    s = WarmupStepSchedule(0.08, 500, 0.1, (30000, 40000), 0.1)
    assert float(s(0)) == pytest.approx(0.008)
    assert float(s(250)) == pytest.approx(0.044)
    assert float(s(1000)) == pytest.approx(0.08)
    assert float(s(30000)) == pytest.approx(0.008)
    assert float(s(45000)) == pytest.approx(0.0008)


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    cfg = tiny_experiment(str(tmp_path), steps=40, learning_rate=0.02, checkpoint_every=1000)
    trainer = Trainer(cfg, strategy=tf.distribute.get_strategy())
    batch = hand_batch()
    first = {k: float(v) for k, v in trainer.train_step(batch).items()}
    for _ in range(39):
        last = {k: float(v) for k, v in trainer.train_step(batch).items()}
    assert last["total"] < 0.6 * first["total"]
    assert last["fine_loss"] < 0.7 * first["fine_loss"]
    assert last["cls_loss"] < first["cls_loss"]


@pytest.mark.slow
def test_resume_continues_from_the_saved_step(tmp_path):
    cfg = tiny_experiment(str(tmp_path), steps=6, checkpoint_every=2)
    ds = tf.data.Dataset.from_tensors(hand_batch()).repeat()

    class Crash(Exception):
        pass

    t1 = Trainer(cfg, strategy=tf.distribute.get_strategy())
    at_step_4 = {}

    def crash_at_5(step, _losses):
        if step == 4:
            at_step_4.update({v.path: v.numpy() for v in t1.model.variables})
        if step == 5:
            raise Crash()

    with pytest.raises(Crash):
        t1.train(ds, progress=False, on_step=crash_at_5)
    # a differently seeded model: nothing may match by accident of identical initialisation
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=123))
    t2 = Trainer(other, strategy=tf.distribute.get_strategy())
    assert t2.restore() == 4
    for v in t2.model.variables:  # every variable (FPN, heads, BN statistics, priors) came back
        np.testing.assert_array_equal(v.numpy(), at_step_4[v.path], err_msg=v.path)
    seen = []
    t2.train(ds, progress=False, on_step=lambda s, _l: seen.append(s))
    assert seen == [5, 6]  # resumed after the step-4 checkpoint, not from 0
    t3 = Trainer(
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=7)), strategy=tf.distribute.get_strategy()
    )
    assert t3.restore() == 6
    for a, b in zip(t2.model.variables, t3.model.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(t2.optimizer.variables, t3.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_load_trained_model_restores_every_variable_and_rejects_other_configs(tmp_path):
    cfg = tiny_experiment(str(tmp_path), steps=2, checkpoint_every=2)
    t = Trainer(cfg, strategy=tf.distribute.get_strategy())
    t.train(tf.data.Dataset.from_tensors(hand_batch()).repeat(), progress=False)
    keras.utils.set_random_seed(99)
    model = load_trained_model(cfg)
    for a, b in zip(t.model.variables, model.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    wider = dataclasses.replace(cfg, model=tiny_model_config(channels=16))
    with pytest.raises(Exception, match="(?i)shape|lacks"):
        load_trained_model(wider)


def test_weight_averages_follow_the_formula_and_are_what_evaluation_loads(tmp_path):
    decay = 0.9
    cfg = tiny_experiment(str(tmp_path), steps=3, checkpoint_every=3, ema_decay=decay)
    t = Trainer(cfg, strategy=tf.distribute.get_strategy())
    assert {v.path for v in t.model.trainable_variables} == set(t.averages)
    ema = {v.path: v.numpy() for v in t.model.trainable_variables}
    batch = hand_batch()
    for step in range(1, 4):
        t.train_step(batch)
        d = min(decay, (1.0 + step) / (10.0 + step))  # the step counter after the update
        for v in t.model.trainable_variables:
            ema[v.path] = d * ema[v.path] + (1 - d) * v.numpy()
    for v in t.model.trainable_variables:
        np.testing.assert_allclose(t.averages[v.path].numpy(), ema[v.path], rtol=1e-5, atol=1e-7, err_msg=v.path)
    path = save_checkpoint(t.manager, 3)
    averaged = load_trained_model(cfg, path)
    raw = load_trained_model(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ema_decay=0.0)), path)
    differ = 0
    for v, a, r in zip(t.model.trainable_variables, averaged.trainable_variables, raw.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), ema[v.path], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(r.numpy(), v.numpy())
        differ += int(not np.allclose(a.numpy(), r.numpy()))
    assert differ > 0
    for a, r in zip(averaged.non_trainable_variables, raw.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), r.numpy())  # BN statistics, priors: as trained
    # a run without averages cannot be evaluated as if it had them
    plain = tiny_experiment(str(tmp_path / "plain"), steps=1, checkpoint_every=1)
    tp = Trainer(plain, strategy=tf.distribute.get_strategy())
    tp.train_step(batch)
    plain_path = save_checkpoint(tp.manager, 1)
    with pytest.raises(ValueError, match="no moving averages"):
        load_trained_model(
            dataclasses.replace(plain, train=dataclasses.replace(plain.train, ema_decay=0.9)), plain_path
        )
    with pytest.raises(ValueError, match="ema_decay"):
        Trainer(tiny_experiment(str(tmp_path / "bad"), ema_decay=1.0), strategy=tf.distribute.get_strategy())


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys, tempfile, numpy as np
    sys.path[:0] = [{test_dir!r}]
    from shapemask_training.distribute import get_strategy
    mirrored = get_strategy(logical_cpus=2)
    import tensorflow as tf
    from support.configs import tiny_experiment
    from support.batches import hand_batch
    from shapemask_training.trainer import Trainer
    assert mirrored.num_replicas_in_sync == 2
    # per-replica batch statistics (BN) equal the global ones when both halves hold the same images
    half = hand_batch(batch=2, seed=3)
    batch = {{k: np.concatenate([v, v], 0) for k, v in half.items()}}
    # with weight averaging on: the averages are updated in cross-replica context
    one = Trainer(tiny_experiment(tempfile.mkdtemp(), ema_decay=0.5), strategy=tf.distribute.get_strategy())
    two = Trainer(tiny_experiment(tempfile.mkdtemp(), ema_decay=0.5), strategy=mirrored)
    for a, b in zip(two.model.variables, one.model.variables, strict=True):
        a.assign(b)
    for path, v in one.averages.items():
        two.averages[path].assign(v)
    before = [v.numpy().copy() for v in one.model.trainable_variables]
    l1 = one.train_step(batch)
    dist = next(iter(mirrored.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))))
    l2 = two.train_step(dist)
    for k in l1:
        np.testing.assert_allclose(float(l1[k]), float(l2[k]), rtol=1e-5, err_msg=k)
    diff = max(float(np.abs(a.numpy() - b.numpy()).max())
               for a, b in zip(one.model.trainable_variables, two.model.trainable_variables, strict=True))
    # the step must have moved the weights well beyond the tolerance, or "equal after the step" says nothing
    moved = max(float(np.abs(a.numpy() - b).max()) for a, b in zip(one.model.trainable_variables, before, strict=True))
    print("MAXDIFF", diff, "MOVED", moved)
    assert moved > 1e-4, moved
    assert diff < 1e-6, diff
    ema = max(float(np.abs(one.averages[p].numpy() - two.averages[p].numpy()).max()) for p in one.averages)
    assert ema < 1e-6, ema
    assert any(np.abs(one.averages[v.path].numpy() - v.numpy()).max() > 0 for v in one.model.trainable_variables)
    """
)


def test_mirrored_step_on_two_logical_cpus_matches_single_device():
    script = MIRRORED_SCRIPT.format(test_dir=str(REPO / "test"))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "MAXDIFF" in res.stdout
