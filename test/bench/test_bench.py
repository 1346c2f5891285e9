"""`shapemask bench model` / `bench runtime` in miniature: tiny model, 64 px, 2 timed rounds.

The numbers themselves mean nothing here (busy 2-core machine); the tests check the timing protocol,
that every figure is a positive measurement, and that ratios and target verdicts are computed from the
measured medians.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml

from shapemask_ros import cli
from shapemask_ros.bench import runtime_bench
from shapemask_ros.bench.model_bench import target, targets_table, time_interleaved
from shapemask_ros.config.loading import to_dict
from support.configs import tiny_model_config


def _tiny_yaml(tmp_path, **mask) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": to_dict(tiny_model_config(64, **mask))}))
    return str(path)


def _positive_summary(s: dict, iters: int) -> None:
    assert len(s["times_s"]) == iters and all(t > 0 for t in s["times_s"])
    assert s["median_s"] == pytest.approx(float(np.median(s["times_s"])))
    assert 0 < s["min_s"] <= s["median_s"] <= s["p90_s"] and s["first_call_s"] > 0


# ------------------------------------------------------------------------------------------------ timing
def test_interleaved_timing_excludes_first_call_and_warmup_and_rotates_order():
    calls: list[tuple[str, int]] = []

    def make(name, seconds):
        def fn(r):
            calls.append((name, r))
            time.sleep(seconds)

        return fn

    res = time_interleaved({"slow": make("slow", 0.02), "fast": make("fast", 0.0)}, iters=3, warmup=2, progress=False)
    assert len(calls) == 2 * (1 + 2 + 3)  # first call + warm-up + timed rounds, each variant once per round
    for name in ("slow", "fast"):
        _positive_summary(res[name], 3)
    assert res["slow"]["median_s"] >= 0.02 and res["slow"]["first_call_s"] >= 0.02
    rounds = calls[2:]  # after the two first calls: pairs per round
    starts = [rounds[2 * r][0] for r in range(5)]
    assert starts == ["slow", "fast", "slow", "fast", "slow"]  # the start rotates each round
    assert [r for _, r in rounds] == [r for r in range(5) for _ in range(2)]  # fn gets its round index


def test_interleaved_timing_rejects_bad_counts():
    with pytest.raises(ValueError, match="iters"):
        time_interleaved({"a": lambda r: None}, iters=0, warmup=1)
    with pytest.raises(ValueError, match="nothing"):
        time_interleaved({}, iters=1, warmup=0)


def test_target_verdicts():
    assert target(1.5, 1.6, higher_is_better=False)["met"] is True
    assert target(1.7, 1.6, higher_is_better=False)["met"] is False
    assert target(4.9, 5.0, higher_is_better=True)["met"] is False
    assert target(None, 5.0, higher_is_better=True)["met"] is None


# ------------------------------------------------------------------------------------------------ model
def test_targets_table_shows_ratios_and_frame_rates_with_their_units():
    table = targets_table(
        {"fps": target(18.94, 20, True, unit="frames/s"), "official_over_ours": target(158.2, 50, True)}
    )
    assert "| fps | 18.9 frames/s | >= 20 frames/s | **no** |" in table
    assert "| official_over_ours | 158.20x | >= 50 | yes |" in table


@pytest.mark.tf
def test_bench_model_cli_tiny(tmp_path, capsys):
    out = tmp_path / "model.json"
    rc = cli.main(
        [
            "bench",
            "model",
            "--config",
            _tiny_yaml(tmp_path),
            "--boxes",
            "3",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--channels",
            "8,16",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["config"]["image_size"] == 64 and res["config"]["boxes"] == 3
    lat = res["latency"]
    assert set(lat) == {"backbone", "segment_boxes", "detect_and_segment", "mask_branch@16", "mask_branch@8"}
    for s in lat.values():
        _positive_summary(s, 2)
    med = {k: v["median_s"] for k, v in lat.items()}
    r = res["ratios"]
    assert r["segment_boxes_over_backbone"] == pytest.approx(med["segment_boxes"] / med["backbone"])
    assert r["detect_and_segment_over_backbone"] == pytest.approx(med["detect_and_segment"] / med["backbone"])
    assert r["mask_branch_16_over_8"] == pytest.approx(med["mask_branch@16"] / med["mask_branch@8"])
    t = res["targets"]["segment_boxes_over_backbone"]
    assert t["value"] == r["segment_boxes_over_backbone"] and t["met"] == (t["value"] <= 1.6)
    t = res["targets"]["mask_branch_16_over_8"]
    assert t["met"] == (t["value"] >= 5.0)
    # the wider mask branch has more weights; the configured width (8) is the model's own
    mb = res["mask_branch"]
    assert mb["16"]["params_trainable"] > mb["8"]["params_trainable"] > 0
    assert mb["8"]["params_total"] > mb["8"]["params_trainable"]  # + fixed priors and BN statistics
    # score threshold 0: random weights give max_detections boxes to the mask branch
    assert res["detect_and_segment_detections"] == tiny_model_config(64).postprocess.max_detections
    assert res["threads"]["threads"] >= 1 and res["host"]["cpu_count"] >= 1
    assert res["command"].startswith("shapemask bench model --config")
    table = capsys.readouterr().out
    assert f"| 16 | {med['mask_branch@16'] * 1000:.1f} |" in table


# ------------------------------------------------------------------------------------------------ runtime
def test_read_official(tmp_path):
    path = tmp_path / "timing.json"
    assert runtime_bench.read_official(str(path), 640, 50) is None  # absent
    path.write_text("{not json")
    assert runtime_bench.read_official(str(path), 640, 50) is None  # unreadable: ignored with a warning
    path.write_text(json.dumps({"median_s": -1.0, "image_size": 640, "resnet_depth": 50}))
    assert runtime_bench.read_official(str(path), 640, 50) is None  # not a measurement
    path.write_text(json.dumps({"median_s": 4.1, "image_size": 640, "resnet_depth": 50}))
    assert runtime_bench.read_official(str(path), 640, 50)["comparable"] is True
    assert runtime_bench.read_official(str(path), 1024, 50)["comparable"] is False
    assert runtime_bench.read_official(str(path), 640, 101)["comparable"] is False
    assert runtime_bench.read_official(str(path), 640, None)["comparable"] is False  # tiny backbone


@pytest.mark.tf
@pytest.mark.slow
def test_bench_runtime_cli_tiny(tmp_path, capsys):
    official = tmp_path / "official.json"
    official.write_text(json.dumps({"median_s": 3.0, "image_size": 64, "resnet_depth": 50}))
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nkept text\n")
    out = tmp_path / "runtime.json"
    argv = [
        "bench",
        "runtime",
        "--config",
        _tiny_yaml(tmp_path),
        "--boxes",
        "3",
        "--box-counts",
        "1,5",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--images",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--official-json",
        str(official),
        "--out",
        str(out),
        "--write-docs",
        "--docs",
        str(docs),
    ]
    assert cli.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["bundle_reused"] is False and res["export_s"] > 0
    assert res["backends"]["tensorflow"].startswith("tensorflow:")
    assert res["backends"]["onnxruntime"].startswith("onnxruntime:")
    assert res["threads"]["ort_intra_op"] == 1
    lat = res["latency"]
    expected = {f"{b}/{w}" for b in ("tensorflow", "onnxruntime") for w in ("segment_boxes@3", "detect_and_segment")}
    assert set(lat) == expected | {"onnxruntime/segment_boxes@1", "onnxruntime/segment_boxes@5"}
    for s in lat.values():
        _positive_summary(s, 2)
    med = {k: v["median_s"] for k, v in lat.items()}
    assert res["onnxruntime_latency_vs_boxes"] == {str(n): med[f"onnxruntime/segment_boxes@{n}"] for n in (1, 3, 5)}
    r = res["ratios"]
    assert r["tensorflow_over_onnxruntime_segment_boxes@3"] == pytest.approx(
        med["tensorflow/segment_boxes@3"] / med["onnxruntime/segment_boxes@3"]
    )
    assert r["official_over_onnxruntime_detect_and_segment"] == pytest.approx(
        3.0 / med["onnxruntime/detect_and_segment"]
    )
    # a tiny backbone is not the official's ResNet-50: the ratio is reported but is no target check
    assert res["official"]["comparable"] is False
    assert set(res["targets"]) == {"onnxruntime_speedup_over_tensorflow@3"}
    t = res["targets"]["onnxruntime_speedup_over_tensorflow@3"]
    assert t["met"] == (t["value"] >= 1.3)
    # self-detection with score threshold 0 segments max_detections objects on both backends
    assert res["detect_and_segment_detections"] == {"tensorflow": 10, "onnxruntime": 10}
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n") and res["command"] in text
    assert "| boxes (ONNX Runtime) |" in text and "| boxes (ONNX Runtime) |" in capsys.readouterr().out

    # same configuration again: the cached bundle is reused; the official JSON now matches (depth from
    # the backbone name given), so the 10x target is checked against the measured median
    bundle = res["bundle"]
    assert runtime_bench.ensure_bundle(runtime_bench.bench_config(tiny_model_config(64)), bundle) == (bundle, True)
    res2 = runtime_bench.run_runtime_bench(
        bundle,
        num_boxes=1,
        box_counts=(1,),
        iters=1,
        warmup=0,
        official_json=str(official),
        backbone="resnet50",
        progress=False,
    )
    t = res2["targets"]["speedup_over_official (onnxruntime)"]
    assert t["value"] == pytest.approx(3.0 / res2["latency"]["onnxruntime/detect_and_segment"]["median_s"])
    assert t["met"] == (t["value"] >= 10.0)


def test_cached_bundle_must_match_the_configuration(tmp_path):
    cfg = runtime_bench.bench_config(tiny_model_config(64))
    path = tmp_path / "b"
    path.mkdir()
    meta = {
        "model_config": json.loads(json.dumps(to_dict(cfg))),
        "max_boxes": 100,
        "saved_model": "saved_model",
        "onnx": {"segment_boxes": "s.onnx", "detect_and_segment": "d.onnx"},
    }
    (path / "model.json").write_text(json.dumps(meta))
    assert runtime_bench._cached_matches(str(path), cfg, 100)
    assert not runtime_bench._cached_matches(str(path), cfg, 50)  # other max_boxes
    other = runtime_bench.bench_config(tiny_model_config(64, channels=16))
    assert not runtime_bench._cached_matches(str(path), other, 100)  # other mask width
    assert not runtime_bench._cached_matches(str(path), tiny_model_config(64), 100)  # score threshold kept
    (path / "model.json").write_text(json.dumps({**meta, "saved_model": None}))
    assert not runtime_bench._cached_matches(str(path), cfg, 100)  # incomplete bundle
    assert runtime_bench.bundle_dir_for(cfg, "build/bench").endswith("bundle-tiny-64-score0")


@pytest.mark.tf
def test_bench_runtime_refuses_a_bundle_without_saved_model(tmp_path, caplog):
    from support.onnx_bundle import write_onnx_bundle

    bundle = write_onnx_bundle(str(tmp_path / "onnx_only"))
    rc = cli.main(
        [
            "bench",
            "runtime",
            "--bundle",
            bundle,
            "--iters",
            "1",
            "--warmup",
            "0",
            "--out",
            str(tmp_path / "r.json"),
            "--no-progress",
        ]
    )
    assert rc == 2 and "SavedModel" in caplog.text
    assert not (tmp_path / "r.json").exists()


def test_interleaved_timing_in_blocks_times_all_but_the_first_call_of_each_block():
    """block=3: each variant runs 3x in a row per round; the first of each block (which pays for the switch
    from the other variant) is not timed."""
    calls = []

    def make(name):
        def fn(r):
            # a call right after the other variant is slow: what the block's untimed first call absorbs
            switched = not calls or calls[-1][0] != name
            calls.append((name, r))
            time.sleep(0.03 if switched else 0.0)

        return fn

    res = time_interleaved({"a": make("a"), "b": make("b")}, iters=2, warmup=1, progress=False, block=3)
    assert len(calls) == 2 * (1 + 3 * (1 + 2))  # first calls + 3 calls per variant in each of 3 rounds
    for name in ("a", "b"):
        assert len(res[name]["times_s"]) == 2 * 2  # 2 timed rounds x (3 - 1) timed calls
        assert max(res[name]["times_s"]) < 0.02  # no switch cost in any timed call
    with pytest.raises(ValueError, match="block"):
        time_interleaved({"a": lambda r: None}, iters=1, warmup=0, block=0)


@pytest.mark.tf
def test_bench_bundles_cli_times_each_bundle_and_its_flip_averaged_run(tmp_path, capsys):
    from support.onnx_bundle import write_onnx_bundle

    bundle = write_onnx_bundle(str(tmp_path / "onnx_only"))
    official = tmp_path / "official.json"
    official.write_text(json.dumps({"median_s": 3.0, "image_size": 640, "resnet_depth": 50}))
    out = tmp_path / "bundles.json"
    argv = ["bench", "bundles", "--model", f"tiny={bundle}", "--boxes", "3", "--iters", "2", "--warmup", "1"]
    argv += ["--threads", "1", "--no-progress", "--official-json", str(official), "--flip-average", "--out", str(out)]
    assert cli.main(argv) == 0
    res = json.loads(out.read_text())
    assert list(res["rows"]) == ["tiny", "tiny +flip"]
    assert [r["flip_average"] for r in res["rows"].values()] == [False, True]
    for r in res["rows"].values():
        assert r["fps"] == pytest.approx(1.0 / r["median_s"]) and r["backend"].startswith("onnxruntime")
    assert res["default"] == "tiny"  # the targets are the plain run's
    assert res["targets"]["fps"]["value"] == pytest.approx(res["rows"]["tiny"]["fps"])
    assert res["targets"]["official_over_ours"]["value"] == pytest.approx(3.0 / res["rows"]["tiny"]["median_s"])
    table = capsys.readouterr().out
    assert "| tiny +flip | 64² |" in table and "--flip-average" in res["command"]


@pytest.mark.tf
def test_bench_bundles_loads_sessions_as_the_frame_pipelines_do(tmp_path, monkeypatch):
    """ONNX Runtime threads sleep between runs, as `load_predictor` loads them for the node and bag-eval;
    --spin times ONNX Runtime's busy-waiting default instead."""
    from shapemask_ros.bench import bundle_bench
    from support.onnx_bundle import write_onnx_bundle

    bundle = write_onnx_bundle(str(tmp_path / "onnx_only"))
    seen: list[bool] = []
    load = bundle_bench.Predictor.load

    def spy(path, backend="auto", options=None, **kw):
        seen.append(options.spin)
        return load(path, backend, options, **kw)

    monkeypatch.setattr(bundle_bench.Predictor, "load", staticmethod(spy))
    out = tmp_path / "b.json"
    argv = ["bench", "bundles", "--model", f"tiny={bundle}", "--boxes", "2", "--iters", "1", "--warmup", "0"]
    argv += ["--threads", "1", "--no-progress", "--official-json", "", "--out", str(out)]
    assert cli.main(argv) == 0 and seen == [False] and json.loads(out.read_text())["spin"] is False
    assert cli.main([*argv, "--spin"]) == 0 and seen == [False, True] and json.loads(out.read_text())["spin"] is True
