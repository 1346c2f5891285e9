"""BagReader / BagWriter / AtomicOutputDir: storages, compression, type names, bad bags, atomic outputs."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionMode, Reader, Writer
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as stock_typestore

from shapemask_ros.bag.recording.reader import BagError, BagReader
from shapemask_ros.bag.recording.writer import AtomicOutputDir, BagWriter
from support.bags import DETS, IMAGE, TS, scene_bag_messages, write_bag

CASES = [
    ("mcap", CompressionMode.NONE),
    ("mcap", CompressionMode.STORAGE),  # zstd MCAP chunks
    ("mcap", CompressionMode.MESSAGE),
    ("sqlite3", CompressionMode.NONE),
    ("sqlite3", CompressionMode.MESSAGE),
    ("sqlite3", CompressionMode.FILE),
]


@pytest.mark.parametrize("storage,compression", CASES, ids=[f"{s}-{c.name.lower()}" for s, c in CASES])
def test_reads_every_storage_and_compression_with_short_type_names(tmp_path, storage, compression):
    msgs = scene_bag_messages(frames=3)
    path = write_bag(
        tmp_path / "bag",
        msgs,
        storage,
        compression,
        declared={IMAGE: "sensor_msgs/Image", DETS: "vision_msgs/Detection2DArray"},
    )
    with BagReader(path) as r:
        topics = r.topics
        assert topics[IMAGE].declared_type == "sensor_msgs/Image"
        assert topics[IMAGE].msgtype == "sensor_msgs/msg/Image"
        assert topics[DETS].msgtype == "vision_msgs/msg/Detection2DArray"
        assert topics[IMAGE].count == 3 and topics[DETS].count == 3
        assert r.storage_id == storage
        got = [(m.topic, m.log_time_ns, r.decode(m)) for m in r.messages()]
    assert [(t, lt) for t, lt, _m in got] == [(t, lt) for t, _typ, lt, _m in msgs]  # receive order
    for (_t, _lt, dec), (_t2, _typ, _lt2, orig) in zip(got, msgs, strict=True):
        if hasattr(orig, "data"):
            np.testing.assert_array_equal(dec.data, orig.data)
            assert (dec.width, dec.height, dec.encoding) == (orig.width, orig.height, orig.encoding)
        else:
            assert [d.id for d in dec.detections] == [d.id for d in orig.detections]
            assert dec.detections[0].bbox.size_x == orig.detections[0].bbox.size_x


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_a_clear_error(tmp_path, storage):
    path = write_bag(tmp_path / "bag", scene_bag_messages(frames=3), storage)
    (data,) = [p for p in path.iterdir() if p.suffix in (".mcap", ".db3")]
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(BagError, match="truncated or corrupt"):
        BagReader(path, strict=True).open()
    # by default what is readable is read (here nothing: one chunk/few pages, cut) and the loss is stated
    with BagReader(path) as r:
        assert r.damage is not None and r.damage.messages_lost == 6
        assert sum(1 for _ in r.messages()) == r.damage.messages_read


def test_missing_bag_and_directory_without_metadata(tmp_path):
    with pytest.raises(BagError, match="not found"):
        BagReader(tmp_path / "nope").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no metadata.yaml"):
        BagReader(tmp_path / "empty").open()
    # a recorder that was killed leaves the storage file without metadata.yaml: read the file itself
    path = write_bag(tmp_path / "bag", scene_bag_messages(frames=2), "mcap")
    (path / "metadata.yaml").unlink()
    with BagReader(path) as r:
        assert r.topics[IMAGE].count == 2
        assert sum(1 for _ in r.messages([IMAGE])) == 2


def test_unknown_topic_lists_available_topics(tmp_path):
    path = write_bag(tmp_path / "bag", scene_bag_messages(frames=1), "mcap")
    with BagReader(path) as r:
        with pytest.raises(BagError) as e:
            r.require_topic("/camera/color/image_raw", ("sensor_msgs/msg/Image",), "image")
        text = str(e.value)
        assert "/camera/color/image_raw" in text and IMAGE in text and DETS in text
        assert f"Topics of a suitable type: {IMAGE}" in text
        with pytest.raises(BagError, match="expected one of"):
            r.require_topic(DETS, ("sensor_msgs/msg/Image",), "image")


def test_undecodable_message_is_counted_and_skipped(tmp_path):
    msgs = scene_bag_messages(frames=3, with_dets=False)
    topic, typ, t, good = msgs[1]
    raw = bytes(TS.serialize_cdr(good, typ))
    msgs[1] = (topic, typ, t, raw[: len(raw) // 3])  # cut inside the pixel data
    path = write_bag(tmp_path / "bag", msgs, "mcap")
    with BagReader(path) as r:
        decoded = [r.decode_or_none(m) for m in r.messages()]
        assert [d is None for d in decoded] == [False, True, False]
        assert r.dropped == {f"undecodable:{IMAGE}": 1}


@pytest.mark.parametrize("storage,compression", CASES[:2] + CASES[3:5], ids=lambda c: getattr(c, "name", c))
def test_first_message_is_decoded_and_not_counted(tmp_path, storage, compression):
    """bag-eval's warm-up reads a topic's first message; the read loop must still see and count every one."""
    msgs = scene_bag_messages(frames=3)
    path = write_bag(tmp_path / "bag", msgs, storage, compression)
    first_image = next(m for t, _typ, _lt, m in msgs if t == IMAGE)
    with BagReader(path) as r:
        got = r.first_message(IMAGE)
        np.testing.assert_array_equal(got.data, first_image.data)
        assert r.first_message("/not/there") is None
        assert not r.read_counts
        assert sum(1 for _ in r.messages()) == len(msgs)
        assert r.read_counts == {IMAGE: 3, DETS: 3}


def test_first_message_that_does_not_decode_is_none_and_not_counted(tmp_path):
    msgs = scene_bag_messages(frames=2, with_dets=False)
    topic, typ, t, good = msgs[0]
    msgs[0] = (topic, typ, t, bytes(TS.serialize_cdr(good, typ))[:40])
    path = write_bag(tmp_path / "bag", msgs, "mcap")
    with BagReader(path) as r:
        assert r.first_message(IMAGE) is None
        assert not r.dropped  # the read loop counts it when it meets it
        assert [r.decode_or_none(m) is None for m in r.messages()] == [True, False]
        assert r.dropped == {f"undecodable:{IMAGE}": 1}


def test_unknown_type_decodes_from_the_bags_own_definition(tmp_path):
    text = "string name\nfloat64[] values\n"
    store = stock_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg(text, "my_pkg/msg/Custom"))
    msg = store.types["my_pkg/msg/Custom"](name="x", values=np.array([1.0, 2.5]))
    with Writer(tmp_path / "bag", version=9) as w:
        c = w.add_connection("/custom", "my_pkg/Custom", msgdef=text, rihs01=store.hash_rihs01("my_pkg/msg/Custom"))
        w.write(c, 5, store.serialize_cdr(msg, "my_pkg/msg/Custom"))
    with BagReader(tmp_path / "bag") as r:
        assert r.can_decode("/custom")
        (m,) = list(r.messages())
        got = r.decode(m)
    assert got.name == "x" and list(got.values) == [1.0, 2.5]


def test_atomic_output_dir(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with AtomicOutputDir(final) as out:
            (out.path / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with AtomicOutputDir(final) as out:
        (out.path / "a.txt").write_text("1")
        out.commit()
    assert (final / "a.txt").read_text() == "1"
    with pytest.raises(FileExistsError):
        AtomicOutputDir(final)
    with AtomicOutputDir(final, overwrite=True) as out:
        (out.path / "b.txt").write_text("2")
        out.commit()
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old copies left


def test_writer_copies_connections_with_their_definitions(tmp_path):
    src = write_bag(tmp_path / "in", scene_bag_messages(frames=2), "sqlite3", declared={IMAGE: "sensor_msgs/Image"})
    with BagReader(src) as r, AtomicOutputDir(tmp_path / "out", create=False) as out:
        with BagWriter(out.path, TS, storage="mcap", compress=True) as w:
            for m in r.messages():
                w.write_raw(w.copy_connection(m.connection), m.log_time_ns, m.raw)
            conn = w.add_output("/shapemask/labels", "sensor_msgs/msg/Image")
            w.write(conn, 7, r.decode(next(iter(r.messages([IMAGE])))))
        out.commit()
    with Reader(tmp_path / "out") as rr:
        by_topic = {c.topic: c for c in rr.connections}
        assert by_topic[IMAGE].msgtype == "sensor_msgs/msg/Image"  # normalised for ros2 bag
        assert {c.topic: c.msgcount for c in rr.connections} == {IMAGE: 2, DETS: 2, "/shapemask/labels": 1}
        fresh = stock_typestore(Stores.EMPTY)  # decodable from the stored definitions alone
        for c in rr.connections:
            assert c.msgdef.data and c.digest.startswith("RIHS01_")
            fresh.register(get_types_from_msg(c.msgdef.data, c.msgtype))
        dets = [fresh.deserialize_cdr(raw, c.msgtype) for c, _t, raw in rr.messages() if c.topic == DETS]
    assert [d.detections[1].id for d in dets] == ["o1", "o1"]
    shutil.rmtree(tmp_path / "out")
