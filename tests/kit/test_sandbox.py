"""Hostile programs in the real sandbox: real bubblewrap, real processes, the real seccomp filter.

Each test runs `python -c SNIPPET` inside sandbox_argv(...) and checks that the forbidden operation
is refused with a clear error, that the sandbox then exits normally, and that the host is unchanged;
positive controls check that ordinary programs (numpy, qiskit, threads, subprocesses) still work.
The syscall refusals are in test_seccomp.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from sandbox_harness import EPILOGUE, PRELUDE, results_of, sandboxed, skip_without_sandbox

from qruntime_kit.limits import Limits
from qruntime_kit.sandbox import SANDBOX_UID, sandbox_argv, sandbox_available, seccomp_fd
from qruntime_kit.workers import CHANNEL_FD, spawn


@pytest.fixture(scope="module", autouse=True)
def _needs_sandbox():
    skip_without_sandbox()


def test_files_outside_are_not_there(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "jobs.db") as db:
        db.execute("CREATE TABLE secrets (value TEXT)")
        db.execute("INSERT INTO secrets VALUES ('api key')")
    other_scratch = tmp_path / "other-scratch"
    other_scratch.mkdir()
    (other_scratch / "result.json").write_text("another job's result")
    done = sandboxed(f"""
        for path in ({str(data_dir / "jobs.db")!r}, {str(other_scratch / "result.json")!r}, "/etc/shadow",
                     "/etc/passwd", "/etc/hosts", {str(Path.home() / ".bashrc")!r}):
            check(path, lambda: open(path, "rb").read())
        check("data dir", lambda: os.listdir({str(data_dir)!r}))
    """, tmp_path / "scratch")
    results = results_of(done)
    assert set(results.values()) == {"ENOENT"}, results


def test_sqlite_cannot_open_the_data_dir(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "jobs.db") as db:
        db.execute("CREATE TABLE secrets (value TEXT)")
    done = sandboxed(f"""
        import sqlite3
        try:
            sqlite3.connect("file:{data_dir / "jobs.db"}?mode=ro", uri=True).execute("SELECT 1 FROM secrets")
            results["sqlite"] = "OK"
        except sqlite3.OperationalError as err:
            results["sqlite"] = str(err)
    """, tmp_path / "scratch")
    assert results_of(done) == {"sqlite": "unable to open database file"}


def test_home_holds_only_the_path_to_the_interpreter(tmp_path):
    home = Path.home()
    needed = {Path(p) for p in (sys.base_prefix, sys.prefix, os.path.realpath(sys.executable))}
    allowed = {p.relative_to(home).parts[0] for p in needed if home in p.parents}
    done = sandboxed(f"""
        check("home", lambda: results.__setitem__("entries", sorted(os.listdir({str(home)!r}))))
    """, tmp_path / "scratch")
    results = results_of(done)
    entries = results.get("entries", [])  # no home folder at all is fine too
    assert set(entries) <= allowed, f"visible in {home}: {entries}"


def test_host_processes_and_environment_are_not_visible(tmp_path, monkeypatch):
    marker = f"qruntime-secret-{uuid.uuid4()}"
    monkeypatch.setenv("QRUNTIME_TEST_SECRET", marker)
    done = sandboxed("""
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        results["pids"] = pids
        results["environs"] = []
        for pid in pids:  # the marker is looked for outside: the program's own cmdline must not hold it
            try:
                results["environs"].append(open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace"))
            except OSError as err:
                results["environs"].append(errno.errorcode[err.errno])
        results["env"] = sorted(os.environ)
        results["uid"] = [os.getuid(), os.getgid()]
        results["hostname"] = os.uname().nodename
    """, tmp_path / "scratch")
    results = results_of(done)
    assert results["pids"] == [1, 2]  # bubblewrap's reaper and the program: nothing of the host's
    assert len(results["environs"]) == 2 and not any(marker in text for text in results["environs"])
    assert results["env"] == ["HOME", "LANG", "LOGNAME", "PATH", "PWD", "PYTHONDONTWRITEBYTECODE", "PYTHONNOUSERSITE",
                              "TMPDIR", "USER"]
    assert results["uid"] == [SANDBOX_UID, SANDBOX_UID]
    assert results["hostname"] == "sandbox"


def test_writing_outside_scratch_is_refused(tmp_path):
    extra = tmp_path / "models"  # a read_only path under the host's /tmp: not hidden by the sandbox's own /tmp
    extra.mkdir()
    (extra / "weights.txt").write_text("readable")
    targets = ["/x", "/etc/x", "/usr/x", f"{sys.prefix}/x", f"{sys.base_prefix}/x", str(extra / "x"),
               str(Path(__file__).parent / "x")]
    done = sandboxed(f"""
        for path in {targets!r}:
            check(path, lambda: open(path, "w").write("x"))
        check("mkdir /", lambda: os.mkdir("/qruntime-x"))
        results["read_only is readable"] = open({str(extra / "weights.txt")!r}).read()
        check("/sys", lambda: os.listdir("/sys"))
    """, tmp_path / "scratch", read_only=[extra])
    results = results_of(done)
    assert results.pop("read_only is readable") == "readable"
    assert "OK" not in results.values(), results
    assert {results[t] for t in targets} <= {"EROFS", "ENOENT", "EACCES"}
    assert not any(Path(t).exists() for t in targets)


def test_the_program_is_nobody_on_the_host_too(tmp_path):
    # Mapped to host root, a program would own root's files and sysctls: opening core_pattern for
    # writing is enough to tell (it is never written).
    scratch = tmp_path / "scratch"
    done = sandboxed("""
        for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches", "/proc/sys/kernel/hostname",
                     "/proc/sysrq-trigger"):
            check(path, lambda: os.close(os.open(path, os.O_WRONLY)))
        open("/scratch/made-inside", "w").close()
    """, scratch)
    results = results_of(done)
    assert set(results.values()) <= {"EACCES", "EROFS", "ENOENT"}, results
    owner = (scratch / "made-inside").stat().st_uid
    assert owner == (SANDBOX_UID if os.geteuid() == 0 else os.geteuid())


def test_concurrent_programs_get_their_own_host_uid_when_asked(tmp_path):
    # One host uid per running program keeps per-user budgets (RLIMIT_NPROC, inotify, pipes) apart.
    if os.geteuid() != 0:
        pytest.skip("only a root service chooses the host uid")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with seccomp_fd() as fd:
        argv = sandbox_argv([sys.executable, "-c", "open('/scratch/mine', 'w').close()"], scratch=scratch,
                            seccomp_fd=fd, host_uid=100_001)
        subprocess.run(argv, pass_fds=[fd], check=True, timeout=60)
    assert (scratch / "mine").stat().st_uid == 100_001
    assert scratch.stat().st_uid == 100_001 and scratch.stat().st_mode & 0o777 == 0o700


def test_only_kept_descriptors_are_inherited(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the program")
    not_passed = os.open(secret, os.O_RDONLY)
    os.set_inheritable(not_passed, True)  # as careless code would leave it
    kept_r, kept_w = os.pipe()
    try:
        done = sandboxed(f"""
            open_fds = []
            for fd in range(3, 1024):
                try:
                    os.fstat(fd)
                    open_fds.append(fd)
                except OSError:
                    pass
            results["open"] = open_fds
            check("not passed", lambda: os.read({not_passed}, 10))
            check("kept", lambda: os.write({kept_w}, b"hello"))
        """, tmp_path / "scratch", keep_fds=[kept_w])
        results = results_of(done)
        assert results == {"open": [kept_w], "not passed": "EBADF", "kept": "OK"}
        assert os.read(kept_r, 10) == b"hello"
    finally:
        for fd in (not_passed, kept_r, kept_w):
            os.close(fd)


def test_the_network_is_its_own(tmp_path):
    server = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    abstract_name = f"\0qruntime-test-{uuid.uuid4()}"
    abstract.bind(abstract_name)
    abstract.listen()
    port = server.getsockname()[1]
    try:
        done = sandboxed(f"""
            import socket
            def connect(address, family=socket.AF_INET):
                with socket.socket(family) as s:
                    s.settimeout(5)
                    s.connect(address)
            check("test server", lambda: connect(("127.0.0.1", {port})))
            check("postgres", lambda: connect(("127.0.0.1", 5432)))
            check("outside", lambda: connect(("192.0.2.1", 80)))
            check("ipv6 outside", lambda: connect(("2001:db8::1", 80), socket.AF_INET6))
            check("abstract unix", lambda: connect({abstract_name!r}, socket.AF_UNIX))
            check("vsock", lambda: socket.socket(40, socket.SOCK_STREAM))
            check("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
        """, tmp_path / "scratch")
        results = results_of(done)
        assert results == {"test server": "ECONNREFUSED", "postgres": "ECONNREFUSED", "outside": "ENETUNREACH",
                           "ipv6 outside": "ENETUNREACH", "abstract unix": "ECONNREFUSED",
                           "vsock": "EAFNOSUPPORT", "packet": "EAFNOSUPPORT"}
        for listener in (server, abstract):  # nothing reached the host's listeners
            listener.settimeout(0.05)
            with pytest.raises(TimeoutError):
                listener.accept()
    finally:
        server.close()
        abstract.close()


def test_a_normal_program_runs_and_sees_only_its_scratch(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "input.txt").write_text("21")
    done = sandboxed("""
        import subprocess, threading
        value = int(open("input.txt").read())
        open("/scratch/output.txt", "w").write(str(2 * value))
        open("/tmp/t", "w").write("temporary")
        results["cwd"] = os.getcwd()
        results["home"] = os.path.expanduser("~")
        results["scratch"] = sorted(os.listdir("/scratch"))
        results["root"] = sorted(os.listdir("/"))
        box = []
        worker = threading.Thread(target=box.append, args=("thread",))  # clone3 -> ENOSYS -> clone
        worker.start()
        worker.join()
        results["thread"] = box
        results["child"] = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True,
                                          text=True).stdout.strip()
    """, scratch)
    results = results_of(done)
    assert results["cwd"] == "/scratch" and results["home"] == "/scratch"
    assert results["scratch"] == ["input.txt", "output.txt"]
    top = {Path(p).parts[1] for p in (sys.prefix, sys.base_prefix)}
    assert set(results["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin",
                                    "scratch", "tmp", "usr", *top}
    assert results["thread"] == ["thread"] and results["child"] == "42"
    assert (scratch / "output.txt").read_text() == "42"
    assert not Path("/tmp/t").exists() or Path("/tmp/t").read_text() != "temporary"


@pytest.mark.slow
def test_numpy_and_qiskit_work_inside(tmp_path):
    done = sandboxed("""
        import numpy as np
        from qiskit import QuantumCircuit
        from qiskit.quantum_info import Statevector
        import qruntime, qruntime_kit
        circuit = QuantumCircuit(2)
        circuit.h(0)
        circuit.cx(0, 1)
        probabilities = Statevector(circuit).probabilities_dict()
        np.save("/scratch/probabilities.npy", np.array(sorted(probabilities.values())))
        results["probabilities"] = {k: round(v, 6) for k, v in probabilities.items()}
    """, tmp_path / "scratch", timeout=120)
    assert results_of(done) == {"probabilities": {"00": 0.5, "11": 0.5}}
    assert (tmp_path / "scratch" / "probabilities.npy").exists()


# --- with the kit's worker launcher: lifetime and resource caps -----------------------------------

def run_worker(code: str, scratch: Path, limits: Limits, timeout: float = 60):
    """Run PRELUDE + code sandboxed through workers.spawn, as the job runner will: the channel on
    fd 3, the seccomp program on fd 4. Returns (Exit, stdout, stderr)."""
    scratch.mkdir(exist_ok=True)

    async def scenario():
        with seccomp_fd() as fd:
            argv = sandbox_argv([sys.executable, "-c", PRELUDE + textwrap.dedent(code) + EPILOGUE], scratch=scratch,
                                keep_fds=[CHANNEL_FD], seccomp_fd=CHANNEL_FD + 1)
            worker = await spawn(argv, limits=limits, label="sandbox-test", extra_fds=[fd], env={},
                                 capture_output=True)
        try:
            out, err = await asyncio.wait_for(asyncio.gather(worker.stdout.read(), worker.stderr.read()), timeout)
        finally:
            await worker.kill()
        return await worker.wait(), out.decode(), err.decode()

    return asyncio.run(scenario())


def test_the_channel_reaches_a_sandboxed_worker(tmp_path):
    async def scenario():
        with seccomp_fd() as fd:
            argv = sandbox_argv([sys.executable, "-c", textwrap.dedent("""
                from qruntime_kit.workers import BlockingChannel
                channel = BlockingChannel()
                channel.send(b"echo: " + channel.recv())
            """)], scratch=tmp_path, keep_fds=[CHANNEL_FD], seccomp_fd=CHANNEL_FD + 1)
            worker = await spawn(argv, extra_fds=[fd], env={}, capture_output=True)
        await worker.channel.send(b"ping")
        reply = await asyncio.wait_for(worker.channel.recv(), 30)
        return reply, await worker.wait(), await worker.stderr.read()

    reply, exit_, stderr = asyncio.run(scenario())
    assert reply == b"echo: ping"
    assert exit_.returncode == 0, stderr


def test_a_fork_bomb_hits_the_process_cap(tmp_path):
    exit_, out, err = run_worker("""
        import time
        children = []
        try:
            while len(children) < 10_000:
                pid = os.fork()
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                children.append(pid)
        except OSError as err:
            results["fork"] = errno.errorcode[err.errno]
        results["children"] = len(children) < 64
    """, tmp_path / "scratch", Limits(max_processes=64))
    assert exit_.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"fork": "EAGAIN", "children": True}


def test_memory_past_the_cap_ends_the_program_alone(tmp_path):
    exit_, out, _ = run_worker("""
        blocks = []
        try:
            for _ in range(64):
                blocks.append(bytearray(16 << 20))  # 1 GiB in all, touched
            results["allocated"] = "all"
        except MemoryError:
            results["allocated"] = "MemoryError"
    """, tmp_path / "scratch", Limits(memory_bytes=256 << 20))
    assert "all" not in out
    assert exit_.out_of_memory or json.loads(out.splitlines()[-1]) == {"allocated": "MemoryError"}


def test_disk_writes_stop_at_the_caps(tmp_path):
    exit_, out, err = run_worker("""
        chunk = b"x" * (1 << 20)
        def fill(path, megabytes):
            with open(path, "wb") as f:
                for _ in range(megabytes):
                    f.write(chunk)
                    f.flush()
        check("scratch past the file cap", lambda: fill("/scratch/big", 16))
        check("tmp past the file cap", lambda: fill("/tmp/big", 9))
    """, tmp_path / "scratch", Limits(file_bytes=8 << 20))
    assert exit_.returncode == 0, err
    # /tmp is 64 MiB of memory, so the file cap (8 MiB) is what stops both here.
    assert json.loads(out.splitlines()[-1]) == {"scratch past the file cap": "EFBIG", "tmp past the file cap": "EFBIG"}
    assert (tmp_path / "scratch" / "big").stat().st_size == 8 << 20


def test_tmp_is_small(tmp_path):
    done = sandboxed("""
        def fill():
            with open("/tmp/big", "wb") as f:
                for _ in range(128):
                    f.write(b"x" * (1 << 20))
                    f.flush()
        check("fill /tmp", fill)
    """, tmp_path / "scratch")
    assert results_of(done) == {"fill /tmp": "ENOSPC"}


def test_killing_the_worker_ends_every_process_in_the_sandbox(tmp_path):
    marker = f"qruntime-orphan-{uuid.uuid4()}"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}], start_new_session=True)
        open("/scratch/started", "w").close()
        time.sleep(120)
    """)
    with seccomp_fd() as fd:
        argv = sandbox_argv([sys.executable, "-c", code], scratch=scratch, seccomp_fd=fd)
        bwrap = subprocess.Popen(argv, pass_fds=[fd], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (scratch / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(marker), "the grandchild never started"
        bwrap.send_signal(signal.SIGKILL)  # bwrap alone: not its process group, not a cgroup
        bwrap.wait()
        deadline = time.monotonic() + 10
        while _processes_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _processes_with(marker)
    finally:
        bwrap.kill()
        bwrap.wait()


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_no_sandbox_without_bwrap_says_how_to_install_it(monkeypatch):
    from qruntime_kit import sandbox

    monkeypatch.setenv("PATH", "/nonexistent")
    sandbox._tools.cache_clear()
    sandbox._probe.cache_clear()
    try:
        assert "apt-get install bubblewrap" in (sandbox_available() or "")
    finally:
        monkeypatch.undo()
        sandbox._tools.cache_clear()
        sandbox._probe.cache_clear()
    assert sandbox_available() is None

