"""What a simulation worker's end means to the caller whose request it was handling.

A worker that ends before it has said the circuits passed their checks was ended by the input
(decoding, checking): INVALID_ARGUMENT. After that, by the simulation: RESOURCE_EXHAUSTED when the
kernel killed it for memory, INTERNAL otherwise. Each error says how the worker ended and the limits
it ran under.
"""

from __future__ import annotations

import dataclasses

from qruntime_kit.errors import Internal, InvalidArgument, ResourceExhausted, ServiceError
from qruntime_kit.workers import Exit

from .memory import describe_bytes
from .protocol import EXIT_OUT_OF_MEMORY


class Lost(Exception):
    """A worker ended (or was ended) before it answered."""

    def __init__(self, ended: Exit, *, simulating: bool, timed_out: bool = False, garbled: str = "") -> None:
        super().__init__(ended.describe())
        self.ended = ended
        self.simulating = simulating  # it had passed the checks and was simulating
        self.timed_out = timed_out  # it was ended for passing the check time limit
        self.garbled = garbled  # it was ended for answering out of turn: what it sent


@dataclasses.dataclass(frozen=True)
class WorkerLimits:
    """The limits the workers run under, and the errors that name them."""

    memory: int  # a worker's hard memory cap, in bytes
    simulation_memory: int  # what all simulations may use, in bytes
    check_seconds: float  # how long decoding and checking one request may take

    def failed(self, lost: Lost) -> ServiceError:
        """The caller's error for a worker lost during a request."""
        if lost.garbled:
            return Internal(f"a simulation worker answered out of turn ({lost.garbled}); it was replaced",
                            reason="WORKER_PROTOCOL_ERROR")
        if not lost.simulating:
            return self.not_checked(lost)
        if lost.ended.out_of_memory or lost.ended.returncode == EXIT_OUT_OF_MEMORY:
            return ResourceExhausted(
                f"the simulation needed more memory than its worker's limit of {describe_bytes(self.memory)} "
                f"({describe_bytes(self.simulation_memory)} for simulations, plus the worker itself): the estimate "
                "for these circuits was too low (matrix product state circuits that entangle many qubits can do "
                "this); run smaller circuits",
                reason="SIMULATION_OUT_OF_MEMORY",
                metadata={"memory_limit_bytes": self.memory, "simulation_memory_bytes": self.simulation_memory},
            )
        how = lost.ended.describe()
        return Internal(f"the simulator process ended during the simulation: it {how}",
                        reason="SIMULATOR_CRASHED", metadata={"worker_end": how})

    def not_checked(self, lost: Lost) -> ServiceError:
        """The caller's error for a worker lost while it decoded and checked the circuits."""
        if lost.garbled:
            return self.failed(lost)
        how = f"took longer than {self.check_seconds:g} s" if lost.timed_out else lost.ended.describe()
        return InvalidArgument(
            f"the circuits could not be decoded and checked within the limits ({describe_bytes(self.memory)} of "
            f"memory, {self.check_seconds:g} s): the worker checking them {how}",
            reason="CIRCUITS_EXCEED_CHECK_LIMITS",
            metadata={"memory_limit_bytes": self.memory, "time_limit_seconds": f"{self.check_seconds:g}",
                      "worker_end": how},
            field_violations=[("circuits_qpy", "must decode and check within the worker's memory and time limits")],
        )
