"""A `create_backend` stand-in that records the `BackendOptions` it is given and stops the load there."""

from __future__ import annotations

from typing import Any

import pytest

from shapemask_ros.runtime import predictor as predictor_module
from shapemask_ros.runtime.backends import BackendOptions


class StopLoading(Exception):
    """Raised by the recording backend: a test needs only the options that reached it (not an error any
    loader turns into a user error)."""


def record_backend_options(monkeypatch: pytest.MonkeyPatch) -> list[BackendOptions]:
    """Patch the predictor's `create_backend`; returns the list each call's options are appended to."""
    seen: list[BackendOptions] = []

    def create_backend(bundle: Any, backend: str = "auto", options: BackendOptions | None = None) -> Any:
        seen.append(options or BackendOptions())
        raise StopLoading(backend)

    monkeypatch.setattr(predictor_module, "create_backend", create_backend)
    return seen
