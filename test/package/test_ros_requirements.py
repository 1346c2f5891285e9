"""requirements-ros.txt + package.xml cover every third-party import of what runs in a ROS environment (issue 27).

What runs there: the node and the commands documented next to it (bag-eval, make-demo-bag), with every
module they import, lazily or not. Each third-party import must come from package.xml (a ROS package, or the
rosdep key of a Python library), from requirements-ros.txt, or be an optional backend that is only imported
lazily. And every line of requirements-ros.txt must be imported by something that runs there.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement

from support import REPO

ENTRY_MODULES = ("shapemask_ros.node", "shapemask_ros.bag.evaluation.eval_cli", "shapemask_ros.bag.scenes.demo_bag")
# Python libraries rosdep installs from package.xml (the apt package the key resolves to on Ubuntu)
ROSDEP_KEY_OF = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml"}
DIST_OF = {"yaml": "pyyaml"}  # import name -> pip distribution, where they differ
# Backends a user adds on purpose (docs/ros.md, docs/tensorrt.md); the node runs without them.
OPTIONAL = {
    "tensorflow": "TensorFlow backend, gs:// paths",
    "keras": "TensorFlow backend",
    "tensorrt": "TensorRT backend",
    "cuda": "TensorRT backend (cuda-python)",
    "ray": "fleet bag-eval on a Ray cluster (--ray; pip extra shapemask_ros[ray])",
}


@dataclass
class Closure:
    modules: set[str] = field(default_factory=set)  # shapemask_ros modules reached
    eager: set[str] = field(default_factory=set)  # ... through module-level imports only
    third_party: dict[str, set[str]] = field(default_factory=dict)  # top-level name -> importing files
    eager_third_party: dict[str, set[str]] = field(default_factory=dict)  # imported at module level of an eager one


def _source(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for p in (base / "__init__.py", base.with_suffix(".py")):
        if p.is_file():
            return p
    return None


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement, `if TYPE_CHECKING:` blocks excluded."""
    out: list[tuple[str, bool]] = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, top) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            out.append((base, top))
            out.extend((f"{base}.{a.name}", top) for a in node.names)  # `from pkg import module`
        inner = top and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return out


def import_closure(entries: tuple[str, ...] = ENTRY_MODULES) -> Closure:
    """Every shapemask_ros module the entry modules import (transitively, parent packages included)."""
    c = Closure()
    todo = [(m, True) for m in entries]
    while todo:
        module, eager = todo.pop()
        if module in c.modules and (not eager or module in c.eager):
            continue
        c.modules.add(module)
        if eager:
            c.eager.add(module)
        parts = module.split(".")
        todo += [(".".join(parts[:i]), eager) for i in range(1, len(parts))]
        path = _source(module)
        assert path is not None, module
        for name, top in _imports(path, module):
            first = name.split(".")[0]
            if first == "shapemask_ros":
                if _source(name) is not None:
                    todo.append((name, eager and top))
            elif first not in sys.stdlib_module_names and first != "__future__":
                rel = str(path.relative_to(REPO))
                c.third_party.setdefault(first, set()).add(rel)
                if eager and top:
                    c.eager_third_party.setdefault(first, set()).add(rel)
    return c


def requirements_ros() -> dict[str, Requirement]:
    reqs = {}
    for line in (REPO / "requirements-ros.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            reqs[re.sub(r"[-_.]+", "-", r.name).lower()] = r
    return reqs


def package_xml_runtime_deps() -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip() for tag in ("depend", "exec_depend") for e in root.iter(tag) if e.text}


def _dist(name: str) -> str:
    return DIST_OF.get(name, name).lower()


def test_every_third_party_import_is_declared():
    closure, reqs, xml_deps = import_closure(), requirements_ros(), package_xml_runtime_deps()
    assert "shapemask_ros.ros_bridge.frame_processor" in closure.eager  # the walk follows the node's imports
    undeclared = []
    for name, files in sorted(closure.third_party.items()):
        declared = (
            name in xml_deps  # a ROS package (rclpy, diagnostic_updater, ...): rosdep installs it
            or ROSDEP_KEY_OF.get(name) in xml_deps
            or _dist(name) in reqs
            or name in OPTIONAL
        )
        if not declared:
            undeclared.append(f"{name} (imported by {', '.join(sorted(files))})")
    assert undeclared == [], "add to requirements-ros.txt (pip) or package.xml (rosdep)"


def test_optional_backends_are_only_imported_lazily():
    # A module-level import of TensorFlow anywhere the node imports would make it a hard requirement.
    eager = {n: sorted(f) for n, f in import_closure().eager_third_party.items() if n in OPTIONAL}
    assert eager == {}


def test_every_requirement_is_imported_by_what_runs_under_ros():
    imported = {_dist(n) for n in import_closure().third_party}
    stale = sorted(set(requirements_ros()) - imported)
    assert stale == [], "requirements-ros.txt lists packages nothing in the ROS environment imports"


def test_numpy_line_says_what_each_distro_ends_up_with():
    numpy = requirements_ros()["numpy"].specifier
    assert "1.26.4" in numpy  # Jazzy's python3-numpy, kept; and what pip puts into Humble's venv
    assert "1.21.5" not in numpy  # Humble's python3-numpy: below ONNX Runtime's floor, so replaced (as said)
    assert "2.0.0" not in numpy  # ROS's message modules are built against NumPy 1.x


def test_the_ros_core_imports_without_tensorflow_or_training():
    # A real import (not the AST walk) of every module the node imports at module level, with the optional
    # backends and the training package blocked; under `make test-distro` this is the requirements-ros.txt
    # environment with Jazzy's OpenCV and NumPy. The node module itself needs rclpy (test/node covers it).
    modules = sorted(m for m in import_closure().eager if m != "shapemask_ros.node")
    blocked = sorted(set(OPTIONAL) | {"training", "shapemask_training"})
    code = (
        "import importlib, importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'blocked for this test: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(len(sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(modules) >= 20


def test_docs_point_to_the_file_instead_of_repeating_it():
    # docs/ros.md and the README's ROS section install requirements-ros.txt; no pip line names its packages.
    reqs = set(requirements_ros())
    for doc in ("docs/ros.md", "README.md"):
        text = (REPO / doc).read_text()
        assert "pip install -r src/shapemask_ros/requirements-ros.txt" in text, doc
        for line in text.splitlines():
            if "pip install" not in line:
                continue
            args = line.split("pip install", 1)[1].split("#", 1)[0].split()
            named = {re.sub(r"[<>=!~;\[].*", "", a.strip("\"'`")).lower() for a in args if not a.startswith("-")}
            assert not named & reqs, f"{doc}: {line.strip()!r} repeats requirements-ros.txt"
