"""The zygote: workers forked from a preloaded process, with the same limits and kills as spawned ones."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from process_support import alive

from qruntime_kit.limits import Limits, create_cgroup
from qruntime_kit.zygote import Zygote, ZygoteDied

CHILD = '''
import os, sys, time
from qruntime_kit.workers import BlockingChannel

LOADED_AT = time.time()  # when the zygote imported this module: once, before any fork

def main():
    channel = BlockingChannel()
    while True:
        order = channel.recv().decode()
        if order == "who":
            channel.send(f"{os.getpid()} {os.getsid(0)} {LOADED_AT}".encode())
        elif order == "fds":
            channel.send(" ".join(sorted(os.listdir("/proc/self/fd"))).encode())
        elif order == "print":
            print("to stdout", flush=True)
            print("to stderr", file=sys.stderr, flush=True)
            channel.send(b"printed")
        elif order == "grow":
            block = bytearray(400 << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1
        elif order.startswith("exit"):
            return int(order.split()[1])
'''
MiB = 1 << 20


@pytest.fixture
def module(tmp_path, monkeypatch):
    (tmp_path / "zygote_child.py").write_text(CHILD)
    return {"PYTHONPATH": str(tmp_path)}


def run(coro):
    return asyncio.run(coro)


async def ask(worker, order: str) -> str:
    await worker.channel.send(order.encode())
    return (await worker.channel.recv()).decode()


def test_forked_workers_share_one_import_but_nothing_else(module):
    async def scenario():
        zygote = await Zygote.start("zygote_child", env=module)
        try:
            first, second = await zygote.fork(), await zygote.fork()
            a, b = (await ask(first, "who")).split(), (await ask(second, "who")).split()
            fds = await ask(first, "fds")
            printed = await ask(first, "print")
            out, err = await first.stdout.readline(), await first.stderr.readline()
            await first.channel.send(b"exit 3")
            ended = await first.wait()
            await second.kill()
            return a, b, fds, printed, out, err, ended
        finally:
            await zygote.stop()

    a, b, fds, printed, out, err, ended = run(scenario())
    assert a[0] != b[0] and a[0] == a[1]  # each its own process, leading its own session
    assert a[2] == b[2]  # the module was imported once, in the zygote
    assert fds.split()[:4] == ["0", "1", "2", "3"] and len(fds.split()) <= 5
    assert (printed, out, err) == ("printed", b"to stdout\n", b"to stderr\n")
    assert ended.returncode == 3


def test_a_fork_costs_far_less_than_a_start(module):
    async def scenario():
        zygote = await Zygote.start("zygote_child", env=module)
        try:
            await ask(await zygote.fork(), "who")  # waits for the zygote's import
            started = time.perf_counter()
            for _ in range(5):
                worker = await zygote.fork()
                await ask(worker, "who")
                await worker.kill()
            return (time.perf_counter() - started) / 5
        finally:
            await zygote.stop()

    assert run(scenario()) < 0.5


@pytest.mark.skipif(create_cgroup("probe", Limits(memory_bytes=1 << 30)) is None, reason="no memory cgroup here")
def test_a_forked_worker_past_its_memory_limit_dies_alone(module):
    async def scenario():
        zygote = await Zygote.start("zygote_child", env=module)
        try:
            worker = await zygote.fork(limits=Limits(memory_bytes=200 * MiB))
            await worker.channel.send(b"grow")
            ended = await worker.wait()
            survivor = await zygote.fork()
            return ended, await ask(survivor, "who")
        finally:
            await zygote.stop()

    ended, answer = run(scenario())
    assert ended.out_of_memory and answer


def test_when_the_zygote_dies_its_workers_are_ended_and_reported(module):
    async def scenario():
        zygote = await Zygote.start("zygote_child", env=module)
        worker = await zygote.fork()
        pid = int((await ask(worker, "who")).split()[0])
        os.kill(zygote._process.pid, signal.SIGKILL)
        ended = await asyncio.wait_for(worker.wait(), 5)
        with pytest.raises(ZygoteDied):
            await zygote.fork()
        await zygote.stop()
        return pid, ended

    pid, ended = run(scenario())
    assert ended.signal == signal.SIGKILL
    time.sleep(0.05)
    assert not alive(pid)


def test_a_worker_killed_the_moment_it_is_forked_ends(module):
    """The kill may come before the child has its own process group (killpg then misses it)."""
    async def scenario():
        zygote = await Zygote.start("zygote_child", env=module)
        try:
            await ask(await zygote.fork(), "who")  # the zygote has imported the module
            ends = []
            for _ in range(30):
                worker = await zygote.fork(limits=Limits(max_processes=16))
                worker.kill_now()
                ends.append(await asyncio.wait_for(worker.wait(), 10))
            return ends
        finally:
            await zygote.stop()

    assert {end.signal for end in run(scenario())} == {signal.SIGKILL}


def test_a_fork_cancelled_midway_leaves_no_worker_behind(module):
    def children(pid: int) -> set[int]:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}

    async def scenario():
        zygote = await Zygote.start("zygote_child", env=module)
        try:
            first = await zygote.fork()
            await ask(first, "who")
            for delay in (0, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01):
                task = asyncio.create_task(zygote.fork())
                await asyncio.sleep(delay)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await (await task).kill()  # it was done before the cancel came
            await asyncio.sleep(0.5)
            return first.pid, children(zygote._process.pid)
        finally:
            await zygote.stop()

    first, left = run(scenario())
    assert left == {first}
