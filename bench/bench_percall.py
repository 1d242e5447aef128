"""What every served call costs the embedded suite, against a bare gRPC echo server, in one run.

Three targets, each a unary call from a sync client in this process to a server in another one:

- echo:        a bare grpc.aio server (no qruntime code) whose method returns its request
- health:      the suite's (`qruntime up`) grpc.health Check: open, so no token, no log line, no audit
- get-backend: the suite's DevicesService.GetBackend with a bearer token: every per-call step a
               served call takes (request id, error mapping, decoding, audit, token check, NUL check,
               the "rpc" log line in the default console format, to its log file) around a servicer
               that does little

The calls go in blocks, the targets interleaved block by block (so all see the same machine), and
for each: p50 latency and the server process's CPU per call (user + system, from /proc/<pid>/stat
before and after each block; steadier than wall time on a shared machine). Ratios are to echo.
Then --jobs Bell sampler jobs one after another through the qruntime client (bench_sampler's), with
the suite's CPU per job: what the per-call costs add up to in the job issue 6 is about. Last, the
kit's per-call machinery alone: a kit server in this process (auth, and a stand-in GetBackend that
returns an empty answer) called through its LocalChannel, as the embedded suite's services call one
another: every per-call step and log line (console format, to a file), no gRPC; CPU per call.

    .venv/bin/python -W ignore bench/bench_percall.py [--calls 1000] [--blocks 4] [--jobs 100] [--profile out.raw]

--profile records the suite with py-spy (--gil, raw stacks) during one more block of get-backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from echo import UNARY, echo_server

PY_SPY = "/work/prof/pv/bin/py-spy"


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used (user and system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Target:
    def __init__(self, name: str, call: Callable[[], object], pid: int) -> None:
        self.name, self.call, self.pid = name, call, pid
        self.latencies: list[float] = []
        self.cpu = 0.0
        self.calls = 0

    def block(self, calls: int) -> None:
        cpu = cpu_seconds(self.pid)
        for _ in range(calls):
            started = time.perf_counter()
            self.call()
            self.latencies.append(time.perf_counter() - started)
        self.cpu += cpu_seconds(self.pid) - cpu
        self.calls += calls

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def cpu_ms(self) -> float:
        return self.cpu / self.calls * 1000


class StandInDevices:
    """DevicesService.GetBackend with an action check (one the bootstrap user's token holds) and an
    empty answer."""

    name, service_names, public_methods = "devices", ("qruntime.devices.v1.DevicesService",), frozenset()

    def register(self, server) -> None:
        from qruntime.devices.v1 import devices_service_pb2, devices_service_pb2_grpc

        from qruntime_kit.auth import current_principal

        class Servicer(devices_service_pb2_grpc.DevicesServiceServicer):
            async def GetBackend(self, request, context):
                current_principal().require("job.read")
                return devices_service_pb2.GetBackendResponse()

        devices_service_pb2_grpc.add_DevicesServiceServicer_to_server(Servicer(), server)

    async def start(self, runtime) -> None: ...

    async def stop(self) -> None: ...


def in_process(data_dir: Path, calls: int, blocks: int) -> float:
    """Microseconds of this process's CPU per local GetBackend call, the least of `blocks` blocks."""
    from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
    from qruntime.devices.v1 import devices_service_pb2, devices_service_pb2_grpc

    from qruntime_auth.component import AuthComponent, AuthSettings
    from qruntime_kit.logging import configure_logging
    from qruntime_kit.server import start_server

    stderr, sys.stderr = sys.stderr, (data_dir / "in-process.log").open("w")
    try:
        configure_logging("console", "info")  # its lines go to the file sys.stderr is now
    finally:
        sys.stderr = stderr
    settings = AuthSettings(port=0, data_dir=str(data_dir), token_requests_per_key=1e9, log_level="info")

    async def main() -> float:
        suite = await start_server([AuthComponent(settings), StandInDevices()], settings, front_door=True)
        try:
            bootstrap = json.loads((data_dir / "bootstrap.json").read_text())
            local = suite.runtime.local
            exchange = auth_service_pb2.CreateTokenRequest(api_key=bootstrap["api_key"], instance=bootstrap["instance"])
            token = (await auth_service_pb2_grpc.AuthServiceStub(local).CreateToken(exchange)).token
            metadata = (("authorization", f"Bearer {token}"),)
            devices = devices_service_pb2_grpc.DevicesServiceStub(local)
            request = devices_service_pb2.GetBackendRequest(name="any")
            for _ in range(200):
                await devices.GetBackend(request, metadata=metadata)
            best = float("inf")
            for _ in range(blocks):
                started = time.process_time()
                for _ in range(calls):
                    await devices.GetBackend(request, metadata=metadata)
                best = min(best, (time.process_time() - started) / calls * 1e6)
            return best
        finally:
            await suite.stop(0)

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls per block")
    parser.add_argument("--blocks", type=int, default=4, help="blocks of each target, interleaved")
    parser.add_argument("--jobs", type=int, default=100, help="sequential Bell sampler jobs after the calls")
    parser.add_argument("--profile", help="py-spy raw output file for one more get-backend block")
    args = parser.parse_args()
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
    from qruntime.devices.v1 import devices_service_pb2, devices_service_pb2_grpc

    from qruntime_suite import launch

    with echo_server() as (echo_address, echo_pid), tempfile.TemporaryDirectory() as tmp, \
            launch.running(launch.embedded(Path(tmp) / "suite", extra_env={"QRUNTIME_WARM_UP": "false"})) as suite:
        pid = suite.processes["suite"].pid
        channel = grpc.insecure_channel(suite.url)
        bootstrap = suite.bootstrap
        token = auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(
            auth_service_pb2.CreateTokenRequest(api_key=bootstrap["api_key"], instance=bootstrap["instance"])).token
        metadata = (("authorization", f"Bearer {token}"),)
        devices = devices_service_pb2_grpc.DevicesServiceStub(channel)
        backend = devices.ListBackends(devices_service_pb2.ListBackendsRequest(), metadata=metadata).backends[0].name
        request = devices_service_pb2.GetBackendRequest(name=backend)
        size = len(devices.GetBackend(request, metadata=metadata).SerializeToString())
        health = health_pb2_grpc.HealthStub(channel)
        echo_channel = grpc.insecure_channel(echo_address)
        echo, payload = echo_channel.unary_unary(UNARY), b"x" * size  # GetBackend's answer's size
        targets = [
            Target("echo", lambda: echo(payload, timeout=10), echo_pid),
            Target("health", lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10), pid),
            Target("get-backend", lambda: devices.GetBackend(request, metadata=metadata, timeout=10), pid),
        ]
        for target in targets:  # warm-up: connections, caches, first compilations
            for _ in range(200):
                target.call()
        idle = cpu_seconds(pid)
        time.sleep(2)  # what the suite spends with no calls (its executor, polls), counted in every block too
        idle = (cpu_seconds(pid) - idle) / 2 * 1000
        for _ in range(args.blocks):
            for target in targets:
                target.block(args.calls)
        jobs = None
        if args.jobs:
            from bench_sampler import qruntime_client

            run_job = qruntime_client(suite.url, bootstrap)
            jobs = Target("bell-job", run_job, pid)
            for _ in range(10):  # warm-up: the simulation worker, the program, the client's channel
                run_job()
            jobs.block(args.jobs)
        if args.profile:
            spy = subprocess.Popen([PY_SPY, "record", "-p", str(pid), "--gil", "-r", "500", "-f", "raw",
                                    "-o", args.profile], stdout=subprocess.DEVNULL)
            time.sleep(2)  # py-spy attaches
            Target("profiled", targets[2].call, pid).block(args.calls * 3)
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT, not on SIGTERM
            spy.wait(60)
        load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        local_us = in_process(Path(tmp), args.calls, args.blocks)

    echo_target = targets[0]
    print(f"unary calls, {args.blocks} blocks of {args.calls} per target, interleaved; {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'target':<14}{'p50 ms':>9}{'p99 ms':>9}{'server CPU ms/call':>20}{'p50 / echo':>12}{'CPU / echo':>12}")
    for t in targets:
        p99 = sorted(t.latencies)[int(0.99 * len(t.latencies))] * 1000
        print(f"{t.name:<14}{t.p50_ms:>9.3f}{p99:>9.3f}{t.cpu_ms:>20.3f}{t.p50_ms / echo_target.p50_ms:>12.2f}"
              f"{t.cpu_ms / echo_target.cpu_ms:>12.2f}")
    if jobs is not None:
        print(f"{'bell-job':<14}{jobs.p50_ms:>9.3f}{'':>9}{jobs.cpu_ms:>20.3f}   ({args.jobs} sequential jobs; "
              "the suite's process only, not its simulation worker)")
    print(f"{'local':<14}{'':>18}{local_us / 1000:>20.3f}   (the kit alone, in process: the least of "
          f"{args.blocks} blocks)")
    served = targets[2]
    print(f"get-backend: one server core serves {1000 / served.cpu_ms:.0f} calls/s, echo "
          f"{1000 / echo_target.cpu_ms:.0f} ({echo_target.cpu_ms / served.cpu_ms:.2f}x echo); the suite idle: "
          f"{idle:.1f} ms of CPU a second")


if __name__ == "__main__":
    main()
