"""IBM Quantum's "Hello world" tutorial (Qiskit's V2 primitives), line by line, against a qruntime suite.

It prepares a Bell state, compiles it for a physical system with the backend's target, and estimates
six Pauli observables with EstimatorV2, readout errors mitigated. Only two things differ from the
tutorial: the import lines (`qruntime` instead of `qiskit_ibm_runtime`), and the backend is named
(`--backend`, an emulated system your Standard instance may use) instead of the least busy one.

    python examples/hello_world_v2.py --token API_KEY --instance STANDARD_CRN --url 127.0.0.1:8443
"""

from __future__ import annotations

import argparse

from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp
from qiskit.transpiler import generate_preset_pass_manager
from qruntime import EstimatorV2 as Estimator
from qruntime import QiskitRuntimeService


def hello_world(service: QiskitRuntimeService, backend_name: str) -> tuple[list[str], list[float], list[float]]:
    """The tutorial's steps; (observable labels, expectation values, standard errors)."""
    # Step 1. Map the problem to a quantum-native format
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    observables_labels = ["IZ", "IX", "ZI", "XI", "ZZ", "XX"]
    observables = [SparsePauliOp(label) for label in observables_labels]

    # Step 2. Optimize the circuits and operators
    backend = service.backend(backend_name)
    pm = generate_preset_pass_manager(backend=backend, optimization_level=1)
    isa_circuit = pm.run(qc)

    # Step 3. Execute using the quantum primitives
    estimator = Estimator(mode=backend)
    estimator.options.resilience_level = 1
    estimator.options.default_shots = 5000
    mapped_observables = [observable.apply_layout(isa_circuit.layout) for observable in observables]
    job = estimator.run([(isa_circuit, mapped_observables)])
    print(f">>> Job ID: {job.job_id()}")
    print(f">>> Job Status: {job.status()}")

    # Step 4. Analyze the results
    pub_result = job.result()[0]
    values = pub_result.data.evs
    errors = pub_result.data.stds
    return observables_labels, list(values), list(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--token", required=True, help="API key")
    parser.add_argument("--instance", required=True, help="a Standard instance's CRN or name")
    parser.add_argument("--url", required=True, help="host:port of the suite")
    parser.add_argument("--backend", default="ibm_manila", help="an emulated physical system")
    args = parser.parse_args()
    service = QiskitRuntimeService(channel="ibm_cloud", token=args.token, instance=args.instance,
                                   url=args.url)
    for label, value, error in zip(*hello_world(service, args.backend), strict=True):
        print(f"<{label}> = {value:+.3f} ± {error:.3f}")


if __name__ == "__main__":
    main()
