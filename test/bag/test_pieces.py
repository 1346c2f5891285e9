"""Recordings as fleets write them (issue 26): split bags, a missing piece, zstd per file and per message,
with and without metadata.yaml."""

from __future__ import annotations

import os

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionMode

from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, evaluate_bag
from shapemask_ros.bag.recording.pieces import bag_layout
from shapemask_ros.bag.recording.reader import BagError, BagReader
from support.bags import DETS, IMAGE, PerfectPredictor, scene_bag_messages, write_bag, write_split_bag

FRAMES = 6
MODES = [CompressionMode.NONE, CompressionMode.FILE, CompressionMode.MESSAGE]
CASES = [(s, c) for s in ("mcap", "sqlite3") for c in MODES]
IDS = [f"{s}-{c.name.lower()}" for s, c in CASES]


def _read_all(path, **kw):
    with BagReader(path, **kw) as r:
        got = [(m.topic, m.log_time_ns, r.decode_or_none(m)) for m in r.messages()]
        return got, r.damage, r.compression, dict(r.dropped)


def _same(got, msgs):
    assert [(t, lt) for t, lt, _ in got] == [(t, lt) for t, _ty, lt, _m in msgs]  # recording order across pieces
    for (_t, _lt, dec), (_t2, _ty, _lt2, orig) in zip(got, msgs, strict=True):
        assert dec is not None
        if hasattr(orig, "data"):
            np.testing.assert_array_equal(dec.data, orig.data)


@pytest.mark.parametrize("metadata", [True, False], ids=["metadata", "no-metadata"])
@pytest.mark.parametrize("storage,compression", CASES, ids=IDS)
def test_split_bag_is_read_in_order_across_pieces(tmp_path, storage, compression, metadata):
    msgs = scene_bag_messages(FRAMES)
    path = write_split_bag(tmp_path / "rec", msgs, storage, pieces=3, compression=compression)
    if not metadata:
        (path / "metadata.yaml").unlink()
    assert len(bag_layout(path).pieces) == 3
    got, damage, comp, dropped = _read_all(path)
    _same(got, msgs)
    assert damage is None and not dropped
    if compression == CompressionMode.FILE:
        assert comp == "file:zstd"


@pytest.mark.parametrize("metadata", [True, False], ids=["metadata", "no-metadata"])
@pytest.mark.parametrize("storage,compression", CASES, ids=IDS)
def test_missing_piece_is_reported_and_the_rest_read(tmp_path, storage, compression, metadata):
    msgs = scene_bag_messages(FRAMES)
    path = write_split_bag(tmp_path / "rec", msgs, storage, pieces=3, compression=compression)
    layout = bag_layout(path)
    gone = layout.pieces[1]
    assert gone.path is not None
    gone.path.unlink()
    if not metadata:
        (path / "metadata.yaml").unlink()
    got, damage, _comp, _dropped = _read_all(path)
    kept = msgs[:4] + msgs[8:]  # 12 messages in pieces of 4
    _same(got, kept)
    assert damage is not None and damage.missing_files == [gone.name]
    assert "missing" in damage.describe()
    if metadata:  # the count of what was lost comes from metadata.yaml
        assert damage.messages_expected == len(msgs) and damage.messages_lost == 4
    with pytest.raises(BagError, match="pieces missing"):
        BagReader(path, strict=True).open()


def test_pieces_without_metadata_are_read_in_split_index_order(tmp_path):
    """rec_10 comes after rec_9, not after rec_1 (name order would interleave the recording)."""
    msgs = scene_bag_messages(11)
    path = write_split_bag(tmp_path / "rec", msgs, "mcap", pieces=11)
    (path / "metadata.yaml").unlink()
    got, damage, _comp, _dropped = _read_all(path)
    _same(got, msgs)
    assert damage is None


def test_per_message_zstd_mcap_without_metadata_loses_no_frame(tmp_path):
    """The issue's case: a per-message-zstd MCAP read without its metadata.yaml lost every frame as
    'Invalid or unsupported CDR encapsulation'; the zstd magic (28 b5 2f fd) is recognised instead."""
    msgs = scene_bag_messages(FRAMES)
    path = write_bag(tmp_path / "rec", msgs, "mcap", CompressionMode.MESSAGE)
    (path / "metadata.yaml").unlink()
    got, damage, _comp, dropped = _read_all(path)
    _same(got, msgs)
    assert damage is None and not dropped


def test_cut_compressed_piece_is_read_up_to_the_cut(tmp_path):
    msgs = scene_bag_messages(FRAMES)
    path = write_split_bag(tmp_path / "rec", msgs, "mcap", pieces=2, compression=CompressionMode.FILE)
    last = bag_layout(path).pieces[-1].path
    assert last is not None
    with open(last, "r+b") as f:  # a copy cut short inside the zstd stream
        f.truncate(os.path.getsize(last) // 2)
    got, damage, _comp, _dropped = _read_all(path)
    assert damage is not None and "zstd decompression of rec_1.mcap.zstd failed" in damage.reason
    assert len(msgs) // 2 <= len(got) < len(msgs)
    _same(got, msgs[: len(got)])
    with pytest.raises(BagError):
        BagReader(path, strict=True).open()


def test_bag_eval_over_a_split_bag_with_a_missing_piece(tmp_path):
    msgs = scene_bag_messages(FRAMES)
    path = write_split_bag(tmp_path / "rec", msgs, "mcap", pieces=3, compression=CompressionMode.FILE)
    (path / bag_layout(path).pieces[2].name).unlink()
    opts = BagEvalOptions(bag=str(path), image_topic=IMAGE, detections_topic=DETS, out=str(tmp_path / "o"), overlays=0)
    r = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert r["frames"]["processed"] == 4 and r["input"]["compression"] == "file:zstd"
    assert r["input"]["damage"]["missing_files"] == ["rec_2.mcap.zstd"]
    assert r["input"]["damage"]["messages_lost"] == 4
