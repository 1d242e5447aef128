"""What authorisation adds to one call, and how many tokens the auth service issues a second.

A kit server (in its own process, so the client's interpreter lock plays no part) serves the auth
service and an echo method twice: once open, once behind the full check every qruntime call gets (a
bearer token verified with Ed25519, its audience, lifetime and revocations checked, then the caller's
action required). Both go through the same server, interceptors and socket; the open one is the
baseline measured in the same run. Then CreateToken, one client thread and then eight.

    .venv/bin/python -W ignore bench/bench_auth.py [--calls 3000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

OPEN, CHECKED = "/qruntime.jobs.v1.BenchEcho/OpenEcho", "/qruntime.jobs.v1.BenchEcho/CheckedEcho"


class EchoComponent:
    """Two byte-echo methods under the jobs package (so user tokens name their audience)."""

    name = "bench"
    service_names = ()
    public_methods = frozenset({OPEN})

    def register(self, server) -> None:
        from qruntime_kit.auth import current_principal

        async def open_echo(request: bytes, context) -> bytes:
            return request

        async def checked_echo(request: bytes, context) -> bytes:
            current_principal().require("job.read")
            return request

        handlers = {name: grpc.unary_unary_rpc_method_handler(behaviour)
                    for name, behaviour in (("OpenEcho", open_echo), ("CheckedEcho", checked_echo))}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("qruntime.jobs.v1.BenchEcho", handlers)])

    async def start(self, runtime) -> None: ...

    async def stop(self) -> None: ...


def serve(data_dir: str) -> None:
    """The server process: auth and the echo component on one port; prints its port, then waits."""
    from qruntime_auth.component import AuthComponent, AuthSettings
    from qruntime_kit.logging import configure_logging
    from qruntime_kit.server import start_server, until_signalled

    configure_logging("console", "warning")
    settings = AuthSettings(port=0, data_dir=data_dir, token_requests_per_key=1e9, token_requests_per_peer=1e9,
                            log_level="warning")

    async def main() -> None:
        suite = await start_server([AuthComponent(settings), EchoComponent()], settings, front_door=True)
        print(suite.port, flush=True)
        await until_signalled()
        await suite.stop(0)

    asyncio.run(main())


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls of each echo, interleaved")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each CreateToken run lasts")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    data_dir = tempfile.mkdtemp(prefix="bench-auth-")
    server = subprocess.Popen([sys.executable, "-W", "ignore", __file__, "--serve", data_dir],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        port = int(server.stdout.readline())
        bootstrap = json.loads((Path(data_dir) / "bootstrap.json").read_text())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            request = auth_service_pb2.CreateTokenRequest(api_key=bootstrap["api_key"], instance=bootstrap["instance"])
            token = auth.CreateToken(request).token
            metadata = (("authorization", f"Bearer {token}"),)
            open_echo = channel.unary_unary(OPEN)
            checked_echo = channel.unary_unary(CHECKED)
            payload = b"x" * 64
            for _ in range(200):  # warm-up: connection, key fetch, caches
                open_echo(payload)
                checked_echo(payload, metadata=metadata)
            opened, checked = [], []
            for _ in range(args.calls):  # interleaved, so both see the same machine
                started = time.perf_counter()
                open_echo(payload)
                middle = time.perf_counter()
                checked_echo(payload, metadata=metadata)
                checked.append(time.perf_counter() - middle)
                opened.append(middle - started)

            def token_rate(threads: int) -> float:
                done = [0] * threads
                stop = time.monotonic() + args.seconds

                def work(i: int) -> None:
                    while time.monotonic() < stop:
                        auth.CreateToken(request)
                        done[i] += 1

                workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
                started = time.monotonic()
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                return sum(done) / (time.monotonic() - started)

            one, eight = token_rate(1), token_rate(8)
    finally:
        server.terminate()
        server.wait(timeout=30)

    added = p50_ms(checked) - p50_ms(opened)
    print(f"echo, {args.calls} calls each, interleaved; server in its own process; {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    print(f"{'variant':<28}{'p50 ms':>10}{'p99 ms':>10}{'ratio':>8}")
    for name, samples in (("open (baseline)", opened), ("token checked + action", checked)):
        p99 = sorted(samples)[int(0.99 * len(samples))] * 1000
        print(f"{name:<28}{p50_ms(samples):>10.3f}{p99:>10.3f}{p50_ms(samples) / p50_ms(opened):>8.2f}")
    print(f"authorisation adds {added:.3f} ms at p50")
    print(f"CreateToken: {one:.0f} tokens/s from 1 thread, {eight:.0f} tokens/s from 8 threads")


if __name__ == "__main__":
    main()
