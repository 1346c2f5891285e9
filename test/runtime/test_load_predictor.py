"""`load_predictor(config)`: the one way the node, bag-eval, the demo and a fleet load a predictor.

The bag paths (bag-eval, fleet workers) are checked in test/bag/test_eval.py with the same recording backend.
"""

from __future__ import annotations

import ast

import pytest

from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.runtime.predictor import ModelNotFoundError, Predictor, load_predictor
from support import REPO
from support.backends import StopLoading, record_backend_options

DEMO_MODEL = str(REPO / "models" / "demo")


def test_the_config_reaches_the_backend(monkeypatch, tmp_path):
    seen = record_backend_options(monkeypatch)
    cfg = NodeConfig(model_path=DEMO_MODEL, backend="onnxruntime", engine_cache_dir=str(tmp_path / "engines"))
    with pytest.raises(StopLoading, match="onnxruntime"):
        load_predictor(cfg, intra_op_num_threads=3)
    assert seen[0].engine_cache_dir == str(tmp_path / "engines") and seen[0].intra_op_num_threads == 3
    with pytest.raises(StopLoading):
        load_predictor(NodeConfig(model_path=DEMO_MODEL))
    assert seen[1].engine_cache_dir is None  # "" = the default cache
    assert not seen[0].spin and not seen[1].spin  # the frame pipelines' default: threads sleep between runs


def test_the_predictor_gets_the_mask_settings():
    cfg = NodeConfig(model_path=DEMO_MODEL, backend="onnxruntime", mask_threshold=0.7, flip_average=True)
    p = load_predictor(cfg, intra_op_num_threads=1)
    assert isinstance(p, Predictor) and p.mask_threshold == 0.7 and p.flip_average


def test_spin_off_reaches_every_onnxruntime_session():
    p = load_predictor(NodeConfig(model_path=DEMO_MODEL, backend="onnxruntime"), intra_op_num_threads=1)  # default
    sessions = p.runtime_backend._sessions
    assert sessions and all(
        s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
        for s in sessions.values()
    )
    q = load_predictor(NodeConfig(model_path=DEMO_MODEL, backend="onnxruntime"), intra_op_num_threads=1, spin=True)
    opts = next(iter(q.runtime_backend._sessions.values())).get_session_options()
    with pytest.raises(RuntimeError, match="does not have"):  # unset: ONNX Runtime's default (spinning)
        opts.get_session_config_entry("session.intra_op.allow_spinning")


def test_a_missing_bundle_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model bundle not found"):
        load_predictor(NodeConfig(model_path=str(tmp_path / "nope")))


def test_the_node_loads_through_load_predictor():
    """node.py imports rclpy (not in this venv): read its source. The node hands its whole config over and
    keeps load_predictor's sleeping ONNX Runtime threads (the real lane checks the session log line too)."""
    tree = ast.parse((REPO / "shapemask_ros" / "node.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    named = [ast.unparse(c) for c in calls if ast.unparse(c.func) in ("load_predictor", "Predictor.load")]
    assert named == ["load_predictor(cfg)"]


def test_sleeping_threads_are_the_one_default_of_every_way_to_load():
    """BackendOptions.spin is the package's one default: load_predictor and Predictor.load without options both
    let ONNX Runtime's threads sleep between runs."""
    from shapemask_ros.runtime.backends import BackendOptions

    assert BackendOptions().spin is False
    p = Predictor.load(DEMO_MODEL, backend="onnxruntime")
    assert all(
        s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
        for s in p.runtime_backend._sessions.values()
    )
