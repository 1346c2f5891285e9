"""The repo root as a colcon/ament_cmake package: package.xml, CMakeLists.txt, launch file, layout.

No ROS here: package.xml is validated with catkin_pkg, CMakeLists.txt is configured and installed with
the real CMake against stub ament/rosidl modules (which fail the way the real ones do on a duplicate
Python install), and the launch file is executed against stub `launch`/`launch_ros` modules.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from catkin_pkg.package import parse_package

from support import REPO as REPO_ROOT
from support.ros import NEEDS_RCLPY

ROOT = REPO_ROOT
CMAKE = (ROOT / "CMakeLists.txt").read_text()
MSG_PACKAGES_USED_BY_NODE = {"std_msgs", "sensor_msgs", "vision_msgs", "diagnostic_msgs", "lifecycle_msgs"}
# ROS 2 Python packages (rosdep keys of the same name) that only the node may import
ROS_PYTHON_PACKAGES = {
    "rclpy", "rcl_interfaces", "diagnostic_msgs", "diagnostic_updater", "rosidl_runtime_py", "lifecycle_msgs",
    "launch", "launch_ros", "sensor_msgs", "std_msgs", "vision_msgs", "builtin_interfaces",
}  # fmt: skip


def _cmake_code(text: str) -> str:
    """CMake source without comments (so a comment that names a forbidden macro does not count)."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


CODE = _cmake_code(CMAKE)


@pytest.fixture(scope="module")
def pkg():
    package = parse_package(str(ROOT))
    package.evaluate_conditions({"ROS_VERSION": "2", "ROS_DISTRO": "jazzy", "ROS_PYTHON_VERSION": "3"})
    return package


def _names(deps) -> set[str]:
    return {d.name for d in deps if d.evaluated_condition is not False}


def test_package_xml_is_valid_format3_ament_cmake_interface_package(pkg):
    pkg.validate()  # raises InvalidPackage on schema-level problems
    assert pkg.package_format == 3
    assert pkg.name == "shapemask_ros" == re.search(r"project\((\w+)", CODE).group(1)
    assert pkg.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in {g.name for g in pkg.member_of_groups}
    build_tools = _names(pkg.buildtool_depends)
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= build_tools
    execs = _names(pkg.exec_depends)
    for needed in {
        "rosidl_default_runtime",
        "rclpy",
        "launch",
        "launch_ros",
        "python3-numpy",
        "python3-yaml",
        "python3-venv",  # the README's venv step on a stock ros:<distro> image (no ensurepip there)
    }:
        assert needed in execs, needed
    # every message package the node and the .msg files use is a runtime dependency
    assert MSG_PACKAGES_USED_BY_NODE <= execs
    # pip-only libraries are not rosdep keys in package.xml (installed from requirements-ros.txt)
    assert not execs & {"onnxruntime", "tensorflow", "keras", "rosbags", "tensorrt"}


# The non-ROS rosdep keys of package.xml, each checked by hand in ros/rosdistro's rosdep/python.yaml (resolving
# to the Ubuntu package of the same name on jammy and noble). A new key goes here only after that check.
ROSDEP_KEYS_CHECKED = {"python3-numpy", "python3-opencv", "python3-yaml", "python3-venv", "python3-pytest",
                       "python3-catkin-pkg"}  # fmt: skip


def test_every_system_rosdep_key_was_checked_against_rosdistro(pkg):
    deps = pkg.buildtool_depends + pkg.build_depends + pkg.exec_depends + pkg.test_depends
    keys = {d.name for d in deps if d.name.startswith(("python3-", "python-"))}
    assert keys - ROSDEP_KEYS_CHECKED == set()


def test_every_find_package_has_a_matching_depend(pkg):
    testing = re.search(r"if\s*\(\s*BUILD_TESTING\s*\)(.*?)endif\s*\(", CODE, re.S)
    test_block = testing.group(1) if testing else ""
    main_block = CODE.replace(test_block, "")
    build_side = _names(pkg.buildtool_depends) | _names(pkg.build_depends)
    found_main = re.findall(r"find_package\(\s*(\w+)\s+REQUIRED", main_block)
    found_test = re.findall(r"find_package\(\s*(\w+)\s+REQUIRED", test_block)
    assert found_main, "no find_package calls parsed"
    for name in found_main:
        assert name in build_side, f"find_package({name}) without <buildtool_depend>/<depend> in package.xml"
    for name in found_test:
        assert name in _names(pkg.test_depends), f"find_package({name}) in tests without <test_depend>"


