"""A bare grpc.aio echo server (no qruntime code) in its own process: the benches' measure of what a
gRPC call costs on this machine. Methods of /bench.Echo/: Echo returns its request; Once streams it
back as one message."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import Iterator

import grpc

UNARY, STREAM = "/bench.Echo/Echo", "/bench.Echo/Once"


async def _echo(request: bytes, context) -> bytes:
    return request


async def _once(request: bytes, context):
    yield request


def _serve(port, ready) -> None:
    async def serve() -> None:
        server = grpc.aio.server()
        handlers = {"Echo": grpc.unary_unary_rpc_method_handler(_echo),
                    "Once": grpc.unary_stream_rpc_method_handler(_once)}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("bench.Echo", handlers)])
        port.value = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(serve())


@contextlib.contextmanager
def echo_server() -> Iterator[tuple[str, int]]:
    """The server running, as (its address, its process id); killed on exit."""
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no gRPC state inherited by a fork
    port, ready = spawn.Value("i", 0), spawn.Event()
    process = spawn.Process(target=_serve, args=(port, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the echo server did not start within 30 s")
        yield f"127.0.0.1:{port.value}", process.pid
    finally:
        process.kill()
