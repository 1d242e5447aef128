"""Run an untrusted Python program inside bubblewrap: the kernel, not Python, keeps it in.

A user's uploaded program runs with the service's interpreter and packages, but in its own user,
pid, network, ipc, uts and cgroup namespaces (bubblewrap), with no capabilities, no way to gain any
(no_new_privs), a seccomp filter (seccomp.py) and a filesystem that holds only what the interpreter
needs, read-only, plus a private writable scratch folder. It sees none of the service's data dir,
secrets, other jobs' scratch folders, host processes or network (not even 127.0.0.1: the
loopback it has is its own).

It also runs as an unprivileged uid *on the host* (host_uid, "nobody" by default), never as the
service's root: a user namespace maps the program's uid to its creator's, and a program mapped to
host root would own every root-owned file and sysctl it can reach (/proc/sys/kernel/core_pattern
is a host escape), share root's per-user kernel budgets (inotify, pipes, reserved disk blocks) and
escape RLIMIT_NPROC. So when the service is root the command has two stages: a privileged
bubblewrap that only gathers the read-only folders under /stage (the interpreter may live under a
0700 /root, unreachable for nobody), setpriv down to host_uid, then the real, unprivileged sandbox.
A service that is not root runs the second stage directly, as itself.

This module only builds the command line. Resource caps (memory and pids cgroups, rlimits) and the
process's lifetime belong to the launcher (limits.py, workers.py): both stages pass rlimits and
cgroup membership on, so a launcher that applies them to the command applies them to everything the
program starts.

    with seccomp_fd() as fd:
        argv = sandbox_argv([sys.executable, "-c", code], scratch=folder, keep_fds=[channel], seccomp_fd=fd)
        subprocess.run(argv, pass_fds=[channel, fd])   # close_fds stays on: only these are inherited

Descriptors keep their numbers inside; bubblewrap closes the seccomp fd once it has read it (take a
new seccomp_fd() for every start). A launcher that renumbers descriptors (workers.spawn puts its
channel on 3 and extra_fds on 4, 5, ...) passes the numbers they will have: keep_fds=[3], seccomp_fd=4.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .seccomp import SeccompUnavailable, seccomp_fd, seccomp_program

__all__ = ["SANDBOX_UID", "SCRATCH", "SandboxUnavailable", "sandbox_argv", "sandbox_available", "seccomp_fd",
           "seccomp_program"]

SCRATCH = "/scratch"  # where the scratch folder appears inside, and the program's cwd and HOME
SANDBOX_UID = 65534  # "nobody": the program's uid and gid inside, and its host uid by default
TMP_BYTES = 64 << 20  # /tmp is memory (charged to the worker's memory cgroup); big files go to scratch
_STAGE = "/stage"  # where the first stage gathers the folders the sandbox binds
# Top-level entries of / that some systems make symlinks into /usr (merged /usr) and others real folders.
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_NOT_INSTALLED = ("bubblewrap is not installed: apt-get install bubblewrap (scripts/setup.sh does it); "
                  "uploaded programs cannot run until it is")


class SandboxUnavailable(RuntimeError):
    """bubblewrap (or setpriv, for a root service) is missing; sandbox_available() says so without raising."""


def sandbox_available() -> str | None:
    """None when sandboxed programs can run here (a real trial sandbox started and exited cleanly,
    once per process), else a sentence saying why not and how to fix it."""
    return _probe()


@functools.cache
def _probe() -> str | None:
    try:
        _tools()
        seccomp_program()
    except (SandboxUnavailable, SeccompUnavailable) as err:
        return str(err)
    with tempfile.TemporaryDirectory(prefix="qruntime-probe-") as scratch, seccomp_fd() as fd:
        argv = sandbox_argv([sys.executable, "-I", "-c", "pass"], scratch=Path(scratch), seccomp_fd=fd)
        try:
            done = subprocess.run(argv, pass_fds=[fd], stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                                  check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"bubblewrap could not start a sandbox: {err}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()[-500:] or f"exit status {done.returncode}"
        return (f"bubblewrap cannot make a sandbox here ({reason}); it needs unprivileged user namespaces "
                "(user.max_user_namespaces > 0; on Ubuntu an AppArmor profile for bwrap) and seccomp")
    return None


def sandbox_argv(
    argv: Sequence[str],
    *,
    scratch: Path | None,
    seccomp_fd: int | None,
    scratch_bytes: int = 0,
    keep_fds: Sequence[int] = (),
    read_only: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    host_uid: int = SANDBOX_UID,
) -> list[str]:
    """The command line that runs argv in a fresh sandbox.

    scratch: a host folder, writable inside as /scratch (also the cwd and HOME); the only place the
      program's files outlive it. Give each program its own. When the caller is root it is handed to
      host_uid here (chown, mode 0700), so files put in it beforehand must be readable by that uid.
      None: /scratch is memory instead (a tmpfs of scratch_bytes, counted in the worker's memory
      cgroup), so a program cannot fill the host's disk, and nothing it writes outlives it.
    seccomp_fd: the number the fd from seccomp_fd() will have in the started process (passed with
      pass_fds); None runs without the filter (for measurements only).
    keep_fds: descriptors the program inherits besides 0-2 (e.g. its channel to the worker); the
      caller passes exactly these (plus seccomp_fd) in pass_fds. They keep their numbers.
    read_only: more host paths to show read-only at the same place, besides the interpreter's own.
    env: variables set on top of the minimal environment (which replaces the caller's wholly).
    host_uid: the host uid (and gid) the program runs as when the caller is root. Concurrent sandboxes
      sharing one uid share its per-user kernel budgets (RLIMIT_NPROC counts them all together);
      a pool of uids, one per running program, keeps them apart.
    """
    for fd in keep_fds:
        if fd < 3 or fd == seccomp_fd:
            raise ValueError(f"keep_fds holds {fd}: 0-2 are always inherited, and the seccomp fd never")
    if scratch is None and scratch_bytes <= 0:
        raise ValueError("give a scratch folder, or scratch_bytes for a scratch in memory")
    env_tool, bwrap, setpriv = _tools()
    binds = [(str(p), str(p), False) for p in _read_only_paths(read_only)]
    if scratch is not None:
        scratch = Path(scratch).resolve(strict=True)
        binds.append((str(scratch), SCRATCH, True))
    # bwrap's own process stays in the sandbox as its pid 1 (the reaper), and any program can read
    # /proc/1/environ: start it with an empty environment, whatever the caller's holds (keys, URLs).
    command = [env_tool, "-i"]
    if os.geteuid() == 0:
        if scratch is not None:
            os.chown(scratch, host_uid, host_uid)
            os.chmod(scratch, 0o700)
        staged = [(f"{_STAGE}/{i}", dest, writable) for i, (_, dest, writable) in enumerate(binds)]
        command += _first_stage(bwrap, binds)
        command += [setpriv, "--reuid", str(host_uid), "--regid", str(host_uid), "--clear-groups", "--"]
        binds = staged
    command += _sandbox(bwrap, binds, seccomp_fd, env, scratch_bytes if scratch is None else 0)
    return [*command, "--", *argv]


def _first_stage(bwrap: str, binds: list[tuple[str, str, bool]]) -> list[str]:
    """A privileged bwrap that gathers every bind source under /stage (a folder nobody may enter)
    and keeps of root only what setpriv needs to drop it."""
    # Its own pid namespace: setpriv's change of uid clears the parent-death signal bwrap set, so
    # --die-with-parent alone would not reach the second stage; the end of this namespace's pid 1
    # (when this bwrap dies) kills everything in it, the nested sandbox included.
    args = [bwrap, "--unshare-pid", "--die-with-parent", "--clearenv", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
            "--cap-add", "CAP_SETGID"]
    args += _system_files()  # for bwrap and setpriv themselves
    # The second bwrap needs a /proc to set up its user namespace (and the kernel lets it mount a new
    # proc only where a whole one is visible), a /dev to take device nodes from, and /tmp to build in.
    # The host's /proc is seen here by our own two tools only, never by the program.
    args += ["--bind", "/proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--perms", "0755", "--dir", _STAGE]
    for i, (source, _, writable) in enumerate(binds):
        args += ["--bind" if writable else "--ro-bind", source, f"{_STAGE}/{i}"]
    return [*args, "--"]


def _sandbox(bwrap: str, binds: list[tuple[str, str, bool]], seccomp_fd: int | None,
             env: Mapping[str, str] | None, scratch_bytes: int) -> list[str]:
    # Every namespace; --disable-userns: no nested user namespace either (the way back to
    # capabilities over a namespace of its own, and much of the kernel's recent attack surface).
    args = [bwrap, "--unshare-all", "--unshare-user", "--unshare-cgroup", "--disable-userns"]
    args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
    # --die-with-parent: if the worker dies, so does the sandbox (and with its pid 1, every process in
    # it). --new-session: no controlling terminal, so TIOCSTI cannot type into the caller's shell.
    args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for name, value in {**_base_env(), **(env or {})}.items():
        args += ["--setenv", name, value]
    args += _system_files()
    # /tmp before the binds: a read-only path under the host's /tmp must not be hidden by it.
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for source, dest, writable in binds:
        args += ["--bind" if writable else "--ro-bind", source, dest]
    if scratch_bytes:
        args += ["--size", str(scratch_bytes), "--perms", "0700", "--tmpfs", SCRATCH]
    args += ["--chdir", SCRATCH]
    # The root bwrap builds is a tmpfs the program would own: make it read-only, so nothing can be
    # written outside /scratch, /tmp and /dev (the last two are memory, counted in its memory cgroup).
    args += ["--remount-ro", "/"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return args


@functools.cache
def _tools() -> tuple[str, str, str]:
    env_tool, bwrap = shutil.which("env", path="/usr/bin:/bin"), shutil.which("bwrap")
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if not (env_tool and bwrap):
        raise SandboxUnavailable(_NOT_INSTALLED)
    if os.geteuid() == 0 and not setpriv:
        raise SandboxUnavailable("setpriv (util-linux) is missing: a root service needs it to run programs "
                                 "as an unprivileged user")
    return env_tool, bwrap, setpriv or ""


def _base_env() -> dict[str, str]:
    return {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": SCRATCH,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "USER": "nobody",  # getpass.getuser() reads these before the passwd file, which is not there
        "LOGNAME": "nobody",
        "PYTHONDONTWRITEBYTECODE": "1",  # the packages are read-only: don't even try to write .pyc files
        "PYTHONNOUSERSITE": "1",
    }


def _system_files() -> list[str]:
    # /usr whole: the dynamic loader, shared libraries (libc, libstdc++, libgomp, ...) and the
    # tools the standard library runs (ldconfig for ctypes.util.find_library); it holds no secrets.
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _ROOT_LINKS:
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    # The loader's cache of library locations. Nothing else of /etc: no passwd, no keys, no hosts.
    # (A privileged bwrap makes folders 0700; the second stage, as host_uid, reads through this one.)
    return [*args, "--perms", "0755", "--dir", "/etc", "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]


def _read_only_paths(extra: Iterable[Path]) -> list[Path]:
    return _outermost([*_interpreter_paths(), *(Path(p).absolute() for p in extra)])


@functools.cache
def _interpreter_paths() -> tuple[Path, ...]:
    """What this interpreter needs to start and import our packages, at the paths it knows them by."""
    paths = {Path(p) for p in (sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix)}
    paths.add(Path(os.path.realpath(sys.executable)).parent)
    paths.update(_editable_sources())
    return tuple(sorted(paths))


def _editable_sources() -> set[Path]:
    """The source folders of packages installed editable (pip install -e): they live outside the
    venv, in the checkout, whose other files (a data dir, keys) must stay out of view. Found from
    each editable distribution's top-level names, never from a hard-coded layout."""
    found: set[Path] = set()
    for dist in importlib.metadata.distributions():
        try:
            editable = json.loads(dist.read_text("direct_url.json") or "{}").get("dir_info", {}).get("editable")
        except ValueError:
            continue
        if not editable:
            continue
        for name in (dist.read_text("top_level.txt") or "").split():
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                continue
            if spec is None:
                continue
            if spec.submodule_search_locations:  # a package: its folder(s)
                found.update(Path(p) for p in spec.submodule_search_locations)
            elif spec.origin and os.path.isabs(spec.origin):  # a single-file module
                found.add(Path(spec.origin))
    return {p for p in found if p.exists()}


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths without those inside another (a bind of a parent after its child would hide it),
    and without those under /usr, which is bound whole."""
    kept: list[Path] = [Path("/usr")]
    for path in sorted({Path(os.path.normpath(p)) for p in paths}, key=lambda p: len(p.parts)):
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept[1:]
