"""Running hostile snippets for the sandbox tests: a prelude of helpers every snippet starts with,
and runners for a plain child process and a real sandbox. Snippets put their findings in `results`
(label -> "OK" or the errno's name), printed as JSON on the last line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qruntime_kit.sandbox import sandbox_argv, sandbox_available, seccomp_fd


def skip_without_sandbox() -> None:
    reason = sandbox_available()
    if reason is not None:
        pytest.skip(f"no sandbox on this machine: {reason}")


# Helpers every snippet starts with: check(label, fn) records "OK" or the errno's name, and
# raw(name, *args) makes a raw syscall (ints, bytes or None) and returns the same.
PRELUDE = """
import ctypes, errno, json, os, sys
results = {}
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def check(label, fn):
    try:
        fn()
        results[label] = "OK"
    except OSError as err:
        results[label] = errno.errorcode.get(err.errno, str(err.errno))

def _arg(value):
    if value is None:
        return ctypes.c_void_p(None)
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    return ctypes.c_long(value)

def raw(number, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(number), *(_arg(a) for a in args))
    if rc == -1:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return "OK"

def raw_clone(flags):
    # clone() without a new stack behaves like fork(): a child that got through leaves at once.
    rc = libc.syscall(ctypes.c_long(NR["clone"]), ctypes.c_long(flags), *(ctypes.c_long(0) for _ in range(4)))
    if rc == 0:
        os._exit(0)
    if rc > 0:
        os.waitpid(rc, 0)
        return "OK"
    return errno.errorcode[ctypes.get_errno()]
"""
EPILOGUE = "\nprint(json.dumps(results))\n"


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("timeout", 60)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, **kwargs)


def sandboxed(code: str, scratch: Path, *, keep_fds=(), read_only=(), stdin=subprocess.DEVNULL, env=None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + code in a fresh sandbox whose scratch folder is `scratch` (made if missing)."""
    scratch.mkdir(exist_ok=True)
    with seccomp_fd() as fd:
        argv = sandbox_argv([sys.executable, "-c", PRELUDE + textwrap.dedent(code) + EPILOGUE], scratch=scratch,
                            keep_fds=keep_fds, read_only=read_only, seccomp_fd=fd, env=env)
        return subprocess.run(argv, pass_fds=[*keep_fds, fd], stdin=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)


def results_of(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The snippet's results; the sandbox must have exited normally after printing them."""
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])

