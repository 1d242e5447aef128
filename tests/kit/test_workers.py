"""Worker processes: real children, real limits, real kills."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest
from process_support import alive

from qruntime_kit.limits import Limits, create_cgroup
from qruntime_kit.workers import ChannelClosed, spawn

ECHO = """
from qruntime_kit.workers import BlockingChannel
channel = BlockingChannel()
while True:
    channel.send(channel.recv()[::-1])
"""
MiB = 1024 * 1024
needs_cgroups = pytest.mark.skipif(
    create_cgroup("probe", Limits(max_processes=10)) is None, reason="no usable cgroup controllers here"
)


def run(coro):
    return asyncio.run(coro)


def test_a_worker_talks_over_its_channel_and_ends_when_killed():
    async def scenario():
        worker = await spawn([sys.executable, "-c", ECHO])
        await worker.channel.send(b"hello")
        assert await worker.channel.recv() == b"olleh"
        ended = await worker.kill()
        assert worker.killed and ended.signal == 9
        assert ended.describe() == "killed by signal SIGKILL"

    run(scenario())


def test_kill_ends_the_whole_process_group_at_once_even_when_signals_are_ignored():
    script = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True: pass
print(child, flush=True)
while True: pass
"""

    async def scenario():
        worker = await spawn([sys.executable, "-c", script], capture_output=True)
        grandchild = int(await worker.stdout.readline())
        started = time.monotonic()
        await worker.kill()
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.05)
        assert not alive(grandchild)

    run(scenario())


def test_only_the_channel_and_the_extra_descriptors_are_inherited(tmp_path):
    secret = (tmp_path / "secret").open("w")
    secret_fd = secret.fileno()
    extra_read, extra_write = os.pipe()
    os.set_inheritable(secret.fileno(), True)  # even an inheritable one is closed by the launcher
    script = "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))"

    async def scenario():
        worker = await spawn([sys.executable, "-c", script], extra_fds=[extra_read], capture_output=True)
        line = await worker.stdout.readline()
        await worker.wait()
        return eval(line)  # noqa: S307 - our own child's list of ints

    try:
        fds = run(scenario())
    finally:
        secret.close()
        os.close(extra_read)
        os.close(extra_write)
    assert fds[:5] == [0, 1, 2, 3, 4]  # stdio, the channel, the extra pipe
    assert secret_fd not in fds[5:]
    assert len(fds) <= 6  # at most the descriptor listdir itself opened


def test_the_service_settings_stay_out_of_a_worker_environment(monkeypatch):
    monkeypatch.setenv("QRUNTIME_SERVICE_KEY", "top-secret")

    async def scenario():
        worker = await spawn([sys.executable, "-c", "import os; print(sorted(os.environ))"], capture_output=True)
        names = (await worker.stdout.read()).decode()
        await worker.wait()
        return names

    assert "QRUNTIME_SERVICE_KEY" not in run(scenario())


@needs_cgroups
def test_a_worker_past_its_memory_limit_dies_alone_and_says_why():
    script = """
from qruntime_kit.workers import BlockingChannel
channel = BlockingChannel()
channel.recv()
block = bytearray(400 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
channel.send(b"survived")
"""

    async def scenario():
        worker = await spawn([sys.executable, "-c", script], limits=Limits(memory_bytes=200 * MiB))
        await worker.channel.send(b"go")
        with pytest.raises(ChannelClosed):
            await worker.channel.recv()
        return await worker.wait()

    ended = run(scenario())
    assert ended.out_of_memory
    assert "more memory than its limit" in ended.describe()


@needs_cgroups
def test_a_fork_bomb_meets_the_process_cap():
    script = """
import os, time
made = 0
try:
    for _ in range(500):
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        made += 1
except OSError as err:
    print("refused after", made, err.errno, flush=True)
"""

    async def scenario():
        worker = await spawn([sys.executable, "-c", script], limits=Limits(max_processes=20), capture_output=True)
        line = (await worker.stdout.readline()).decode()
        await worker.kill()  # its sleeping children go with it
        return line

    line = run(scenario())
    assert line.startswith("refused after")
    assert int(line.split()[2]) < 20
