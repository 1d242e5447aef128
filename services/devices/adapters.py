"""Backends: the plug-in point between the devices service and whatever runs circuits.

Every backend the service offers is a BackendAdapter registered under its name. The service only
ever asks an adapter for its configuration, its calibration data and to run circuits, so plugging in
real hardware means writing one class:

    class AcmeSystemAdapter(BackendAdapter):
        kind = "physical"                     # concurrency 1, 8 h per job unless overridden
        def __init__(self, client): ...       # the vendor's SDK or a qiskit BackendV2
        def configuration(self): ...          # emulated.configuration_from_backend(...) for a BackendV2
        def properties(self): ...             # emulated.properties_from_backend(backend) for a BackendV2
        def target(self): ...                 # the system's qiskit Target: circuits must be in its ISA
        def execute(self, circuits, shots, seed, memory): ...  # blocking; submit, wait

and registering it by name: `default_backends(extra=[AcmeSystemAdapter(...)])`, or the component's
`backends=` argument. `check` (validate, then the memory guard) runs before `execute`, so every
backend rejects bad input with the same typed errors. Every adapter must pass the contract suite,
tests/devices/adapter_contract.py: subclass its AdapterContract with an `adapter` fixture (see
test_devices_adapter_contract.py, where the simulators and the emulated systems pass it).

The service keeps its adapters for their configuration and calibration data; circuits are checked
and run by copies in worker processes (see pool.py), sent there pickled. So an adapter must pickle,
and its class must live in a module the workers can import (not in `__main__`); `execute` runs in a
worker, one run at a time per worker, so it may block and may keep what it builds (noise models) for
the next run.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from google.protobuf import duration_pb2
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import CONTROL_FLOW_OP_NAMES
from qiskit.circuit.library import get_standard_gate_name_mapping
from qiskit.result import Result
from qiskit.transpiler import Target
from qiskit.transpiler.exceptions import TranspilerError
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel
from qruntime.devices.v1 import backend_pb2

from qruntime_kit.errors import FailedPrecondition, Internal, InvalidArgument

from . import memory
from .circuits import DIRECTIVES, check_circuits, check_isa, circuit_results, iter_operation_names, register_names
from .final_states import measured_probabilities
from .sampling import FinalMeasurements, draw_shots, final_measurements, generator

SIMULATOR, PHYSICAL = "simulator", "physical"
# Below Aer's statevector_parallel_threshold (14) it never parallelises a state's update, only shots.
SMALL_CIRCUIT_QUBITS = 14
# Methods whose small ideal circuits are simulated once and their shots drawn here (sampling.py).
_SAMPLED_METHODS = frozenset({"automatic", "statevector"})
HOUR = 3600
# IBM's cloud simulators took at most 100,000 shots and 300 circuits per job; ours do the same.
SIMULATOR_MAX_SHOTS = 100_000
SIMULATOR_MAX_EXPERIMENTS = 300
# Instructions a target lists that are not gates, so they stay out of basis_gates and gate properties.
_NOT_GATES = CONTROL_FLOW_OP_NAMES | {"measure", "reset", "delay", "store", "break_loop", "continue_loop"}
# A quick run (RunCircuitsRequest.only_if_quick): small enough to run within the call that submits its
# job. At under SMALL_CIRCUIT_QUBITS, 1,000 instructions simulate in a few milliseconds and 100,000
# shots are drawn in about 30 (sampling.py); transpiling (40-100 ms) is never quick.
QUICK_MAX_INSTRUCTIONS = 1000
QUICK_MAX_SHOTS = 100_000


def not_quick(why: str) -> FailedPrecondition:
    """The answer to a run asked for only if quick (RunCircuitsRequest.only_if_quick) that is not."""
    return FailedPrecondition(f"the run is not quick: {why}; nothing ran", reason="NOT_QUICK")


class BackendAdapter(abc.ABC):
    """One backend: a simulator or a physical system that runs circuits.

    Subclasses set name, kind and description, and implement configuration, properties and execute.
    """

    name: str
    kind: Literal["simulator", "physical"]
    description: str = ""
    # What one simulation may use, in bytes; 0: no limit. Set by the devices service (limit_memory).
    memory_limit: int = 0
    # Whether it runs any circuit that fits it, exactly and in reasonable time; False for the stabilizer
    # simulators, which a least-busy choice (that knows nothing of the job's circuits) must not pick.
    universal: bool = True
    # For a physical system emulated by a simulator: where its calibration data come from; else None.
    emulation: backend_pb2.Emulation | None = None

    @property
    def concurrency(self) -> int:
        """How many runs may execute at once; the rest wait in the backend's queue."""
        return 2 if self.kind == SIMULATOR else 1

    @property
    def max_execution_time(self) -> int:
        """The longest one job may run on this backend, in seconds."""
        return 3 * HOUR if self.kind == SIMULATOR else 8 * HOUR

    @abc.abstractmethod
    def configuration(self) -> backend_pb2.BackendConfiguration:
        """What the backend can run; fixed for the backend. Called on the event loop: keep it cheap
        (build it once)."""

    @abc.abstractmethod
    def properties(self) -> backend_pb2.BackendProperties:
        """Its latest calibration data; empty for ideal simulators. Called from a worker thread, so
        it may fetch fresh calibration data."""

    @abc.abstractmethod
    def execute(
        self, circuits: list[QuantumCircuit], shots: int, seed: int | None, memory: bool
    ) -> list[backend_pb2.CircuitResult]:
        """Run circuits already checked by validate; blocking, called from a worker thread."""

    def warm_up(self) -> None:
        """Pay start-up costs (loading models, first runs) before the first caller does; optional."""
        return None

    def limit_memory(self, limit: int) -> None:
        """Let one simulation use at most limit bytes; a simulator reports the qubits that fit."""
        self.memory_limit = limit

    def memory_estimates(self, circuits: Sequence[QuantumCircuit], shots: int) -> list[memory.Estimate]:
        """What simulating each circuit takes; real hardware takes none of this machine's memory."""
        return [memory.Estimate("", circuit.num_qubits, 0) for circuit in circuits]

    def check(self, circuits: Sequence[QuantumCircuit], shots: int) -> list[memory.Estimate]:
        """Everything a run checks before it executes: validate, then the memory guard. Returns the
        estimates."""
        self.validate(circuits, shots)
        estimates = self.memory_estimates(circuits, shots)
        if self.memory_limit:
            memory.check_fits(circuits, estimates, limit=self.memory_limit, backend=self.name)
        return estimates

    def quick(self, batches: Sequence[tuple[int, Sequence[QuantumCircuit]]]) -> bool:
        """Whether running these checked circuits, in batches of (shots, circuits), takes a few
        milliseconds at most, surely (RunCircuitsRequest.only_if_quick); no backend is quick unless it
        says so."""
        return False

    def target(self) -> Target | None:
        """A physical system's Qiskit Target (native gates on their qubits and couplings): the circuits it
        runs must be in this instruction set architecture. None: no ISA to check (simulators)."""
        return None

    def validate(self, circuits: Sequence[QuantumCircuit], shots: int) -> None:
        """Raise InvalidArgument unless the circuits can run here with this many shots: shots, circuit
        count, width, measurements, bound parameters, and for a physical system its ISA."""
        config = self.configuration()
        check_circuits(
            circuits,
            shots=shots,
            max_shots=config.max_shots,
            max_experiments=config.max_experiments,
            num_qubits=config.num_qubits,
        )
        target = self.target()
        if target is not None:
            for index, circuit in enumerate(circuits):
                check_isa(index, circuit, target, self.name)

    def run(
        self, circuits: list[QuantumCircuit], shots: int, seed: int | None = None, memory: bool = False
    ) -> list[backend_pb2.CircuitResult]:
        """Check the circuits, then run them; one result per circuit, in order."""
        self.check(circuits, shots)
        return self.execute(circuits, shots, seed, memory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AerSimulatorAdapter(BackendAdapter):
    """An ideal (noiseless) qiskit-aer simulator with one simulation method.

    Its configuration's num_qubits is the most qubits any circuit may use and still fit in the memory
    limit (for `automatic`: as a state vector), capped by Aer's own maximum. Circuits may declare more
    qubits than that: Aer simulates only those that affect a result, and the memory guard counts those;
    a Clifford circuit on `automatic` runs with the stabilizer method, far wider.
    """

    kind = SIMULATOR

    def __init__(self, name: str, method: str = "automatic", description: str = "") -> None:
        self.name = name
        self.method = method
        # The extended stabilizer runs any circuit, but approximately and, with many non-Clifford gates,
        # for minutes where the others take milliseconds: like the Clifford-only one, it is for those
        # who name it, never a least-busy choice.
        self.universal = method not in (memory.STABILIZER, memory.EXTENDED_STABILIZER)
        self.description = description or f"Ideal qiskit-aer simulator, {method.replace('_', ' ')} method"
        self._simulator = AerSimulator(method=method)
        # The extended stabilizer lists rz but takes it at Clifford angles only (other angles fail when
        # it runs); it takes p at any angle, so circuits with rz are rewritten in p for it.
        unreliable = {"rz"} if method == memory.EXTENDED_STABILIZER else set()
        self._supported = frozenset(self._simulator.operation_names) - unreliable | DIRECTIVES
        standard = get_standard_gate_name_mapping()
        self._basis = sorted(n for n in self._supported if n in standard) if unreliable else None
        self._aer_qubits = self._simulator.num_qubits  # Aer's own maximum, from this machine's memory
        # The widest circuit the method can address at all (the stabilizer method, which `automatic`
        # picks for Clifford circuits, goes far wider than the others); below that, memory decides.
        clifford = method in (memory.STABILIZER, memory.AUTOMATIC)
        self._widest = AerSimulator(method=memory.STABILIZER).num_qubits if clifford else memory.WIDEST
        self._configuration = backend_pb2.BackendConfiguration(
            num_qubits=self._simulator.num_qubits,
            basis_gates=gate_names(self._simulator.operation_names),
            max_shots=SIMULATOR_MAX_SHOTS,
            max_experiments=SIMULATOR_MAX_EXPERIMENTS,
            simulation_method=method,
            max_execution_time=duration_pb2.Duration(seconds=self.max_execution_time),
        )

    def configuration(self) -> backend_pb2.BackendConfiguration:
        return self._configuration

    def limit_memory(self, limit: int) -> None:
        super().limit_memory(limit)
        # Aer checks its own estimate against max_memory_mb when it picks a method for `automatic`
        # (density matrix or not, with noise) and before it runs: the same limit keeps it in step.
        self._simulator.set_options(max_memory_mb=max(1, limit >> 20))
        self._configuration.num_qubits = memory.most_qubits(self.method, limit, self._aer_qubits)

    def validate(self, circuits: Sequence[QuantumCircuit], shots: int) -> None:
        config = self.configuration()
        check_circuits(
            circuits, shots=shots, max_shots=config.max_shots, max_experiments=config.max_experiments,
            num_qubits=self._widest,
        )

    def memory_estimates(self, circuits: Sequence[QuantumCircuit], shots: int) -> list[memory.Estimate]:
        return [memory.estimate(c, self.method, shots=shots, limit=self.memory_limit) for c in circuits]

    def properties(self) -> backend_pb2.BackendProperties:
        return backend_pb2.BackendProperties()

    def execute(
        self, circuits: list[QuantumCircuit], shots: int, seed: int | None, memory: bool
    ) -> list[backend_pb2.CircuitResult]:
        # Aer runs its own instruction set directly; transpiling costs 40-100 ms, so only circuits
        # with instructions it lacks (custom gates, composite instructions) are transpiled.
        runnable = [c if self._runs_as_is(c) else self._transpile(c) for c in circuits]
        return run_on_aer(self._simulator, self.name, runnable, circuits, shots, seed, memory)

    def quick(self, batches: Sequence[tuple[int, Sequence[QuantumCircuit]]]) -> bool:
        circuits = [c for _, batch in batches for c in batch]
        return (self.method in (memory.AUTOMATIC, memory.STATEVECTOR)
                and all(shots <= QUICK_MAX_SHOTS for shots, _ in batches)
                and sum(len(c.data) for c in circuits) <= QUICK_MAX_INSTRUCTIONS
                and all(c.num_qubits < SMALL_CIRCUIT_QUBITS and self._runs_quickly(set(iter_operation_names(c)))
                        for c in circuits))

    def _runs_quickly(self, names: set[str]) -> bool:
        """Whether a circuit of these operations runs as it is, without control flow."""
        return names <= self._supported and CONTROL_FLOW_OP_NAMES.isdisjoint(names)

    def warm_up(self) -> None:
        bell = QuantumCircuit(2, 2)
        bell.h(0)
        bell.cx(0, 1)
        bell.measure([0, 1], [0, 1])
        self.run([bell], shots=1, seed=0)

    def _runs_as_is(self, circuit: QuantumCircuit) -> bool:
        return all(name in self._supported for name in iter_operation_names(circuit))

    def _transpile(self, circuit: QuantumCircuit) -> QuantumCircuit:
        try:
            if self._basis is not None:
                flow = sorted(set(iter_operation_names(circuit)) & CONTROL_FLOW_OP_NAMES - self._supported)
                if flow:  # a basis of gates alone would let control flow through to fail in Aer
                    raise TranspilerError(f"the control-flow construct {flow[0]!r} is not supported by the backend")
                return transpile(circuit, basis_gates=self._basis, optimization_level=0, num_processes=1)
            return transpile(circuit, backend=self._simulator, optimization_level=0, num_processes=1)
        except TranspilerError as err:
            raise not_runnable(circuit, self.name, err) from None


def run_on_aer(
    simulator: AerSimulator,
    backend_name: str,
    runnable: list[QuantumCircuit],
    originals: list[QuantumCircuit],
    shots: int,
    seed: int | None,
    memory: bool,
    noise_model: NoiseModel | None = None,
) -> list[backend_pb2.CircuitResult]:
    """Run on an Aer simulator as one batch; results are labelled with the original circuits'
    registers. The circuits passed every check before, so a failure here is the simulator's: INTERNAL
    SIMULATOR_FAILED with Aer's own message."""
    options: dict = {"shots": shots, "memory": memory}
    if seed is not None:
        options["seed_simulator"] = seed
    if noise_model is not None:
        options["noise_model"] = noise_model
    elif max((c.num_qubits for c in runnable), default=0) < SMALL_CIRCUIT_QUBITS:
        # Aer would share out shots among OpenMP threads. A small ideal circuit measured at its end is
        # simulated once and sampled, so threads bring only their start-up and barriers: a Bell circuit
        # took 8 ms instead of 1.6 ms on the busy 2-core machine (measured). One with mid-circuit
        # measurements runs shot by shot and could gain from threads on a larger machine; at under 14
        # qubits each shot is cheap, and one rule keeps the workers from contending for the cores.
        options["max_parallel_threads"] = 1
        # Measured at its end, it is simulated once and its shots drawn here (sampling.py): a Bell
        # run 1.6 -> 0.8 ms, an estimator step of the VQE benchmark 5.9 -> 2.0 ms.
        plans = [final_measurements(c) for c in runnable] if simulator.options.method in _SAMPLED_METHODS else [None]
        if all(plans):
            rng = generator(seed)
            return [_sampled(_probabilities(backend_name, plan), plan, original, shots, rng, memory)
                    for plan, original in zip(plans, originals, strict=True)]
    return circuit_results(_run(simulator, backend_name, runnable, options), originals, memory=memory)


def _run(simulator: AerSimulator, backend_name: str, circuits: list[QuantumCircuit], options: dict) -> Result:
    try:
        result = simulator.run(circuits, **options).result()
    except Exception as err:  # noqa: BLE001 - Aer reports its failures with plain exceptions
        raise simulator_failed(backend_name, f"{type(err).__name__}: {err}") from None
    if not result.success:
        failures = [f"circuit {i}: {r.status}" for i, r in enumerate(result.results) if not r.success]
        raise simulator_failed(backend_name, "; ".join(failures) or str(result.status))
    return result


def _probabilities(backend_name: str, plan: FinalMeasurements) -> np.ndarray:
    """The measured qubits' outcome probabilities after a circuit's gates, from Aer's statevector
    simulator (final_states.py), a circuit at a time. One at a time was never slower than an
    AerSimulator run of many, even through AerStatevector, which this is faster than (measured with it:
    10 Bell circuits 2.1 ms against 2.3; a 4-qubit, 36-gate circuit 0.77 against 1.05)."""
    try:
        return measured_probabilities(plan.num_qubits, plan.gates, plan.qubits)
    except Exception as err:  # noqa: BLE001 - Aer reports its failures with plain exceptions
        raise simulator_failed(backend_name, f"{type(err).__name__}: {err}") from None


def _sampled(probabilities: np.ndarray, plan: FinalMeasurements, circuit: QuantumCircuit, shots: int,
             rng: np.random.Generator, memory: bool) -> backend_pb2.CircuitResult:
    counts, shot_keys = draw_shots(probabilities, plan, circuit, shots, rng, memory)
    return backend_pb2.CircuitResult(counts=counts, memory=shot_keys, register_names=register_names(circuit))


def simulator_failed(backend: str, why: str) -> Internal:
    """The error of a simulation that failed on circuits that had passed the backend's checks."""
    return Internal(
        f"the simulator of {backend} failed: {why}", reason="SIMULATOR_FAILED", metadata={"backend": backend}
    )


def not_runnable(circuit: QuantumCircuit | None, backend: str, why: object) -> InvalidArgument:
    what = f"circuit {circuit.name!r}" if circuit is not None else "the circuits"
    return InvalidArgument(
        f"{what} cannot run on {backend}: {why}",
        reason="CIRCUIT_NOT_RUNNABLE",
        metadata={"backend": backend},
        field_violations=[("circuits_qpy", "holds a circuit this backend cannot run")],
    )


def gate_names(operation_names: Iterable[str]) -> list[str]:
    """The gates among a target's instructions, sorted: no measure, control flow or Aer's save/set."""
    return sorted(
        name for name in set(operation_names)
        if name not in _NOT_GATES and not name.startswith(("save_", "set_"))
    )


# The systems emulated by default, by name: IBM's 5-qubit Falcons of the first cloud years, a
# 127-qubit Eagle (r3) and a 133-qubit Heron (r1), from qiskit-ibm-runtime's calibration snapshots.
EMULATED_SYSTEMS = {
    "ibm_lima": "FakeLimaV2",
    "ibm_manila": "FakeManilaV2",
    "ibm_sherbrooke": "FakeSherbrooke",
    "ibm_torino": "FakeTorino",
}
# The simulators of IBM's cloud service, by name, with their simulation methods.
SIMULATORS = {
    "ibmq_qasm_simulator": memory.AUTOMATIC,
    "simulator_statevector": memory.STATEVECTOR,
    "simulator_mps": memory.MPS,
    "simulator_stabilizer": memory.STABILIZER,
    "simulator_extended_stabilizer": memory.EXTENDED_STABILIZER,
}


def default_backends(extra: Iterable[BackendAdapter] = ()) -> dict[str, BackendAdapter]:
    """The backends a devices service offers, by name: the five ideal simulators, the emulated IBM
    systems, then any extra adapters (real hardware)."""
    from qiskit_ibm_runtime import fake_provider

    from .emulated import EmulatedSystemAdapter  # it builds on this module

    adapters = [
        *(AerSimulatorAdapter(name, method) for name, method in SIMULATORS.items()),
        *(EmulatedSystemAdapter(getattr(fake_provider, fake)(), name=name) for name, fake in EMULATED_SYSTEMS.items()),
        *extra,
    ]
    backends: dict[str, BackendAdapter] = {}
    for adapter in adapters:
        if adapter.name in backends:
            raise ValueError(f"two backends are named {adapter.name!r}")
        backends[adapter.name] = adapter
    return dict(sorted(backends.items()))
