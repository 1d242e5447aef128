"""Start the suite as real OS processes and wait until it serves: used by tests and benchmarks.

embedded(): `qruntime up` as one process. separate(): the four services as four processes behind
`qruntime gateway`, each with its own SQLite file; programs, devices and jobs each sign in with a
service key of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from qruntime_auth.keys import new_api_key

from .probe import is_serving

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Launched:
    """Running suite processes, the address clients use, and the bootstrap user's credentials."""

    url: str
    data_dir: Path
    processes: dict[str, subprocess.Popen]
    envs: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # each process's environment
    tls_files: dict[str, str] = dataclasses.field(default_factory=dict)  # ca_file, cert_file, key_file
    http_url: str = ""  # the HTTP/JSON API's and the web console's base URL

    @property
    def bootstrap(self) -> dict:
        return json.loads((self.data_dir / "bootstrap.json").read_text())

    def stop(self, timeout: float = 20) -> dict[str, int]:
        """SIGTERM every process (the front door first) and return their exit codes."""
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

    def kill(self, name: str) -> None:
        """kill -9 the named process and its process group (fault tests)."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait()

    def restart(self, name: str, timeout: float = 60) -> None:
        """Start the named process again as it was started (its port, data and settings), and wait
        until it serves; the process must have ended."""
        old = self.processes[name]
        assert old.poll() is not None, f"{name} still runs"
        log = self.data_dir / (f"{name}.log" if len(self.processes) > 1 else "suite.log")
        process = self.processes[name] = _spawn(list(old.args), log, self.envs[name])
        address = f"127.0.0.1:{old.args[old.args.index('--port') + 1]}"
        deadline = time.monotonic() + timeout
        while not is_serving(address, timeout=1, **self.tls_files):  # the others may be down on purpose
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not serve again (exit {process.poll()}); see {log}")
            time.sleep(0.1)

    def add_replica(self, name: str, replica: str, timeout: float = 60) -> None:
        """Start another process like the named one (same settings, another port) as `replica`,
        and wait until it serves: a second jobs replica sharing the first one's database."""
        args, port = list(self.processes[name].args), free_port()
        args[args.index("--port") + 1] = str(port)
        self.envs[replica] = self.envs[name]
        self.processes[replica] = _spawn(args, self.data_dir / f"{replica}.log", self.envs[replica])
        _wait(self, {replica: f"127.0.0.1:{port}"}, timeout)


def _tls_files(env: dict[str, str]) -> dict[str, str]:
    """The TLS files the launched processes were given, for probing them as one of them."""
    return {f"{name}_file": env.get(f"QRUNTIME_TLS_{name.upper()}_FILE", "") for name in ("ca", "cert", "key")}


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _wait(launched: Launched, addresses: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = dict(addresses)
    while pending:
        for name, process in launched.processes.items():
            if process.poll() is not None:
                launched.stop()
                raise RuntimeError(f"{name} exited with {process.returncode}; see logs in {launched.data_dir}")
        pending = {n: a for n, a in pending.items() if not is_serving(a, timeout=1, **launched.tls_files)}
        if pending and time.monotonic() > deadline:
            launched.stop()
            raise TimeoutError(f"not serving after {timeout} s: {sorted(pending)}")
        if pending:
            time.sleep(0.1)


def embedded(data_dir: Path, port: int | None = None, timeout: float = 60, extra_env=None) -> Launched:
    """`qruntime up` in its own process."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(extra_env or {})}
    process = _spawn([str(BIN / "qruntime"), "up", "--data-dir", str(data_dir), "--port", str(port),
                      "--http-port", str(free_port())], data_dir / "suite.log", env)
    launched = Launched(f"127.0.0.1:{port}", data_dir, {"suite": process}, {"suite": env}, _tls_files(env))
    _wait(launched, {"suite": launched.url}, timeout)
    launched.http_url = launched.bootstrap.get("http_url", "")
    return launched


def separate(data_dir: Path, timeout: float = 60, extra_env=None, service_env=None) -> Launched:
    """auth, programs, devices and jobs as four processes, and the gateway in front of them;
    service_env: more environment for the four services, not the gateway."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in ("gateway", "auth", "programs", "devices", "jobs")}
    http_port = free_port()  # the gateway's HTTP/JSON port
    url = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    keys = {name: new_api_key() for name in ("programs", "devices", "jobs")}  # each its own; auth knows them
    env = {**os.environ, "QRUNTIME_DATA_DIR": str(data_dir), "QRUNTIME_AUTH_URL": url["auth"], **(extra_env or {})}
    own_env = {"auth": {"QRUNTIME_SERVICE_KEYS": ",".join(f"{name}={key}" for name, key in keys.items())},
               **{name: {"QRUNTIME_SERVICE_KEY": key} for name, key in keys.items()}}
    commands = {
        "auth": ["qruntime-auth", "--public-url", url["gateway"], "--public-http-url", f"http://127.0.0.1:{http_port}"],
        "programs": ["qruntime-programs"],
        "devices": ["qruntime-devices"],
        "jobs": ["qruntime-jobs", "--programs-url", url["programs"], "--devices-url", url["devices"]],
        "gateway": ["qruntime", "gateway", "--programs-url", url["programs"], "--jobs-url", url["jobs"],
                    "--devices-url", url["devices"], "--http-port", str(http_port)],
    }
    envs = {name: {**env, **((service_env or {}) if name != "gateway" else {}), **own_env.get(name, {})}
            for name in commands}
    processes = {name: _spawn([str(BIN / program), *args, "--port", str(ports[name])], data_dir / f"{name}.log",
                              envs[name])
                 for name, (program, *args) in commands.items()}
    launched = Launched(url["gateway"], data_dir, processes, envs, _tls_files(env),
                        http_url=f"http://127.0.0.1:{http_port}")
    _wait(launched, url, timeout)
    if not (data_dir / "bootstrap.json").exists():  # auth serves only once it has written it
        launched.stop()
        raise RuntimeError(f"auth serves but wrote no bootstrap.json (a store used before?); see {data_dir}")
    return launched


@contextlib.contextmanager
def running(launched: Launched) -> Iterator[Launched]:
    try:
        yield launched
    finally:
        launched.stop()
