#!/usr/bin/env bash
# Creates build/official_reference/venv with the official TF2 ShapeMask (tf-models-official 2.20,
# official/legacy/detection) installed from PyPI, for timing the reference implementation.
# Idempotent: a stamp file records the installed spec; rerunning with the same spec only prints versions.
#
# Why `tensorflow` and not `tensorflow-cpu`: tf-models-official 2.20.0 declares `tensorflow~=2.20.0` and
# `tensorflow-text~=2.20.0` (which itself requires `tensorflow`), so a normal resolve cannot use the
# smaller tensorflow-cpu wheel without --no-deps surgery. Both wheels run the same CPU kernels.
#
# Env overrides: PYTHON (interpreter, default python3), MODELS_SPEC (default tf-models-official==2.20.*),
# FORCE=1 (reinstall).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="${REPO_ROOT}/build/official_reference"
VENV="${BUILD_DIR}/venv"
STAMP="${VENV}/.official_reference_installed"
PYTHON="${PYTHON:-python3}"
MODELS_SPEC="${MODELS_SPEC:-tf-models-official==2.20.*}"

mkdir -p "${BUILD_DIR}"

if [[ "${FORCE:-0}" != "1" && -f "${STAMP}" && "$(cat "${STAMP}")" == "${MODELS_SPEC}" ]]; then
  echo "official_reference: ${VENV} already set up (${MODELS_SPEC}); FORCE=1 to reinstall." >&2
else
  if [[ ! -x "${VENV}/bin/python" ]]; then
    "${PYTHON}" -m venv "${VENV}"
  fi
  "${VENV}/bin/python" -m pip install -q --upgrade pip
  # One resolve so pip honours tf-models-official's own pins (TensorFlow 2.20, tf-keras 2.20, ...).
  "${VENV}/bin/python" -m pip install -q "${MODELS_SPEC}"
  # Import check of exactly what time_official.py uses, before declaring success.
  TF_CPP_MIN_LOG_LEVEL=2 "${VENV}/bin/python" -c "
from official.legacy.detection.configs import factory as config_factory
from official.legacy.detection.modeling import factory as model_factory
config_factory.config_generator('shapemask'); print('official.legacy.detection imports OK')
"
  printf '%s' "${MODELS_SPEC}" > "${STAMP}"
fi

# Versions, for the record (pip metadata, no TensorFlow import needed).
"${VENV}/bin/python" - <<'PY'
import platform
from importlib.metadata import PackageNotFoundError, version

print(f"python {platform.python_version()}")
for name in ("tf-models-official", "tensorflow", "tensorflow-cpu", "tf-keras", "tensorflow-text", "numpy"):
    try:
        print(f"{name} {version(name)}")
    except PackageNotFoundError:
        print(f"{name} (not installed)")
PY
