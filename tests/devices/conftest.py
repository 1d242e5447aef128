"""Fixtures of the devices service's tests: the default backends, built once per session."""

from __future__ import annotations

import pytest

from qruntime_devices.adapters import BackendAdapter, default_backends


@pytest.fixture(scope="session")
def backends() -> dict[str, BackendAdapter]:
    return default_backends()