def test_messages_are_generated_with_their_dependencies(pkg):
    call = re.search(r"rosidl_generate_interfaces\((.*?)\)", CODE, re.S)
    assert call, "rosidl_generate_interfaces missing"
    args = call.group(1).split()
    assert args[0] == "${PROJECT_NAME}"
    files = [a.strip('"') for a in args[1 : args.index("DEPENDENCIES")]]
    deps = set(args[args.index("DEPENDENCIES") + 1 :])
    for f in files:
        assert (ROOT / f).is_file(), f"{f} named in CMakeLists.txt does not exist"
    assert sorted(files) == sorted(f"msg/{p.name}" for p in (ROOT / "msg").glob("*.msg")), "a .msg not generated"
    # every package referenced by a field type must be a DEPENDENCY and a <depend>
    used = set()
    for f in files:
        for line in (ROOT / f).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line and "/" in line.split()[0]:
                used.add(line.split()[0].split("/")[0])
    assert used <= deps, f"msg files use {sorted(used - deps)} not in DEPENDENCIES"
    build_and_exec = _names(pkg.build_depends) & _names(pkg.exec_depends)
    assert deps <= build_and_exec, f"{sorted(deps - build_and_exec)} must be <depend> (build + exec)"


def test_python_package_is_installed_after_rosidl_without_ament_python_install_package():
    assert "ament_python_install_package" not in CODE, "duplicate target with rosidl (ros2/rosidl_python#141)"
    rosidl = CODE.index("rosidl_generate_interfaces(")
    py_dir = re.search(r"ament_get_python_install_dir\((\w+)\)", CODE)
    assert py_dir, "the site-packages directory comes from ament_cmake_python's public API"
    py_install = re.search(rf"install\(\s*DIRECTORY\s+shapemask_ros/\s+DESTINATION\s+\$\{{{py_dir.group(1)}\}}", CODE)
    assert py_install and py_install.start() > rosidl
    assert not re.search(r"\b_ament_\w+\(", CODE), "private ament macros (leading underscore) are not API"
    assert "__pycache__ EXCLUDE" in CODE
    assert re.search(r"install\(\s*PROGRAMS\s+scripts/shapemask_node\s+DESTINATION\s+lib/\$\{PROJECT_NAME\}", CODE)
    assert CODE.rstrip().endswith("ament_package()")
    assert "training" not in CODE, "training/ is a pip extra, not installed by colcon"


def test_package_layout_rules():
    assert (ROOT / "shapemask_ros" / "__init__.py").read_bytes() == b"", "generated msg package shares it"
    for reserved in ("msg", "srv", "action"):
        assert not (ROOT / "shapemask_ros" / reserved).exists(), f"shapemask_ros/{reserved} is rosidl's"
    script = ROOT / "scripts" / "shapemask_node"
    assert os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/env python3\n")
    assert (ROOT / "config" / "segment_params.yaml").is_file()
    assert (ROOT / "launch" / "segment.launch.py").is_file()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module name, imported at module level?) for every import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module.split(".")[0], id(node) in top_level))
    return out


# the node, and the tool that drives a node process from another one (test lane, node benchmark)
ROS_MODULES = {name.replace(".", "/") + ".py" for name in NEEDS_RCLPY}


def test_only_node_module_imports_rclpy():
    sources = [*(ROOT / "shapemask_ros").rglob("*.py"), *(ROOT / "training").rglob("*.py")]
    offenders = [
        str(p.relative_to(ROOT))
        for p in sources
        if str(p.relative_to(ROOT)) not in ROS_MODULES
        if any(m in ROS_PYTHON_PACKAGES for m, _ in _imports(p))
    ]
    assert not offenders, f"ROS imported outside {sorted(ROS_MODULES)}: {offenders}"
    # node.py is a module-level rclpy node (like yolo_ros's): ROS imports at the top, nothing hidden
    node_imports = _imports(ROOT / "shapemask_ros" / "node.py")
    assert ("rclpy", True) in node_imports
    assert not [m for m, top in node_imports if not top and m in ROS_PYTHON_PACKAGES]


def test_every_ros_package_the_node_imports_is_an_exec_depend(pkg):
    """package.xml must list what node.py imports from ROS (rcl_interfaces was missing once)."""
    imported = {m for m, _ in _imports(ROOT / "shapemask_ros" / "node.py")} & ROS_PYTHON_PACKAGES
    assert {"rclpy", "rcl_interfaces", "diagnostic_msgs", "diagnostic_updater"} <= imported
    # rosidl_runtime_py is not on PyPI: message classes come from their packages (node.import_message)
    assert "rosidl_runtime_py" not in imported
    missing = imported - _names(pkg.exec_depends)
    assert not missing, f"node.py imports {sorted(missing)} without <exec_depend>/<depend> in package.xml"


