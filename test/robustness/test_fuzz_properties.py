"""Hypothesis properties for the remaining input surfaces (issue 15): CameraInfo + depth handling, the
synchroniser, and reading corrupted bags. CI runs small counts; `make fuzz` runs >= 10,000 examples each
(test/support/fuzz_plugin.py).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rosbags.rosbag2 import CompressionMode

from shapemask_ros.bag.recording.reader import BagError, BagReader
from shapemask_ros.geometry.depth import CameraIntrinsics, GeometryError, check_alignment, intrinsics_for_depth
from shapemask_ros.ros_bridge.image_codec import ImageDecodeError, depth_to_array
from shapemask_ros.ros_bridge.sync import Synchronizer
from support.bags import scene_bag_messages, write_bag, write_split_bag
from support.geometry import TS, camera_info

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -1.0, 1.0, 615.0, 320.0, 1e-300, 1e300]),
)
MODELS = st.one_of(
    st.sampled_from(["plumb_bob", "rational_polynomial", "equidistant", "fisheye", "", "none"]),
    st.text(max_size=12),
)
QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@QUICK
@given(
    k=st.lists(FLOATS, min_size=9, max_size=9),
    d=st.lists(FLOATS, max_size=8),
    model=MODELS,
    size=st.tuples(st.integers(-3, 700), st.integers(-3, 700)),
    binning=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    roi=st.tuples(st.integers(0, 800), st.integers(0, 800), st.integers(0, 800), st.integers(0, 800)),
    rectified=st.booleans(),
    depth_shape=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    registration=st.sampled_from([None, "none", "scale", "bogus"]),
)
def test_camera_info_is_usable_or_a_geometry_error(
    k, d, model, size, binning, roi, rectified, depth_shape, registration
):
    """Any CameraInfo gives usable intrinsics (finite positive focal lengths, positive size) or a
    GeometryError with a reason -- never another exception; rescaling to a depth image likewise."""
    w, h = size
    try:
        msg = camera_info(np.asarray(k), d=d, model=model, width=max(w, 0), height=max(h, 0), binning=binning, roi=roi)
    except (OverflowError, ValueError):  # not representable in the message type at all
        return
    try:
        intr = CameraIntrinsics.from_camera_info(msg, rectified=rectified)
    except GeometryError as e:
        assert e.reason  # a counted drop reason
        return
    assert np.isfinite(intr.k).all() and intr.k[0] > 0 and intr.k[4] > 0
    assert intr.width > 0 and intr.height > 0
    try:
        scaled = intrinsics_for_depth(intr, depth_shape, registration)
    except GeometryError as e:
        assert e.reason
        return
    assert scaled.shape == tuple(depth_shape) and np.isfinite(scaled.k).all()
    try:  # equal sizes pass intrinsics_for_depth whatever `registration` says; check_alignment validates it
        align = check_alignment(depth_shape, scaled.shape, registration)
    except GeometryError as e:
        assert e.reason == "bad_registration"
        return
    assert tuple(align.depth_shape) == tuple(depth_shape)


@QUICK
@given(
    encoding=st.one_of(st.sampled_from(["16UC1", "32FC1", "mono16", "8UC1", " 16UC1 ", ""]), st.text(max_size=6)),
    width=st.integers(-2, 12),
    height=st.integers(-2, 12),
    step=st.integers(-4, 64),
    bigendian=st.integers(0, 3),
    data=st.binary(max_size=400),
)
def test_depth_image_decodes_to_metres_or_a_clear_error(encoding, width, height, step, bigendian, data):
    t = TS.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
    try:
        msg = t["sensor_msgs/msg/Image"](
            header=header,
            height=max(height, 0),
            width=max(width, 0),
            encoding=encoding,
            is_bigendian=bigendian,
            step=max(step, 0),
            data=np.frombuffer(data, np.uint8),
        )
    except (OverflowError, ValueError):
        return
    try:
        depth = depth_to_array(msg)
    except ImageDecodeError as e:
        assert e.reason
        return
    assert depth.dtype == np.float32 and depth.shape == (msg.height, msg.width)
    valid = depth[~np.isnan(depth)]
    assert np.isfinite(valid).all() and (valid > 0).all()  # invalid depth is NaN, never 0/negative/inf


OPS = st.lists(
    st.tuples(st.sampled_from(["image", "dets", "pop"]), st.integers(0, 40)),
    max_size=80,
)


@QUICK
@given(ops=OPS, slop=st.integers(0, 5), cache=st.integers(1, 8))
def test_synchronizer_pairs_within_slop_and_never_reuses_or_loses_track(ops, slop, cache):
    """Pairs are within the slop, every item is handed out at most once, caches stay bounded, and every
    detection array is either handed out, still pending, or counted as a drop."""
    sync = Synchronizer(slop_s=slop * 1e-9, image_cache_size=cache)

    def stamp(sec: int, nanosec: int) -> tuple[int, int]:  # Stamp: (sec, nanosec)
        return (sec, nanosec)

    images_out, dets_out, dets_in = set(), set(), 0
    serial = 0
    for kind, t in ops:
        serial += 1
        if kind == "image":
            sync.add_image(stamp(sec=0, nanosec=t + 1), ("img", t + 1, serial))
        elif kind == "dets":
            sync.add_detections(stamp(sec=0, nanosec=t + 1), ("det", t + 1, serial))
            dets_in += 1
        else:
            pair = sync.pop_newest_pair()
            if pair is not None:
                (_, ti, si), (_, td, sd) = pair.image, pair.detections
                assert abs(ti - td) <= slop
                assert si not in images_out and sd not in dets_out
                images_out.add(si)
                dets_out.add(sd)
        assert len(sync) <= cache and sync.pending_detections <= cache
    c = sync.counters
    # detections: handed out + pending + superseded/no_match/evicted (evictions count images too)
    accounted = len(dets_out) + sync.pending_detections + c["superseded"] + c["no_match"]
    assert accounted <= dets_in <= accounted + c["evicted"]


# ---------------------------------------------------------------------------------------- corrupted bags

_BAGS: dict[str, tuple[Path, int]] = {}


def _damage(f: Path, kind: str, where: float, payload: bytes) -> None:
    """One mutation of a bag file: 'truncate' at fraction `where` of its size, 'write' `payload` there, or
    'zero' as many bytes."""
    at = int(where * os.path.getsize(f))
    with open(f, "r+b") as h:
        if kind == "truncate":
            h.truncate(at)
        else:
            h.seek(at)
            h.write(payload if kind == "write" else bytes(len(payload)))


def _pristine(storage: str) -> tuple[Path, int]:
    """A small valid bag of `storage` (built once per process) and its message count."""
    if storage not in _BAGS:
        root = Path(tempfile.mkdtemp(prefix="fuzzbag-"))
        atexit.register(shutil.rmtree, root, True)  # a module-level cache: removed when the process ends
        msgs = scene_bag_messages(frames=4)
        _BAGS[storage] = (write_bag(root / storage, msgs, storage), len(msgs))
    return _BAGS[storage]


MUTATION = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
    st.tuples(st.just("write"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("zero"), st.floats(0, 1), st.binary(min_size=1, max_size=4096)),
)


@QUICK
@given(
    storage=st.sampled_from(["mcap", "sqlite3"]),
    mutations=st.lists(MUTATION, min_size=1, max_size=3),
    strict=st.booleans(),
    metadata=st.booleans(),
)
# found by `make fuzz` (issue 26): one byte garbles "id INTEGER PRIMARY KEY" of the topics table's schema, every
# topic id then reads NULL and rosbags' JOIN silently returned 0 of the 8 messages, with no damage recorded
@example(storage="sqlite3", mutations=[("write", 0.05199005745798059, b"\t")], strict=False, metadata=False)
@example(storage="sqlite3", mutations=[("write", 0.05199005745798059, b"\t")], strict=True, metadata=False)
def test_corrupted_bag_is_read_or_refused_never_crashes_never_silently_short(storage, mutations, strict, metadata):
    """A bag corrupted anywhere either opens and reads -- every message decoded or counted, and fewer
    messages than recorded only with the loss in `damage` -- or is refused with a BagError."""
    src, total = _pristine(storage)
    work = Path(tempfile.mkdtemp(prefix="fuzzcut-"))
    try:
        bag = work / "bag"
        shutil.copytree(src, bag)
        if not metadata:
            (bag / "metadata.yaml").unlink()
        (f,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
        for kind, where, payload in mutations:
            _damage(f, kind, where, payload)
        try:
            with BagReader(bag, strict=strict) as r:
                n = decoded = 0
                for m in r.messages():
                    n += 1
                    # a garbled topic name in a bag without metadata.yaml is what the bag says (bag-eval then
                    # lists it among the available topics): allowed; messages are still never lost silently
                    assert isinstance(m.topic, str)
                    if r.decode_or_none(m) is not None:
                        decoded += 1
                assert decoded + sum(r.dropped.values()) == n  # every message decoded or counted
                if n < total:  # a short read is never silent
                    assert r.damage is not None
        except BagError as e:
            assert str(e) and "\n" not in str(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)


_SPLIT: dict[tuple[str, str], tuple[Path, int]] = {}


def _pristine_split(storage: str, compression: str) -> tuple[Path, int]:
    """A valid bag in 3 pieces (built once per process) and its message count."""
    key = (storage, compression)
    if key not in _SPLIT:
        root = Path(tempfile.mkdtemp(prefix="fuzzsplit-"))
        atexit.register(shutil.rmtree, root, True)
        msgs = scene_bag_messages(frames=6)
        _SPLIT[key] = (write_split_bag(root / "rec", msgs, storage, 3, CompressionMode[compression]), len(msgs))
    return _SPLIT[key]


@QUICK
@given(
    storage=st.sampled_from(["mcap", "sqlite3"]),
    compression=st.sampled_from(["NONE", "FILE", "MESSAGE"]),
    piece=st.integers(0, 2),
    mutations=st.lists(st.one_of(MUTATION, st.just(("delete", 0.0, b""))), min_size=1, max_size=3),
    strict=st.booleans(),
    metadata=st.booleans(),
)
# found by the first 1,000-example run: two zero bytes in a zstd-compressed sqlite3 piece (no checksum in the
# frame: it decompresses to a damaged database) lost rows that only reading found, and no damage was reported
@example(
    storage="sqlite3",
    compression="FILE",
    piece=0,
    mutations=[("write", 0.375, b"\x00"), ("write", 0.421875, b"\x00")],
    strict=False,
    metadata=False,
)
# found by `make fuzz`-style 10,000 examples: four zero bytes in a zstd-compressed sqlite3 piece garble its
# topics table; the recovery reader skipped the rows of the unreadable topics without a word
@example(
    storage="sqlite3",
    compression="FILE",
    piece=1,
    mutations=[("write", 0.197265625, b"\x00\x00\x00\x00")],
    strict=False,
    metadata=False,
)
def test_corrupted_split_bag_is_read_or_refused_never_silently_short(
    storage, compression, piece, mutations, strict, metadata
):
    """Issue 26: a split (and file- or message-compressed) bag with one piece corrupted or deleted reads
    the rest -- never fewer messages than recorded without `damage` saying so -- or is a BagError."""
    src, total = _pristine_split(storage, compression)
    work = Path(tempfile.mkdtemp(prefix="fuzzsplitcut-"))
    try:
        bag = work / "rec"
        shutil.copytree(src, bag)
        if not metadata:
            (bag / "metadata.yaml").unlink()
        f = sorted(p for p in bag.iterdir() if p.name != "metadata.yaml")[piece]
        for kind, where, payload in mutations:
            if not f.exists():
                break
            if kind == "delete":
                f.unlink()
                continue
            _damage(f, kind, where, payload)
        try:
            with BagReader(bag, strict=strict) as r:
                n = decoded = 0
                for m in r.messages():
                    n += 1
                    if r.decode_or_none(m) is not None:
                        decoded += 1
                assert decoded + sum(r.dropped.values()) == n
                # the one loss no reader can see: the *last* piece gone with metadata.yaml (nothing in the
                # other pieces says there was one more; docs/bag_eval.md says so)
                unknowable = not metadata and piece == 2 and not f.exists()
                if n < total and not unknowable:
                    assert r.damage is not None
        except BagError as e:
            assert str(e) and "\n" not in str(e)
    finally:
        shutil.rmtree(work, ignore_errors=True)
