"""bag-eval end to end with fake predictors: pairing, output bag, report, AP, bad input, atomicity, 3D."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import CompressionMode, Reader
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as stock_typestore

from shapemask_ros import cli
from shapemask_ros.bag.evaluation import bag_eval, eval_cli
from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, evaluate_bag
from shapemask_ros.bag.recording.reader import BagError, BagReader
from shapemask_ros.bag.scenes import demo_bag
from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.ros_bridge import objects3d_stage
from shapemask_ros.ros_bridge.image_codec import image_to_rgb
from support import REPO as REPO_ROOT
from support.bags import (
    DETS,
    GT_TOPIC,
    IMAGE,
    TS,
    F,
    OraclePredictor,
    PerfectPredictor,
    scene_bag_messages,
    scene_gt,
    write_bag,
)

OUT_TOPICS = ("/shapemask/masks", "/shapemask/labels", "/shapemask/detections")


def _gt_file(tmp_path, frames):
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(scene_gt(frames)))
    return str(p)


@pytest.mark.parametrize(
    "storage,compression",
    [("mcap", CompressionMode.STORAGE), ("sqlite3", CompressionMode.MESSAGE)],
    ids=["mcap-zstd-chunks", "sqlite3-zstd-messages"],
)
def test_output_bag_report_and_perfect_ap(tmp_path, storage, compression):
    frames = 4
    bag = write_bag(
        tmp_path / "in",
        scene_bag_messages(frames),
        storage,
        compression,
        declared={IMAGE: "sensor_msgs/Image"},
    )
    opts = BagEvalOptions(
        bag=str(bag),
        image_topic=IMAGE,
        detections_topic=DETS,
        out=str(tmp_path / "out"),
        gt=_gt_file(tmp_path, frames),
        overlays=2,
    )
    res = evaluate_bag(opts, predictor=PerfectPredictor())
    r = res.report
    assert r["frames"]["images_read"] == frames and r["frames"]["processed"] == frames
    assert r["frames"]["objects"] == 2 * frames
    assert r["model"]["backend"] == "fake"
    assert r["accuracy"]["mask_ap"]["AP"] == pytest.approx(100.0)
    assert r["accuracy"]["mask_ap_agnostic"]["AP"] == pytest.approx(100.0)
    assert r["accuracy"]["box_ap"]["AP"] == pytest.approx(100.0)
    for key in ("total", "model", "overhead", "io", "encode"):
        s = r["timing"]["per_frame"][key]
        assert s["n"] == frames and s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert r["timing"]["overhead_fraction"] > 0 and r["timing"]["overhead_fraction_cpu"] > 0
    cpu = r["timing"]["per_frame_cpu"]
    assert cpu["model"]["n"] == frames and cpu["overhead"]["mean_ms"] > 0
    assert r["output"]["overlays"] and all((res.out / p).stat().st_size > 0 for p in r["output"]["overlays"])
    assert len(r["output"]["overlays"]) == 2
    # the JSON on disk is strict JSON and the markdown names the headline numbers
    on_disk = json.loads(res.report_json.read_text())
    assert on_disk["frames"] == r["frames"]
    md = res.report_md.read_text()
    assert "Overhead / model time" in md and "| mask | 100.0 |" in md

    with Reader(res.bag) as rr:
        counts = {c.topic: c.msgcount for c in rr.connections}
        assert counts == {IMAGE: frames, DETS: frames, **{t: frames for t in OUT_TOPICS}}
        fresh = stock_typestore(Stores.EMPTY)
        for c in rr.connections:
            assert "/msg/" in c.msgtype and c.msgdef.data and c.digest.startswith("RIHS01_")
            fresh.register(get_types_from_msg(c.msgdef.data, c.msgtype))
        out = {t: [] for t in counts}
        for c, t, raw in rr.messages():
            out[c.topic].append((t, fresh.deserialize_cdr(raw, c.msgtype)))
    for (t_img, img), (t_m, masks), (_t, labels) in zip(
        out[IMAGE], out["/shapemask/masks"], out["/shapemask/labels"], strict=True
    ):
        assert masks.header.stamp == img.header.stamp and t_m >= t_img  # published after the input came
        assert masks.backend == "fake" and len(masks.instances) == 2
        lab = np.asarray(labels.data).view("<u2").reshape(labels.height, labels.width)
        fg = image_to_rgb(img).any(axis=2)
        np.testing.assert_array_equal(lab > 0, fg)  # perfect masks cover exactly the painted pixels


def test_gt_topic_and_self_detection(tmp_path):
    frames = 3
    bag = write_bag(tmp_path / "in", scene_bag_messages(frames, with_dets=False, gt_topic=True))
    opts = BagEvalOptions(bag=str(bag), image_topic=IMAGE, out=str(tmp_path / "out"), gt_topic=GT_TOPIC, overlays=0)
    r = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert r["input"]["detections_topic"] is None
    assert r["frames"]["processed"] == frames
    assert r["accuracy"]["images_evaluated"] == frames
    assert r["accuracy"]["mask_ap"]["AP"] == pytest.approx(100.0)


def test_ap_drops_when_a_mask_is_wrong(tmp_path):
    frames = 3
    bag = write_bag(tmp_path / "in", scene_bag_messages(frames))
    gt = scene_gt(frames)
    gt["annotations"][0]["category_id"] = 3 if gt["annotations"][0]["category_id"] != 3 else 2  # a wrong class
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(gt))
    opts = BagEvalOptions(bag=str(bag), image_topic=IMAGE, detections_topic=DETS, out=str(tmp_path / "o"), gt=str(p))
    acc = evaluate_bag(opts, predictor=PerfectPredictor()).report["accuracy"]
    assert acc["mask_ap"]["AP"] < 100.0
    assert acc["mask_ap_agnostic"]["AP"] == pytest.approx(100.0)  # the masks themselves are all right


def test_every_image_is_processed_when_detections_lag_several_frames(tmp_path):
    # detections arrive 2.5 frame periods after their image: the node's newest-only policy would skip
    # frames while catching up; offline every pair is taken as soon as it is complete.
    frames = 6
    bag = write_bag(tmp_path / "in", scene_bag_messages(frames, latency_ns=250_000_000))
    opts = BagEvalOptions(bag=str(bag), image_topic=IMAGE, detections_topic=DETS, out=str(tmp_path / "o"))
    r = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert r["frames"]["processed"] == frames
    assert not r["drops"]["pairing"]  # nothing superseded, unused or unmatched


def test_detections_stamped_off_by_less_than_the_slop_still_pair(tmp_path):
    msgs = scene_bag_messages(3)
    shifted = []
    for topic, typ, t, m in msgs:
        if topic == DETS:
            m.header.stamp.nanosec += 20_000_000  # 20 ms late stamp, slop is 50 ms
        shifted.append((topic, typ, t, m))
    bag = write_bag(tmp_path / "in", shifted)
    opts = BagEvalOptions(bag=str(bag), image_topic=IMAGE, detections_topic=DETS, out=str(tmp_path / "o"))
    assert evaluate_bag(opts, predictor=PerfectPredictor()).report["frames"]["processed"] == 3
    opts = BagEvalOptions(
        bag=str(bag),
        image_topic=IMAGE,
        detections_topic=DETS,
        out=str(tmp_path / "o2"),
        node=NodeConfig(sync_slop_s=0.01),
    )
    r = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert r["frames"]["processed"] == 0
    assert r["drops"]["pairing"]["no_match"] == 3 and r["drops"]["pairing"]["image_unused"] == 3


def test_undecodable_and_bad_messages_are_counted_not_fatal(tmp_path):
    msgs = scene_bag_messages(4)
    images = [k for k, m in enumerate(msgs) if m[0] == IMAGE]
    topic, typ, t, good = msgs[images[1]]
    raw = bytes(TS.serialize_cdr(good, typ))
    msgs[images[1]] = (topic, typ, t, raw[:40])  # undecodable
    msgs[images[2]][3].step = 5  # decodes, but the image is malformed (bad_size in the processor)
    bag = write_bag(tmp_path / "in", msgs)
    opts = BagEvalOptions(bag=str(bag), image_topic=IMAGE, detections_topic=DETS, out=str(tmp_path / "o"))
    r = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert r["frames"]["images_read"] == 3 and r["frames"]["processed"] == 2
    assert r["drops"]["reader"] == {f"undecodable:{IMAGE}": 1}
    assert r["drops"]["processor"]["bad_size"] == 1
    assert r["drops"]["pairing"]["no_match"] == 1  # the detections of the undecodable image


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    bag = write_bag(tmp_path / "in", scene_bag_messages(1))
    code = cli.main(
        [
            "bag-eval",
            "--bag",
            str(bag),
            "--image-topic",
            "/camera/color/image_raw",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "/camera/color/image_raw" in err and IMAGE in err and DETS in err  # names what is there
    assert not (tmp_path / "o").exists()
    code = cli.main(
        ["bag-eval", "--bag", str(tmp_path / "missing"), "--image-topic", IMAGE, "--out", str(tmp_path / "o")]
    )
    assert code == 2 and "not found" in capsys.readouterr().err
    code = cli.main(
        [
            "bag-eval",
            "--bag",
            str(bag),
            "--image-topic",
            IMAGE,
            "--depth-topic",
            "/d",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "go together" in capsys.readouterr().err
    code = cli.main(
        [
            "bag-eval",
            "--bag",
            str(bag),
            "--image-topic",
            IMAGE,
            "--model",
            str(tmp_path / "nomodel"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "model bundle not found" in capsys.readouterr().err


def test_failure_mid_run_leaves_no_partial_output(tmp_path):
    bag = write_bag(tmp_path / "in", scene_bag_messages(5))
    opts = BagEvalOptions(bag=str(bag), image_topic=IMAGE, detections_topic=DETS, out=str(tmp_path / "out"))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KeyboardInterrupt):
        evaluate_bag(opts, predictor=PerfectPredictor(fail_on_call=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no out/, no temporary directory
    # an existing output is never touched by a run that is refused or fails
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("old")
    with pytest.raises(BagError, match="exists"):
        evaluate_bag(opts, predictor=PerfectPredictor())
    opts.overwrite = True
    with pytest.raises(KeyboardInterrupt):
        evaluate_bag(opts, predictor=PerfectPredictor(fail_on_call=2))
    assert (tmp_path / "out" / "keep").read_text() == "old"


def test_max_frames_and_no_copy(tmp_path):
    bag = write_bag(tmp_path / "in", scene_bag_messages(6))
    opts = BagEvalOptions(
        bag=str(bag),
        image_topic=IMAGE,
        detections_topic=DETS,
        out=str(tmp_path / "o"),
        max_frames=2,
        copy_inputs=False,
    )
    res = evaluate_bag(opts, predictor=PerfectPredictor())
    assert res.report["frames"]["images_read"] == 2 and res.report["frames"]["processed"] == 2
    with BagReader(res.bag) as r:
        assert {t: i.count for t, i in r.topics.items()} == {t: 2 for t in OUT_TOPICS}


def test_video_output(tmp_path):
    bag = write_bag(tmp_path / "in", scene_bag_messages(3))
    opts = BagEvalOptions(
        bag=str(bag),
        image_topic=IMAGE,
        detections_topic=DETS,
        out=str(tmp_path / "o"),
        video=True,
        overlays=0,
    )
    res = evaluate_bag(opts, predictor=PerfectPredictor())
    assert res.report["output"]["video"] == "overlay.mp4"
    assert (res.out / "overlay.mp4").stat().st_size > 0 and not res.report["output"]["overlays"]


def test_demo_bag_3d_outputs_and_centroid_error_with_oracle_masks(tmp_path, monkeypatch):
    cfg = demo_bag.DemoBagConfig(frames=4, width=160, height=120, seed=3, spurious_per_frame=0.0)
    db = demo_bag.make_demo_bag(tmp_path / "demo", cfg)
    gt = json.loads(db.gt.read_text())
    images = {}
    with BagReader(db.bag) as r:
        for m in r.messages([demo_bag.IMAGE_TOPIC]):
            msg = r.decode(m)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            image_id = next(im["id"] for im in gt["images"] if im["stamp_ns"] == stamp)
            images[OraclePredictor.key(image_to_rgb(msg))] = image_id
    opts = BagEvalOptions(
        bag=str(db.bag),
        **demo_bag.EVAL_TOPICS,
        gt=str(db.gt),
        out=str(tmp_path / "o"),
        overlays=1,
        points=True,  # off by default (test_demo.py checks that)
    )
    # the 3D kernel is compiled (or loaded from numba's cache) before the timed loop, not in its first frame
    calls: list[str] = []
    prepare, stage_3d = bag_eval.prepare_objects3d, objects3d_stage.objects3d_from_instances
    monkeypatch.setattr(bag_eval, "prepare_objects3d", lambda: calls.append("prepare") or prepare())
    monkeypatch.setattr(
        objects3d_stage, "objects3d_from_instances", lambda *a, **k: calls.append("frame") or stage_3d(*a, **k)
    )
    # so are the output connections (definitions, hashes, QoS: ~11 ms on the demo bag), all of them
    add_output = bag_eval.BagWriter.add_output
    monkeypatch.setattr(
        bag_eval.BagWriter, "add_output", lambda self, topic, typ: calls.append(topic) or add_output(self, topic, typ)
    )
    res = evaluate_bag(opts, predictor=OraclePredictor(gt, images))
    outputs = [f"/shapemask/{t}" for t in ("masks", "labels", "detections", "objects3d", "points")]
    assert calls == ["prepare", *outputs] + ["frame"] * 4
    r = res.report
    assert r["frames"]["processed"] == 4 and r["frames"]["with_geometry"] == 4
    with BagReader(res.bag) as rb:
        counts = {t: i.count for t, i in rb.topics.items()}
        assert counts["/shapemask/objects3d"] == 4 and counts["/shapemask/points"] == 4
        assert counts[demo_bag.DEPTH_TOPIC] == 4  # inputs copied
    ce = r["geometry"]["centroid_error"]
    detected = db.detector["true"]
    assert ce["evaluated"] == detected  # every detected object matched its truth (oracle masks)
    assert ce["error_mm"]["max"] < 3.0  # noise (1.5 mm at 1 m, averaged) and holes only
    assert abs(ce["z_bias_mm"]) < 1.0
    assert r["accuracy"]["mask_ap_agnostic"]["AP50"] > 80.0  # misses lower recall, masks are exact


def test_depth_pairing_late_and_missing_depth(tmp_path):
    cfg = demo_bag.DemoBagConfig(frames=4, width=96, height=72, seed=1, miss_prob=0.0, latency_s=(0.01, 0.02))
    db = demo_bag.make_demo_bag(tmp_path / "demo", cfg)
    with BagReader(db.bag) as r:
        msgs = [(m.topic, m.msgtype, m.log_time_ns, r.decode(m)) for m in r.messages()]
    depth = [k for k, m in enumerate(msgs) if m[0] == demo_bag.DEPTH_TOPIC]
    dets = {
        m[3].header.stamp.sec * 10**9 + m[3].header.stamp.nanosec: m[2]
        for m in msgs
        if m[0] == demo_bag.DETECTIONS_TOPIC
    }
    late = msgs[depth[2]]
    stamp = late[3].header.stamp.sec * 10**9 + late[3].header.stamp.nanosec
    # 40 ms after its detections (still before the next depth image: depth streams are in order)
    msgs[depth[2]] = (late[0], late[1], dets[stamp] + 40_000_000, late[3])
    del msgs[depth[1]]  # never recorded
    msgs.sort(key=lambda m: m[2])
    bag = write_bag(tmp_path / "in", msgs)
    opts = BagEvalOptions(
        bag=str(bag),
        **demo_bag.EVAL_TOPICS,
        out=str(tmp_path / "o"),
    )
    r = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert r["frames"]["processed"] == 4  # masks for every frame
    assert r["frames"]["with_geometry"] == 3  # the late depth waited for, the missing one not
    assert r["drops"]["pairing"] == {"no_depth_match": 1}
    with BagReader(tmp_path / "o" / "bag") as rb:
        assert rb.topics["/shapemask/objects3d"].count == 3 and rb.topics["/shapemask/masks"].count == 4


def test_compressed_image_topic(tmp_path):
    msgs = []
    for topic, typ, t, m in scene_bag_messages(3):
        if topic == IMAGE:
            rgb = np.asarray(m.data).reshape(m.height, m.width, 3)
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            assert ok
            m = F.make("sensor_msgs/msg/CompressedImage", header=m.header, format="png", data=F.u8(png))
            typ = "sensor_msgs/msg/CompressedImage"
        msgs.append((topic, typ, t, m))
    bag = write_bag(tmp_path / "in", msgs)
    opts = BagEvalOptions(
        bag=str(bag),
        image_topic=IMAGE,
        detections_topic=DETS,
        out=str(tmp_path / "o"),
        gt=_gt_file(tmp_path, 3),
    )
    r = evaluate_bag(opts, predictor=PerfectPredictor()).report
    assert r["frames"]["processed"] == 3
    assert r["accuracy"]["mask_ap"]["AP"] == pytest.approx(100.0)  # PNG is lossless


def test_params_file_sets_the_node_config_and_flags_override_it(tmp_path, capsys):
    import argparse

    from shapemask_ros.bag.evaluation.eval_cli import add_args, options_from_args

    parser = argparse.ArgumentParser()
    add_args(parser)
    base = ["--bag", "b", "--image-topic", IMAGE, "--out", "o"]
    shipped = REPO_ROOT / "config" / "segment_params.yaml"
    assert options_from_args(parser.parse_args([*base, "--params", str(shipped)])).node == NodeConfig()
    assert options_from_args(parser.parse_args(base)).node == NodeConfig()  # no file, no flags: defaults
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "/**/shapemask_node:\n  ros__parameters:\n    score_threshold: 0.7\n    mask_threshold: 0.4\n"
        "    publish_label_image: false\n"
    )
    node = options_from_args(parser.parse_args([*base, "--params", str(mine), "--mask-threshold", "0.6"])).node
    assert (node.score_threshold, node.mask_threshold, node.publish_label_image) == (0.7, 0.6, False)
    assert node.flip_average is False  # neither file nor flag
    assert options_from_args(parser.parse_args([*base, "--params", str(mine), "--flip-average"])).node.flip_average
    # the file reaches the processor: no label image topic in the output bag
    bag = write_bag(tmp_path / "in", scene_bag_messages(2))
    out = tmp_path / "ev"
    code = cli.main(
        ["bag-eval", "--bag", str(bag), "--image-topic", IMAGE, "--detections-topic", DETS, "--out", str(out),
         "--params", str(mine), "--overlays", "0", "--score-threshold", "0.1"]
    )  # fmt: skip
    assert code == 0
    with Reader(out / "bag") as r:
        topics = set(r.topics)
    assert "/shapemask/masks" in topics and "/shapemask/labels" not in topics
    bad = tmp_path / "bad.yaml"
    bad.write_text("shapemask_node:\n  ros__parameters:\n    score_treshold: 0.7\n")
    code = cli.main(["bag-eval", "--bag", str(bag), "--image-topic", IMAGE, "--out", str(tmp_path / "o2"),
                     "--params", str(bad)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "score_treshold" in err and "Traceback" not in err


def test_the_node_parameters_reach_the_backend_from_bag_eval_and_a_fleet(tmp_path, monkeypatch):
    """bag-eval loads with its --params (engine_cache_dir included), as the node does; so does a fleet worker."""
    from shapemask_ros.bag.fleet.job import PredictorSpec, get_predictor
    from support.backends import StopLoading, record_backend_options

    seen = record_backend_options(monkeypatch)
    bag = write_bag(tmp_path / "in", scene_bag_messages(1))
    cache = str(tmp_path / "engines")
    opts = BagEvalOptions(
        bag=str(bag),
        image_topic=IMAGE,
        out=str(tmp_path / "o"),
        model=str(REPO_ROOT / "models" / "demo"),
        backend="onnxruntime",
        node=NodeConfig(engine_cache_dir=cache),
    )
    with pytest.raises(StopLoading, match="onnxruntime"):
        evaluate_bag(opts)
    spec = PredictorSpec(str(REPO_ROOT / "models" / "demo"), "onnxruntime", threads=2, engine_cache_dir=cache)
    with pytest.raises(StopLoading):
        get_predictor(spec)
    assert [(o.engine_cache_dir, o.intra_op_num_threads) for o in seen] == [(cache, 0), (cache, 2)]
    # offline: ONNX Runtime's threads sleep between runs instead of spinning (as in the node)
    assert [o.spin for o in seen] == [False, False]


def test_cpu_of_other_threads_outside_predict_counts_as_overhead(tmp_path, monkeypatch):
    """A runtime thread still busy after `predict` returned (ONNX Runtime's spinning workers) is CPU the frame
    costs outside the model: the per-frame CPU overhead is the whole process's, not the calling thread's."""
    import threading
    import time

    burn_s = 0.03

    def burn() -> None:
        t0 = time.thread_time()
        while time.thread_time() - t0 < burn_s:
            pass

    class BusyAfterPredict(PerfectPredictor):
        workers: list[threading.Thread] = []

        def predict(self, *a, **k):
            out = super().predict(*a, **k)
            worker = threading.Thread(target=burn)
            worker.start()  # still running when predict returns
            self.workers.append(worker)
            return out

    original = bag_eval.BagEvaluation._write_outputs

    def write_then_join(self, *a, **k):  # inside the frame's timing: all of the worker's CPU falls in it
        original(self, *a, **k)
        BusyAfterPredict.workers[-1].join()

    monkeypatch.setattr(bag_eval.BagEvaluation, "_write_outputs", write_then_join)
    frames = 3
    bag = write_bag(tmp_path / "in", scene_bag_messages(frames))
    opts = BagEvalOptions(bag=str(bag), image_topic=IMAGE, detections_topic=DETS, out=str(tmp_path / "o"), overlays=0)
    timing = evaluate_bag(opts, predictor=BusyAfterPredict()).report["timing"]
    cpu = timing["per_frame_cpu"]
    assert cpu["overhead"]["n"] == frames and cpu["overhead"]["p50_ms"] >= 0.7 * burn_s * 1e3
    assert cpu["process"]["p50_ms"] + cpu["encode"]["p50_ms"] >= 0.7 * burn_s * 1e3
    assert cpu["model"]["p50_ms"] < 0.5 * burn_s * 1e3  # none of it is charged to the model


def test_cpu_of_the_3d_stage_is_reported_apart_from_the_overhead(tmp_path, monkeypatch):
    """CPU is split as the wall time: the 3D stage's CPU is `geometry`, not overhead; the fraction with the 3D
    stage adds it back."""
    import time

    burn_s = 0.03
    stage_3d = objects3d_stage.objects3d_from_instances

    def slow_stage(*a, **k):
        t0 = time.thread_time()
        while time.thread_time() - t0 < burn_s:
            pass
        return stage_3d(*a, **k)

    monkeypatch.setattr(objects3d_stage, "objects3d_from_instances", slow_stage)
    frames = 3
    db = demo_bag.make_demo_bag(tmp_path / "demo", demo_bag.DemoBagConfig(frames=frames, width=160, height=120, seed=3))
    opts = BagEvalOptions(bag=str(db.bag), **demo_bag.EVAL_TOPICS, out=str(tmp_path / "o"), overlays=0)
    res = evaluate_bag(opts, predictor=PerfectPredictor())
    r = res.report
    assert r["frames"]["with_geometry"] == frames
    timing = r["timing"]
    cpu = timing["per_frame_cpu"]
    assert cpu["geometry"]["n"] == frames and cpu["geometry"]["p50_ms"] >= 0.9 * burn_s * 1e3
    assert cpu["overhead"]["max_ms"] < 0.5 * burn_s * 1e3 and cpu["process"]["max_ms"] < 0.5 * burn_s * 1e3
    model_s = cpu["model"]["mean_ms"] * frames / 1e3
    added = (timing["overhead_fraction_cpu_with_3d"] - timing["overhead_fraction_cpu"]) * model_s
    assert added == pytest.approx(cpu["geometry"]["mean_ms"] * frames / 1e3, rel=1e-6)
    md = (tmp_path / "o" / "report.md").read_text()
    assert md.count("| 3D stage |") == 2 and "with the 3D stage:" in md  # wall and CPU tables
    line = next(s for s in eval_cli.summary_lines(res) if s.startswith("frames:"))
    cpu_pct, with_3d_pct = 100 * timing["overhead_fraction_cpu"], 100 * timing["overhead_fraction_cpu_with_3d"]
    assert line.endswith(f"({cpu_pct:.1f} % in CPU time; {with_3d_pct:.1f} % with the 3D stage)")
