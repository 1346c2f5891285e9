"""Damaged recordings are read up to the damage (issue 15): cut files, corrupt chunks/pages, sqlite WALs.

The bags here have 320x240 noise images (230 kB each, incompressible) so an MCAP file has several 1 MiB
chunks and a cut lands inside the data, as with a real camera recording.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import CompressionMode

from shapemask_ros.bag.recording.reader import BagError, BagReader
from support.bags import PERIOD, T0, TS, dets_msg, image_msg, write_bag

IMG, DET = "/cam/image_raw", "/dets"
FRAMES = 24
N = 2 * FRAMES


def _messages() -> list:
    rng = np.random.default_rng(0)
    msgs = []
    for i in range(FRAMES):
        s = T0 + i * PERIOD
        rgb = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        msgs.append((IMG, "sensor_msgs/msg/Image", s + 1_000_000, image_msg(rgb, s)))
        dets = dets_msg(s, [((1.0, 2.0, 30.0, 40.0), "red", 0.9, f"o{i}")])
        msgs.append((DET, "vision_msgs/msg/Detection2DArray", s + 30_000_000, dets))
    return msgs


MSGS = _messages()
CASES = [
    ("mcap", CompressionMode.NONE),
    ("mcap", CompressionMode.STORAGE),  # zstd chunks
    ("sqlite3", CompressionMode.NONE),
    ("sqlite3", CompressionMode.MESSAGE),  # zstd per message
]
IDS = ["mcap", "mcap-zstd-chunks", "sqlite3", "sqlite3-zstd-messages"]


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("damaged")
    return {(s, c): write_bag(root / f"{s}-{c.name}", MSGS, s, c) for s, c in CASES}


def _storage_file(bag: Path) -> Path:
    (f,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    return f


def _copy(bag: Path, dst: Path, metadata: bool = True) -> tuple[Path, Path]:
    shutil.copytree(bag, dst)
    if not metadata:
        (dst / "metadata.yaml").unlink()
    return dst, _storage_file(dst)


def _read_all(path: Path, strict: bool = False) -> tuple[list, BagReader]:
    """(topic, log time, decoded) of every message, and the closed reader (for .damage)."""
    with BagReader(path, strict=strict) as r:
        got = [(m.topic, m.log_time_ns, r.decode(m)) for m in r.messages()]
    return got, r


def _assert_same(got: list, expected: list) -> None:
    """Every message read equals its original (payload included), in the original order."""
    assert [(t, lt) for t, lt, _ in got] == [(t, lt) for t, _ty, lt, _ in expected]
    for (_t, _lt, dec), (_t2, _ty, _lt2, orig) in zip(got, expected, strict=True):
        if hasattr(orig, "data"):
            np.testing.assert_array_equal(dec.data, orig.data)
        else:
            assert dec.detections[0].id == orig.detections[0].id


def _originals_of(got: list) -> list:
    """The original messages of `got`, in bag order (so `_assert_same` also checks the order)."""
    keys = {(t, lt) for t, lt, _ in got}
    return [m for m in MSGS if (m[0], m[2]) in keys]


@pytest.mark.parametrize("storage,compression", CASES, ids=IDS)
@pytest.mark.parametrize("frac", [0.3, 0.6, 0.95])
def test_cut_recording_is_read_up_to_the_cut(bags, tmp_path, storage, compression, frac):
    for metadata in (True, False):  # a killed recorder writes no metadata.yaml; a copy cut short has one
        path, f = _copy(bags[(storage, compression)], tmp_path / f"b{metadata}", metadata)
        with open(f, "r+b") as h:
            h.truncate(int(os.path.getsize(f) * frac))
        got, r = _read_all(path)
        k = len(got)
        _assert_same(got, _originals_of(got))  # intact, in order
        if storage == "mcap":  # whole chunks: exactly a prefix
            _assert_same(got, MSGS[:k])
        # everything before the damage: MCAP loses at most the cut chunk (1 MiB = ~5 frames), sqlite3 the
        # rows on missing pages (a few)
        slack = 11 if storage == "mcap" else 5
        assert frac * N - slack <= k < N
        d = r.damage
        assert d is not None and d.tail_lost and d.messages_read == k
        assert d.last_good_ns >= got[-1][1]
        assert d.unreadable_bytes and d.unreadable_bytes > 0
        assert d.messages_lost == (N - k if metadata else None)
        assert "damaged" in d.describe()
        with pytest.raises(BagError, match="truncated or corrupt"):
            BagReader(path, strict=True).open()
        shutil.rmtree(path)


@pytest.mark.parametrize("compression", [CompressionMode.NONE, CompressionMode.STORAGE], ids=["plain", "zstd"])
def test_corrupt_mcap_chunk_is_skipped_and_the_rest_read(bags, tmp_path, compression):
    from mcap.reader import make_reader

    path, f = _copy(bags[("mcap", compression)], tmp_path / "b")
    with open(f, "rb") as h:
        chunks = sorted(make_reader(h).get_summary().chunk_indexes, key=lambda c: c.chunk_start_offset)
    assert len(chunks) >= 4
    bad = chunks[1]
    with open(f, "r+b") as h:  # garble the start of the chunk's records (compressed or not)
        h.seek(bad.chunk_start_offset + bad.chunk_length - bad.compressed_size)
        h.write(b"\xff" * 64)
    got, r = _read_all(path)
    lost = [m for m in MSGS if bad.message_start_time <= m[2] <= bad.message_end_time]
    assert lost
    _assert_same(sorted(got, key=lambda g: g[1]), [m for m in MSGS if m not in lost])
    d = r.damage
    assert d is not None and d.corrupt_chunks == 1 and not d.tail_lost
    assert d.messages_lost == len(lost)
    assert d.lost_time_ranges_ns == [[bad.message_start_time, bad.message_end_time]]
    with pytest.raises(BagError, match="truncated or corrupt"):
        _read_all(path, strict=True)


def test_corrupt_sqlite_page_loses_only_its_rows(bags, tmp_path):
    path, f = _copy(bags[("sqlite3", CompressionMode.NONE)], tmp_path / "b")
    size = os.path.getsize(f)
    with open(f, "r+b") as h:  # zero one 4 kB page in the middle: a leaf or overflow page of the messages
        h.seek((size // 2) // 4096 * 4096)
        h.write(b"\0" * 4096)
    got, r = _read_all(path)
    assert N - 3 <= len(got) < N  # one page holds at most a couple of rows
    _assert_same(got, _originals_of(got))
    assert r.damage is not None and r.damage.messages_lost == N - len(got)
    with pytest.raises(BagError, match="truncated or corrupt"):
        _read_all(path, strict=True)


def test_sqlite_write_ahead_log_rows_are_read(bags, tmp_path):
    """A recorder killed with its WAL not checkpointed: the rows in the log are read too (rosbags alone
    opens the database immutable and silently loses them)."""
    src, _ = _copy(bags[("sqlite3", CompressionMode.NONE)], tmp_path / "src")
    (src / "metadata.yaml").unlink()
    db = _storage_file(src)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    extra = []
    topic_id = con.execute("SELECT id FROM topics WHERE name=?", (DET,)).fetchone()[0]
    for i in range(3):
        s = T0 + (FRAMES + i) * PERIOD
        msg = dets_msg(s, [((1.0, 2.0, 3.0, 4.0), "red", 0.5, f"wal{i}")])
        extra.append((DET, "vision_msgs/msg/Detection2DArray", s, msg))
        raw = bytes(TS.serialize_cdr(msg, "vision_msgs/msg/Detection2DArray"))
        con.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)", (topic_id, s, raw))
    con.commit()
    killed = tmp_path / "killed"  # what the disk holds while the recorder still has the log open
    killed.mkdir()
    shutil.copyfile(db, killed / db.name)
    shutil.copyfile(f"{db}-wal", killed / f"{db.name}-wal")
    con.close()
    got, r = _read_all(killed)
    _assert_same(got, MSGS + extra)
    assert r.damage is not None and r.damage.wal_applied
    assert os.path.getsize(killed / f"{db.name}-wal") > 0  # the recording itself is not modified
    with pytest.raises(BagError, match="write-ahead log"):
        BagReader(killed, strict=True).open()


def test_bag_eval_processes_a_cut_recording_and_reports_the_loss(bags, tmp_path, capsys):
    """The issue's case: an MCAP whose recorder was killed at 60 % of its length, no metadata.yaml."""
    from shapemask_ros import cli
    from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, evaluate_bag
    from support.bags import PerfectPredictor

    path, f = _copy(bags[("mcap", CompressionMode.STORAGE)], tmp_path / "cut", metadata=False)
    with open(f, "r+b") as h:
        h.truncate(int(os.path.getsize(f) * 0.6))
    opts = BagEvalOptions(bag=str(path), image_topic=IMG, detections_topic=DET, out=str(tmp_path / "o"), overlays=0)
    r = evaluate_bag(opts, predictor=PerfectPredictor()).report
    d = r["input"]["damage"]
    assert d["tail_lost"] and d["messages_read"] >= 0.6 * N - 11 and d["messages_lost"] is None
    images = (d["messages_read"] + 1) // 2  # image, detections, image, ...: the last image may lack its detections
    assert r["frames"]["images_read"] == images and r["frames"]["processed"] == d["messages_read"] // 2 > 0
    assert r["drops"]["pairing"].get("image_unused", 0) == images - d["messages_read"] // 2
    assert "damaged input" in (tmp_path / "o" / "report.md").read_text()
    # --strict: the old refusal, one line, exit code 2, nothing written
    code = cli.main(["bag-eval", "--bag", str(path), "--image-topic", IMG, "--out", str(tmp_path / "o2"), "--strict"])
    assert code == 2 and "truncated or corrupt" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_damaged_mcap_index_never_silently_skips_messages(tmp_path):
    """Found by `make fuzz`: one zero byte in the summary section (the chunk/message index) made rosbags
    read 6 of 8 messages without any error. Now a summary that disagrees with the data (or a read short of the
    index counts) switches to
    the streaming reader, which reads every message, and the damage is reported."""
    from support.bags import scene_bag_messages

    msgs = scene_bag_messages(frames=4)
    path = write_bag(tmp_path / "bag", msgs, "mcap")
    f = _storage_file(path)
    with open(f, "r+b") as h:
        h.seek(int(0.9329175248079173 * os.path.getsize(f)))
        h.write(b"\x00")
    with BagReader(path) as r:
        got = [(m.topic, m.log_time_ns, r.decode_or_none(m)) for m in r.messages()]
    assert sorted((t, lt) for t, lt, _ in got) == sorted((t, lt) for t, _ty, lt, _ in msgs)  # all 8, once
    # the byte hit the summary's copy of a type name: messages read through it are counted undecodable
    assert sum(d is not None for _, _, d in got) + sum(r.dropped.values()) == len(msgs)
    assert r.damage is not None and r.damage.messages_lost == 0
    with pytest.raises(BagError, match="summary|index counts"):
        _read_all(path, strict=True)


def test_sqlite_row_with_a_garbled_topic_id_is_not_dropped_silently(tmp_path):
    """Found by `make fuzz`: a row whose topic id was garbled is consistent for SQLite and silently left out
    by rosbags' JOIN. The integrity check at open reports it: read what is readable, the loss stated."""
    from support.bags import scene_bag_messages

    msgs = scene_bag_messages(frames=4)
    path = write_bag(tmp_path / "bag", msgs, "sqlite3")
    con = sqlite3.connect(_storage_file(path))
    con.execute("UPDATE messages SET topic_id = 99 WHERE id = 3")
    con.commit()
    con.close()
    got, r = _read_all(path)
    assert len(got) == len(msgs) - 1
    keys = {(t, lt) for t, lt, _ in got}
    _assert_same(got, [m for m in msgs if (m[0], m[2]) in keys])
    assert r.damage is not None and "topic id" in r.damage.reason and r.damage.messages_lost == 1
    with pytest.raises(BagError, match="topic id"):
        BagReader(path, strict=True).open()
