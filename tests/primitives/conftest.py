"""Fixtures of the primitives tests: one real suite per module (auth, programs, devices, jobs on one
socket, real simulation workers), and service objects of a Lite and a Standard instance."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from qruntime import IBMRuntimeService

SERVICES = ("programs", "devices", "jobs")
SIMULATION_MEMORY = 4 << 30  # fixed, so the simulators' widths do not depend on the machine


@pytest.fixture(scope="module")
def suite(start_module_suite):
    return start_module_suite(*SERVICES, workers=4, simulation_memory_bytes=SIMULATION_MEMORY)


@pytest.fixture(scope="module")
def lite(suite) -> Iterator[IBMRuntimeService]:
    """A Lite instance's service object: the simulators."""
    key, crn = suite.make_user(plan="lite", instance_name="lite")
    with IBMRuntimeService(token=key, instance=crn, url=suite.address) as service:
        yield service


@pytest.fixture(scope="module")
def standard(suite) -> Iterator[IBMRuntimeService]:
    """A Standard instance's service object: the emulated physical systems."""
    key, crn = suite.make_user(plan="standard", instance_name="standard")
    with IBMRuntimeService(token=key, instance=crn, url=suite.address) as service:
        yield service
