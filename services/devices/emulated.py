"""Physical systems emulated by qiskit-aer from the calibration snapshots of real IBM systems.

qiskit-ibm-runtime's `fake_provider` ships each system's configuration and calibration (coupling map,
native gates, T1/T2, gate and readout errors, durations) as of a snapshot date. An emulated system
takes the circuits the real one takes (its ISA: circuits transpiled for its target) and simulates
them with the noise the snapshot implies. What is costly is built once per worker process and kept:
the system's noise model (2-5 s for 127-156 qubits) and the restricted models of the qubit sets that
circuits use (reduction.py), so a Bell circuit costs milliseconds, not the system's size.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from google.protobuf import duration_pb2, timestamp_pb2
from qiskit import QuantumCircuit
from qiskit.providers import BackendV2
from qiskit.transpiler import Target
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel
from qruntime.devices.v1 import backend_pb2

from . import memory
from .adapters import PHYSICAL, SIMULATOR_MAX_EXPERIMENTS, SIMULATOR_MAX_SHOTS, BackendAdapter, gate_names, run_on_aer
from .reduction import SubModels, active_qubits, reduce, reducible

WARM_UP_QUBITS = 27  # systems up to this size build their noise model at warm-up


class EmulatedSystemAdapter(BackendAdapter):
    """A physical system emulated by qiskit-aer from a real system's calibration snapshot.

    Like the real system (and IBM's service since 2024) it runs circuits in its instruction set
    architecture only: native gates on qubits and couplings it has, as Qiskit's transpiler makes them
    for its target (the client's `RuntimeBackend.target`); anything else is refused with
    CIRCUIT_NOT_IN_ISA. The noise models are built on first use (or in warm_up), once per process:
    they do not travel when the adapter is pickled.
    """

    kind = PHYSICAL

    def __init__(self, system: BackendV2, name: str = "", description: str = "") -> None:
        self.system = system
        self.name = name or system.name
        self.emulation = backend_pb2.Emulation(source=f"{type(system).__module__}.{type(system).__name__}")
        updated = _last_update(system)
        if updated is not None:
            self.emulation.snapshot_time.CopyFrom(updated)
        self.description = description or (
            f"{system.num_qubits}-qubit IBM Quantum system {self.name}, emulated by qiskit-aer "
            f"with the noise of its calibration snapshot of {_snapshot_date(system)}"
        )
        self._configuration = configuration_from_backend(system, max_execution_time=self.max_execution_time)
        self._properties = properties_from_backend(system)
        self._built()

    def _built(self) -> None:
        self._lock = threading.Lock()
        self._simulator: AerSimulator | None = None
        self._noise: SubModels | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for built in ("_lock", "_simulator", "_noise"):
            state.pop(built)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._built()

    def configuration(self) -> backend_pb2.BackendConfiguration:
        return self._configuration

    def properties(self) -> backend_pb2.BackendProperties:
        return self._properties

    def target(self) -> Target:
        return self.system.target

    def execute(
        self, circuits: list[QuantumCircuit], shots: int, seed: int | None, memory: bool
    ) -> list[backend_pb2.CircuitResult]:
        simulator, noise = self._emulator()
        if not all(reducible(c) for c in circuits):  # control flow: at full size, with the full model
            return run_on_aer(simulator, self.name, circuits, circuits, shots, seed, memory, noise_model=noise.full)
        # One batch for all the circuits, reduced to the qubits any of them touches (usually the same
        # few: the transpiler lays small circuits out alike); Aer drops each circuit's idle ones itself.
        active = tuple(sorted(set().union(*(active_qubits(c) for c in circuits))))
        reduced = [reduce(c, active) for c in circuits]
        return run_on_aer(simulator, self.name, reduced, circuits, shots, seed, memory,
                          noise_model=noise.for_qubits(active))

    def memory_estimates(self, circuits: Sequence[QuantumCircuit], shots: int) -> list[memory.Estimate]:
        limit = self.memory_limit
        return [memory.estimate(c, memory.AUTOMATIC, shots=shots, limit=limit, noisy=True) for c in circuits]

    def warm_up(self) -> None:
        # A large system's noise model costs each worker 2-5 s of CPU (more on a busy machine), which
        # every start of the service would pay for every worker: it is built on the system's first run
        # in a worker instead, and kept.
        if self.system.num_qubits <= WARM_UP_QUBITS:
            self._emulator()

    def _emulator(self) -> tuple[AerSimulator, SubModels]:
        """An ideal simulator (noise comes with each run) and the system's noise models."""
        with self._lock:
            if self._simulator is None:
                self._noise = SubModels(system_noise_model(self.system))
                self._simulator = AerSimulator()
                if self.memory_limit:  # see AerSimulatorAdapter.limit_memory
                    self._simulator.set_options(max_memory_mb=max(1, self.memory_limit >> 20))
            return self._simulator, self._noise


def system_noise_model(system: BackendV2) -> NoiseModel:
    """The noise model a system's own simulation uses. qiskit-ibm-runtime's fake backends build theirs
    from the full calibration record (readout errors asymmetric as measured: P(0|1) ≠ P(1|0)), and
    their local testing mode samples from it; qiskit-aer's NoiseModel.from_backend reads the Target,
    which keeps one symmetric readout error, and samples a measurably different distribution. So a
    fake backend's own model is used when it has one (a private method, checked by the distribution
    test against local testing mode), Aer's otherwise."""
    own = getattr(system, "_get_noise_model_from_backend_v2", None)
    return own() if own is not None else NoiseModel.from_backend(system)


def configuration_from_backend(
    backend: BackendV2, *, max_execution_time: int
) -> backend_pb2.BackendConfiguration:
    """A BackendConfiguration from a qiskit BackendV2 (a real system's, or an emulated one's)."""
    legacy = backend.configuration() if hasattr(backend, "configuration") else None
    max_experiments = getattr(legacy, "max_experiments", 0) or backend.max_circuits
    coupling = sorted(backend.coupling_map.get_edges()) if backend.coupling_map is not None else []
    return backend_pb2.BackendConfiguration(
        num_qubits=backend.num_qubits,
        basis_gates=gate_names(backend.operation_names),
        coupling_map=[backend_pb2.CouplingEdge(control=a, target=b) for a, b in coupling],
        max_shots=getattr(legacy, "max_shots", 0) or SIMULATOR_MAX_SHOTS,
        max_experiments=max_experiments or SIMULATOR_MAX_EXPERIMENTS,
        max_execution_time=duration_pb2.Duration(seconds=max_execution_time),
        dt=backend.dt or 0.0,
    )


def properties_from_backend(backend: BackendV2) -> backend_pb2.BackendProperties:
    """BackendProperties from a BackendV2's target: T1, T2, frequency and readout error per qubit,
    error and duration per gate and qubits."""
    target = backend.target
    measure = target["measure"] if "measure" in target.operation_names else {}
    qubits = []
    for index in range(backend.num_qubits):
        props = target.qubit_properties[index] if target.qubit_properties else None
        readout = measure.get((index,))
        qubits.append(
            backend_pb2.QubitProperties(
                qubit=index,
                t1=getattr(props, "t1", None) or 0.0,
                t2=getattr(props, "t2", None) or 0.0,
                frequency=getattr(props, "frequency", None) or 0.0,
                readout_error=(readout.error if readout is not None else None) or 0.0,
            )
        )
    gates = [
        backend_pb2.GateProperties(
            gate=name, qubits=list(qargs), error=props.error or 0.0, duration=props.duration or 0.0
        )
        for name in gate_names(target.operation_names)
        for qargs, props in sorted(target[name].items(), key=lambda item: item[0] or ())
        if qargs is not None and props is not None
    ]
    properties = backend_pb2.BackendProperties(qubits=qubits, gates=gates)
    updated = _last_update(backend)
    if updated is not None:
        properties.last_update_time.CopyFrom(updated)
    return properties


def _last_update(backend: BackendV2) -> timestamp_pb2.Timestamp | None:
    legacy = backend.properties() if hasattr(backend, "properties") else None
    when = getattr(legacy, "last_update_date", None)
    if when is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _snapshot_date(backend: BackendV2) -> str:
    stamp = _last_update(backend)
    return stamp.ToDatetime().date().isoformat() if stamp is not None else "(undated)"


