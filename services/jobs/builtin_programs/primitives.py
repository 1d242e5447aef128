"""Sampler and Estimator for programs: the built-in primitives, called from inside another program.

An iterative algorithm (a VQE, say) runs as one uploaded program next to the devices instead of one
job per step from a client:

    from qruntime_jobs.builtin_programs.primitives import Estimator

    def main(backend, user_messenger, ansatz, observable, iterations=50):
        estimator = Estimator(backend)
        energy = lambda theta: estimator.run(ansatz, observable, parameter_values=[theta])["values"][0]
        ...

Each run() is one device call on the job's backend, returning what the sampler and estimator
programs return; errors are the same (InvalidInputError, the backend's BackendError). They log
nothing of their own: a program's loop of a thousand estimates is not a thousand log lines.
"""

from __future__ import annotations

from typing import Any

from . import estimator, sampler


class Sampler:
    """The sampler program as a callable: counts and quasi-distributions of measured circuits."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def run(self, circuits: Any, parameter_values: Any = None, shots: int = sampler.DEFAULT_SHOTS,
            seed: int | None = None) -> dict[str, list[Any]]:
        """{"quasi_dists", "counts", "metadata"}, one entry per circuit."""
        return sampler.sample(self._backend, circuits, parameter_values, shots=shots, seed=seed)


class Estimator:
    """The estimator program as a callable: expectation values of Pauli observables."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def run(self, circuits: Any, observables: Any, parameter_values: Any = None,
            shots: int = estimator.DEFAULT_SHOTS, seed: int | None = None) -> dict[str, list[Any]]:
        """{"values", "stds", "metadata"}, one entry per (circuit, observable) pair."""
        return estimator.estimate(self._backend, circuits, observables, parameter_values, shots, seed)[0]
