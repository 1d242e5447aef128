"""The client against the real suite: auth, programs, devices and jobs on one real socket.

One suite serves a module's tests (``suite``); each test acts as its own instance (``account``), so
the jobs and private programs one test makes never show in another's listings. Tests that change
shared state (a backend's queue, public programs) start a suite of their own with ``start_suite``.

What the fakes used to record is observed on the client's own channel instead: ``recorder`` wraps
every channel the client opens with an interceptor that notes each call (see client_support.py).
The servers stay real.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from client_support import INSTANCE_NAME, SERVICES, SIMULATION_MEMORY, WORKERS, Recorder
from qruntime import IBMRuntimeService, _channel


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Records the calls of every service object created after it (creation's CreateToken included)."""
    recorder = Recorder()
    create = _channel.create_channel
    monkeypatch.setattr(_channel, "create_channel",
                        lambda url, ca_file=None: grpc.intercept_channel(create(url, ca_file), recorder))
    return recorder


@pytest.fixture(scope="module")
def suite(start_module_suite):
    # A fixed simulation memory, so that the simulators' qubit counts do not depend on this machine's.
    return start_module_suite(*SERVICES, workers=WORKERS, simulation_memory_bytes=SIMULATION_MEMORY)


@pytest.fixture
def account(suite) -> tuple[str, str]:
    """(API key, CRN) of a new Lite instance named INSTANCE_NAME, Manager role: this test's own."""
    return suite.make_user(instance_name=INSTANCE_NAME)


@pytest.fixture
def service(suite, account, recorder) -> Iterator[IBMRuntimeService]:
    with IBMRuntimeService(token=account[0], instance=INSTANCE_NAME, url=suite.address) as svc:
        yield svc
