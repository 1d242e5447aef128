"""Backends plugged in as hardware would be, for the tests: they pickle, and the simulation workers
import this module from the path the service hands them, as they would a vendor's adapter."""

from __future__ import annotations

import os
import time
from pathlib import Path

from qruntime.devices.v1 import backend_pb2

from qruntime_devices.adapters import BackendAdapter

MiB = 1 << 20


class PluggedAdapter(BackendAdapter):
    """A 5-qubit backend whose runs answer "0" for every shot."""

    def __init__(self, name: str, kind: str = "physical") -> None:
        self.name, self.kind = name, kind

    def configuration(self):
        return backend_pb2.BackendConfiguration(num_qubits=5, max_shots=1000, max_experiments=10)

    def properties(self):
        return backend_pb2.BackendProperties()

    def execute(self, circuits, shots, seed, memory):
        return [backend_pb2.CircuitResult(counts={"0": shots}) for _ in circuits]


class GatedAdapter(PluggedAdapter):
    """Each run blocks until the test opens its gate, the file <folder>/<seed>.open; while it runs,
    <folder>/<seed>.running holds the worker's pid, so the test sees runs from outside the workers."""

    def __init__(self, name: str, kind: str, folder: Path) -> None:
        super().__init__(name, kind)
        self.folder = Path(folder)

    def execute(self, circuits, shots, seed, memory):
        running = self.folder / f"{seed}.running"
        running.write_text(str(os.getpid()))
        try:
            deadline = time.monotonic() + 30
            while not (self.folder / f"{seed}.open").exists():
                assert time.monotonic() < deadline, "the gate never opened"
                time.sleep(0.01)
            return super().execute(circuits, shots, seed, memory)
        finally:
            running.unlink()


class HungryAdapter(PluggedAdapter):
    """Estimates nothing and then touches `seed` MiB: the estimate the memory guard trusted was wrong."""

    def execute(self, circuits, shots, seed, memory):
        block = bytearray(seed * MiB)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        return super().execute(circuits, shots, seed, memory)


class CrashingAdapter(PluggedAdapter):
    """A simulator with a bug that kills its process (SIGABRT)."""

    def execute(self, circuits, shots, seed, memory):
        os.abort()


class BrokenWarmUpAdapter(PluggedAdapter):
    """Its calibration data cannot be fetched at warm-up."""

    def warm_up(self):
        raise RuntimeError("no calibration data")
