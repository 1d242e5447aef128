"""sampler: the quasi-probability distribution of the measured bitstrings of each circuit.

All circuits go to the backend in one call. The result holds, per circuit run, "quasi_dists"
({bitstring: probability}), "counts" ({bitstring: count}) and "metadata" ({"shots": n}); bitstrings
are written as Qiskit prints them ("00", "11"; registers separated by a space, last register first).
"""

from __future__ import annotations

from typing import Any

from .common import check_measured, circuits_to_run, optional_seed, positive_int, program_logger

log = program_logger("sampler")
DEFAULT_SHOTS = 1024


def main(
    backend: Any,
    user_messenger: Any,
    circuits: Any,
    parameter_values: Any = None,
    circuit_indices: Any = None,
    shots: Any = DEFAULT_SHOTS,
    seed: Any = None,
) -> dict[str, list[dict[str, Any]]]:
    """Sample each circuit (circuits[i] for i in circuit_indices, parameters bound) `shots` times."""
    runs = circuits_to_run(circuits, parameter_values, circuit_indices)
    check_measured(runs)
    shots = positive_int("shots", shots)
    log.info("sampling %d circuit(s), %d shots each, on %s", len(runs), shots, backend.name)
    results = backend.run(runs, shots=shots, seed=optional_seed(seed))
    counts = [dict(sorted(r["counts"].items())) for r in results]
    quasi_dists = [{k: v / (sum(c.values()) or 1) for k, v in c.items()} for c in counts]
    log.info("sampled %d circuit(s)", len(results))
    return {"quasi_dists": quasi_dists, "counts": counts, "metadata": [{"shots": shots} for _ in results]}
