"""Layers point down only (issue 16): a static import scan and a real import of every module without training.

    utils < ops, datasets < config < model, geometry < export, runtime < evaluation < ros_bridge
          < bag, bench, node, demo, cli

A module may import its own package and any lower layer, never a higher one, and nothing in `shapemask_ros`
imports the training package (whatever name it is installed under). The scan reads every import statement,
including those inside functions and `if TYPE_CHECKING:` blocks, so a lazy import cannot hide an upward edge.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO as REPO_ROOT
from support.ros import NEEDS_RCLPY

REPO = REPO_ROOT
PACKAGE = REPO / "shapemask_ros"
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "utils"),
    ("ops", "datasets"),
    ("config",),
    ("model", "geometry"),
    ("export", "runtime"),
    ("evaluation",),
    ("ros_bridge",),
    ("bag", "bench", "node", "demo", "cli"),
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}
TRAINING = ("training", "shapemask_training")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _part(path: Path) -> str:
    """The top-level part of shapemask_ros a file belongs to: 'model' for model/fpn.py, 'cli' for cli.py."""
    rel = path.relative_to(PACKAGE).with_suffix("").parts
    return rel[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
            if node.module == "shapemask_ros":  # `from shapemask_ros import bag`
                out += [(node.lineno, f"shapemask_ros.{a.name}") for a in node.names]
    return out


def upward_imports() -> list[str]:
    """Every import that points up a layer or into the training package, as 'file:line: a -> b'."""
    bad = []
    for path in _modules():
        src = _part(path)
        assert src in LAYER_OF, f"{path}: top-level part {src!r} has no layer in test_layering.LAYERS"
        for line, name in _imports(path):
            top = name.split(".")[0]
            where = f"{path.relative_to(REPO)}:{line}"
            if top in TRAINING:
                bad.append(f"{where}: imports the training package ({name})")
            elif top == "shapemask_ros" and "." in name:
                dst = name.split(".")[1]
                if dst != src and LAYER_OF.get(dst, -1) > LAYER_OF[src]:
                    bad.append(f"{where}: {src} (layer {LAYER_OF[src]}) -> {dst} (layer {LAYER_OF[dst]})")
    return bad


def test_every_import_points_down_a_layer():
    assert upward_imports() == []


def test_the_scan_catches_an_upward_and_a_training_import(tmp_path, monkeypatch):
    """The scan itself works: a lazy upward import and a training import planted in a copy are reported."""
    fake = tmp_path / "shapemask_ros"
    (fake / "model").mkdir(parents=True)
    (fake / "model" / "x.py").write_text(
        "def f():\n    from shapemask_ros.ros_bridge import messages\n    import shapemask_training.losses\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    bad = upward_imports()
    assert len(bad) == 2
    assert "model (layer 3) -> ros_bridge (layer 6)" in bad[0] and "training package" in bad[1]


BLOCKER = """
import importlib, importlib.abc, pkgutil, sys, traceback
BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked for this test: {{name}}")
        return None

sys.meta_path.insert(0, Block())
import shapemask_ros
failed = []
names = [m.name for m in pkgutil.walk_packages(shapemask_ros.__path__, "shapemask_ros.")]
for name in ["shapemask_ros"] + names:
    if name in {skip!r}:
        continue
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc(limit=1).strip().splitlines()[-1])
print(len(names))
print("\\n".join(failed))
"""


@pytest.mark.tf
def test_every_module_imports_without_the_training_package():
    code = BLOCKER.format(blocked=set(TRAINING), skip=set(NEEDS_RCLPY))
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    count, *failed = r.stdout.strip().splitlines()
    assert int(count) >= 60, "the walk found too few modules"
    assert [f for f in failed if f] == []
