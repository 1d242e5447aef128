"""Every default backend passes the adapter contract (adapter_contract.py): the five simulators and the
emulated systems; the large systems' noise models take seconds to build, so those are slow."""

from __future__ import annotations

import pytest
from adapter_contract import AdapterContract

from qruntime_devices.adapters import EMULATED_SYSTEMS, SIMULATORS

LARGE = {"ibm_sherbrooke", "ibm_torino"}
NAMES = [
    pytest.param(name, marks=pytest.mark.slow) if name in LARGE else name
    for name in sorted([*SIMULATORS, *EMULATED_SYSTEMS])
]


class TestDefaultBackends(AdapterContract):
    @pytest.fixture(params=NAMES)
    def adapter(self, request, backends):
        return backends[request.param]
