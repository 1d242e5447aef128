"""Job inputs past one message: what uploading them in chunks costs, end to end.

`qruntime up` (one process, SQLite) runs an uploaded program that returns the length and SHA-256 of
its one string input, so a job's result proves its inputs reached the program whole. For each size
the client's `run(...)` (one CreateJob message up to 32 MiB; past it CreateInputUpload, 16 MiB chunks,
CreateJob naming the upload) is timed, then the job to DONE (the program host gets the inputs in
16 MiB parts), then `RuntimeJob.inputs` (the full view, or GetJobInputs' chunks past 32 MiB); and the
suite's peak resident memory (VmHWM) after each size.

    .venv/bin/python -W ignore bench/bench_upload.py [--sizes-mib 1,24,64,200]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

PROGRAM = '''
import hashlib


def main(backend, user_messenger, data):
    return {"chars": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}
'''


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mib", default="1,24,64,200")
    args = parser.parse_args()
    sizes = [int(float(s) * 1024 * 1024) for s in args.sizes_mib.split(",")]

    from qruntime import IBMRuntimeService

    from qruntime_suite import launch

    with tempfile.TemporaryDirectory() as data_dir, launch.running(launch.embedded(
            Path(data_dir), extra_env={"QRUNTIME_WARM_UP": "false", "QRUNTIME_PROGRAM_MEMORY_BYTES": str(4 << 30)},
    )) as running:
        boot = running.bootstrap
        pid = next(iter(running.processes.values())).pid
        with IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=running.url,
                               timeout=600) as service:
            program = service.upload_program(PROGRAM, {"name": "sizes", "max_execution_time": 600, "parameters": [
                {"name": "data", "type": "string", "required": True}]})
            print(f"{'inputs MiB':>10} {'path':>8} {'run() s':>8} {'to DONE s':>10} {'inputs s':>9}"
                  f" {'peak RSS MiB':>13}")
            for size in sizes:
                data = "x" * (size - len('{"data": ""}'))
                started = time.monotonic()
                job = service.run(program, {"data": data}, {"backend_name": "ibmq_qasm_simulator"})
                created = time.monotonic()
                result = job.result(timeout=600)
                done = time.monotonic()
                assert result == {"chars": len(data), "sha256": hashlib.sha256(data.encode()).hexdigest()}, result
                assert job.inputs["data"] == data
                read = time.monotonic()
                path = "chunks" if size > 32 * 1024 * 1024 else "message"
                print(f"{size / 2**20:>10.0f} {path:>8} {created - started:>8.2f} {done - created:>10.2f} "
                      f"{read - done:>9.2f} {peak_rss_mib(pid):>13.0f}")


if __name__ == "__main__":
    main()