# ----------------------------------------------------------------------------------------------------
# CMake: configure + install against stubs of the ament / rosidl CMake API
# ----------------------------------------------------------------------------------------------------
STUBS = {
    "ament_cmake": "macro(ament_package)\n  set(STUB_AMENT_PACKAGE_CALLED TRUE)\nendmacro()\n",
    "ament_cmake_python": """
macro(_ament_cmake_python_get_python_install_dir)
  if(NOT DEFINED PYTHON_INSTALL_DIR)
    set(PYTHON_INSTALL_DIR "lib/python3/site-packages" CACHE INTERNAL "")
  endif()
endmacro()
macro(_ament_cmake_python_register_environment_hook)
  _ament_cmake_python_get_python_install_dir()
endmacro()
# the public API (ament_cmake_python, Humble and Jazzy)
function(ament_get_python_install_dir python_install_dir_out)
  _ament_cmake_python_get_python_install_dir()
  set(${python_install_dir_out} ${PYTHON_INSTALL_DIR} PARENT_SCOPE)
endfunction()
# like the real macro: one copy target per package name, so a second call is a duplicate target
macro(ament_python_install_package name)
  cmake_parse_arguments(_ARG "" "PACKAGE_DIR" "" ${ARGN})
  _ament_cmake_python_register_environment_hook()
  add_custom_target(ament_cmake_python_copy_${name} ALL)
  install(DIRECTORY "${_ARG_PACKAGE_DIR}/" DESTINATION "${PYTHON_INSTALL_DIR}/${name}")
endmacro()
""",
    "rosidl_default_generators": """
function(rosidl_generate_interfaces target)
  cmake_parse_arguments(_ARG "" "" "DEPENDENCIES" ${ARGN})
  foreach(f ${_ARG_UNPARSED_ARGUMENTS})
    if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${f}")
      message(FATAL_ERROR "interface file not found: ${f}")
    endif()
  endforeach()
  foreach(d ${_ARG_DEPENDENCIES})
    if(NOT ${d}_FOUND)
      message(FATAL_ERROR "dependency ${d} not found before rosidl_generate_interfaces")
    endif()
  endforeach()
  set(gen "${CMAKE_CURRENT_BINARY_DIR}/rosidl_generator_py/${target}")
  file(WRITE "${gen}/__init__.py" "# generated by rosidl\\n")
  file(WRITE "${gen}/msg/__init__.py" "from ._instance_mask import InstanceMask  # noqa\\n")
  file(WRITE "${gen}/msg/_instance_mask.py" "class InstanceMask: ...\\n")
  ament_python_install_package(${target} PACKAGE_DIR "${gen}")
endfunction()
""",
}


@pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("cc")), reason="needs cmake and a C compiler")
def test_cmake_installs_the_ros_layout(tmp_path):
    stub_dir = tmp_path / "stubs"
    defs = []
    testing = re.search(r"if\s*\(\s*BUILD_TESTING.*?endif\s*\(", CODE, re.S).group(0)
    for name in re.findall(r"find_package\(\s*(\w+)\s+REQUIRED", CODE.replace(testing, "")):
        d = stub_dir / name
        d.mkdir(parents=True)
        (d / f"{name}Config.cmake").write_text(STUBS.get(name, ""))
        defs.append(f"-D{name}_DIR={d}")
    build, prefix = tmp_path / "build", tmp_path / "install"
    cmd = [
        "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(build),
        f"-DCMAKE_INSTALL_PREFIX={prefix}",
        "-DBUILD_TESTING=OFF",
    ]
    configure = subprocess.run([*cmd, *defs], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    install = subprocess.run(["cmake", "--install", str(build)], capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr

    site = prefix / "lib" / "python3" / "site-packages" / "shapemask_ros"
    assert (site / "__init__.py").read_bytes() == b"", "hand-written (empty) __init__.py must win"
    assert (site / "msg" / "_instance_mask.py").is_file(), "generated messages must survive the copy"
    assert (site / "node.py").is_file() and (site / "config" / "node_config.py").is_file()
    assert not list(site.rglob("__pycache__")) and not list(site.rglob("*.pyc"))
    node = prefix / "lib" / "shapemask_ros" / "shapemask_node"
    assert node.is_file() and os.access(node, os.X_OK)
    share = prefix / "share" / "shapemask_ros"
    for rel in ["launch/segment.launch.py", "config/segment_params.yaml", "msg/InstanceMask.msg",
                "msg/InstanceMaskArray.msg"]:  # fmt: skip
        assert (share / rel).is_file(), rel
    assert not [p for p in prefix.rglob("training") if p.is_dir()], "training/ must not be installed"
    # the shipped bundles are tracked in git; real_lite0 is the node's default model_path: always installed
    for name in ("real_lite0", "demo", "real_lite0_int8"):
        files = [p.relative_to(ROOT) for p in (ROOT / "models" / name).iterdir() if p.is_file()]
        assert len(files) >= 4, name
        for rel in files:
            assert (share / rel).is_file(), rel


def test_cmake_stub_rejects_a_second_python_install(tmp_path):
    """The stub reproduces ros2/rosidl_python#141, so the layout test above would catch a regression."""
    if not shutil.which("cmake"):
        pytest.skip("needs cmake")
    d = tmp_path / "stub"
    d.mkdir()
    (d / "ament_cmake_pythonConfig.cmake").write_text(STUBS["ament_cmake_python"])
    src = tmp_path / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.8)\nproject(p NONE)\nfind_package(ament_cmake_python REQUIRED)\n"
        "ament_python_install_package(p PACKAGE_DIR a)\nament_python_install_package(p PACKAGE_DIR b)\n"
    )
    r = subprocess.run(
        ["cmake", "-S", str(src), "-B", str(tmp_path / "b"), f"-Dament_cmake_python_DIR={d}"],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "ament_cmake_python_copy_p" in r.stderr


# ----------------------------------------------------------------------------------------------------
# Launch file
# ----------------------------------------------------------------------------------------------------
LAUNCH = ROOT / "launch" / "segment.launch.py"
LAUNCH_ARGS = {
    "model",
    "backend",
    "image_topic",
    "detections_topic",
    "depth_topic",
    "camera_info_topic",
    "namespace",
    "params_file",
    "autostart",
}


def _calls(tree: ast.AST, func_name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == func_name
    ]


def test_launch_file_declares_arguments_and_a_namespaced_lifecycle_node():
    tree = ast.parse(LAUNCH.read_text())
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    assert declared == LAUNCH_ARGS
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    (node,) = _calls(tree, "LifecycleNode")
    kw = {k.arg: k.value for k in node.keywords}
    assert {"namespace", "name", "package", "executable", "parameters"} <= set(kw)  # Humble/Jazzy require ns
    assert kw["package"].value == "shapemask_ros" and kw["executable"].value == "shapemask_node"
    # the node name must match the params file's key, or the file silently does not apply
    top_key = next(iter(yaml.safe_load((ROOT / "config" / "segment_params.yaml").read_text())))
    assert top_key.rsplit("/", 1)[-1] == kw["name"].value


class _Recorder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Recorder):
    def perform(self, context: Any) -> str:
        return context.launch_configurations[self.args[0]]


@pytest.fixture()
def launch_module(monkeypatch):
    """Execute the launch file with stand-ins for launch / launch_ros (not installed here)."""
    mods = {
        "launch": {"LaunchContext": _Recorder, "LaunchDescription": _Recorder},
        "launch.actions": {"DeclareLaunchArgument": _Recorder, "OpaqueFunction": _Recorder},
        "launch.substitutions": {
            "LaunchConfiguration": _LaunchConfiguration,
            "PathJoinSubstitution": _Recorder,
        },
        "launch_ros": {},
        "launch_ros.actions": {"LifecycleNode": _Recorder},
        "launch_ros.substitutions": {"FindPackageShare": _Recorder},
    }
    for name, attrs in mods.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_setup(module: Any, **given: str) -> _Recorder:
    ld = module.generate_launch_description()
    defaults = {a.args[0]: a.kwargs["default_value"] for a in ld.args[0] if a.args}
    assert set(defaults) == LAUNCH_ARGS
    (opaque,) = [a for a in ld.args[0] if "function" in a.kwargs]
    context = types.SimpleNamespace(launch_configurations={**{k: v for k, v in defaults.items()}, **given})
    (node,) = opaque.kwargs["function"](context)
    return node


def test_launch_defaults_keep_params_file_values_and_autostart(launch_module):
    node = _run_setup(launch_module)
    params = node.kwargs["parameters"]
    assert len(params) == 1, "no override dict when no argument is given (the file's values win)"
    assert params[0].args == ("params_file",)
    assert node.kwargs["arguments"] == ["--autostart", "true"]
    assert node.kwargs["namespace"].args == ("namespace",)


def test_launch_arguments_override_only_given_parameters(launch_module):
    node = _run_setup(launch_module, model="/m", image_topic="/cam/image/compressed", autostart="false")
    assert node.kwargs["parameters"][1] == {"model_path": "/m", "image_topic": "/cam/image/compressed"}
    assert node.kwargs["arguments"] == ["--autostart", "false"]
    node = _run_setup(launch_module, detections_topic="none")
    assert node.kwargs["parameters"][1] == {"detections_topic": ""}, "'none' selects self-detection"
