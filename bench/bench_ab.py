"""Before and after a change: Bell jobs through two embedded suites at once, one on the services of an
earlier revision and one on the working tree, taken in turns.

This machine's speed drifts by a third or more within minutes, so two benchmark runs one after another
cannot show a change of a few percent; here both suites run side by side and one client takes SEGMENT
jobs from each in turn, so the drift falls on both alike. "before" runs the services' packages of --base
(from `git archive`, put ahead of the editable install on PYTHONPATH); the client is this tree's in both.
Printed: latency percentiles, the CPU of each suite's processes (service and workers) per job, and the
ratios after / before.

    .venv/bin/python -W ignore bench/bench_ab.py --base REV [--rounds 2000] [--v2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cpu_meter import CpuMeter

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kit", "auth", "programs", "jobs", "devices", "suite")  # services/<name> is qruntime_<name>
SEGMENT = 20
SHOTS = 1024
BACKEND = "ibmq_qasm_simulator"


def base_path(rev: str, into: Path) -> str:
    """A PYTHONPATH on which the services' packages are those of rev."""
    tree, path = into / "tree", into / "path"
    tree.mkdir()
    path.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "services"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    for name in PACKAGES:
        (path / f"qruntime_{name}").symlink_to(tree / "services" / name)
    return str(path)


def job_of(suite, v2: bool) -> Callable[[], object]:
    from qruntime import IBMRuntimeService, ReferenceCircuits, SamplerV2

    boot = suite.bootstrap
    service = IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=suite.url)
    circuit = ReferenceCircuits.bell()
    if v2:
        sampler = SamplerV2(mode=service.backend(BACKEND))
        return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()
    return lambda: service.run("sampler", {"circuits": circuit, "shots": SHOTS}, {"backend_name": BACKEND}).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=2000, help="jobs each way")
    parser.add_argument("--v2", action="store_true", help="through qruntime.SamplerV2, not the sampler program")
    args = parser.parse_args()
    from qruntime_suite import launch

    with tempfile.TemporaryDirectory() as tmp:
        lazy = {"QRUNTIME_WARM_UP": "false"}
        before_env = {**lazy, "PYTHONPATH": base_path(args.base, Path(tmp))}
        with launch.running(launch.embedded(Path(tmp) / "before", extra_env=before_env)) as before, \
                launch.running(launch.embedded(Path(tmp) / "after", extra_env=lazy)) as after:
            sides = {"before": (before, job_of(before, args.v2)), "after": (after, job_of(after, args.v2))}
            for _, job in sides.values():
                for _ in range(60):  # warm-up: connections, workers, first compilations
                    job()
            times: dict[str, list[float]] = {name: [] for name in sides}
            cpu = dict.fromkeys(sides, 0.0)
            # Read when asked only: a polling thread would share the client's process with its jobs.
            meters = {name: CpuMeter(suite.processes["suite"].pid, poll_seconds=None)
                      for name, (suite, _) in sides.items()}
            for start in range(0, args.rounds, SEGMENT):
                for name, (_, job) in sides.items():
                    used = meters[name].seconds()
                    for _ in range(min(SEGMENT, args.rounds - start)):
                        began = time.perf_counter()
                        job()
                        times[name].append((time.perf_counter() - began) * 1000)
                    cpu[name] += meters[name].seconds() - used
    what = "qruntime.SamplerV2" if args.v2 else "the sampler program"
    print(f"Bell circuit, {SHOTS} shots through {what}, {args.rounds} sequential jobs each way in turns of "
          f"{SEGMENT}; before: {args.base}; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    rows = {name: summary(values, cpu[name]) for name, values in times.items()}
    print(f"{'':<8}" + "".join(f"{column:>12}" for column in rows["before"]))
    for name, row in rows.items():
        print(f"{name:<8}" + "".join(f"{value:>12.2f}" for value in row.values()))
    print(f"{'ratio':<8}" + "".join(f"{rows['after'][c] / rows['before'][c]:>12.2f}" for c in rows["before"]))


def summary(ms: list[float], cpu_seconds_used: float) -> dict[str, float]:
    ordered = sorted(ms)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50 ms": statistics.median(ordered), "mean ms": statistics.mean(ordered), "p95 ms": at(0.95),
            "p99 ms": at(0.99), "p99.9 ms": at(0.999), "max ms": ordered[-1],
            "CPU ms/job": cpu_seconds_used * 1000 / len(ordered)}


if __name__ == "__main__":
    main()
