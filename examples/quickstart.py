"""The Qiskit Runtime quick start, line by line, against a qruntime suite.

Only the import lines differ from the original: `qruntime` instead of `qiskit_ibm_runtime`, and
`ReferenceCircuits` from `qruntime` since Qiskit 1.0 removed `qiskit.test`.

    python examples/quickstart.py --bootstrap DIR/bootstrap.json
    python examples/quickstart.py --token API_KEY --instance CRN --url 127.0.0.1:8443
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qruntime import IBMRuntimeService, ReferenceCircuits


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=Path, help="bootstrap.json written by `qruntime up`")
    parser.add_argument("--token", help="API key")
    parser.add_argument("--instance", help="instance CRN or name")
    parser.add_argument("--url", help="host:port of the suite")
    args = parser.parse_args()
    if args.bootstrap:
        bootstrap = json.loads(args.bootstrap.read_text())
        args.token, args.instance, args.url = bootstrap["api_key"], bootstrap["instance"], bootstrap["url"]
    if not (args.token and args.instance and args.url):
        parser.error("give --bootstrap, or --token, --instance and --url")

    step("Save your account (to $HOME/.qiskit/qiskit-ibm.json) and load it")
    IBMRuntimeService.save_account(auth="cloud", token=args.token, instance=args.instance, url=args.url, overwrite=True)
    service = IBMRuntimeService()
    print(f"instance: {service.instance}")

    step("List the backends")
    print(service.backends())

    step("Run hello-world")
    program_inputs = {"iterations": 1}
    options = {"backend_name": "ibmq_qasm_simulator"}
    job = service.run(program_id="hello-world", options=options, inputs=program_inputs)
    print(f"job id: {job.job_id}")
    print(f"status: {job.status()}")
    result = job.result()
    print(result)

    step("Run the sampler on a Bell circuit")
    program_inputs = {"circuits": ReferenceCircuits.bell()}
    job = service.run(program_id="sampler", options=options, inputs=program_inputs)
    print(f"job id: {job.job_id}")
    result = job.result()
    print(result)
    print(f"status: {job.status()}")


if __name__ == "__main__":
    main()
