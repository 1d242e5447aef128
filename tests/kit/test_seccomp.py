"""The seccomp filter, on its own and inside the sandbox.

On its own: the filter is loaded by hand into a plain child process (no namespaces, still root), and
every call of a table must be refused by it, while the same table run without the filter is not:
so a refusal the namespaces or dropped capabilities would give anyway cannot hide a hole in the
filter. Every call in the table has arguments that are harmless even if let through.
"""

from __future__ import annotations

import json
import os
import platform
import textwrap

import pytest
from sandbox_harness import EPILOGUE, PRELUDE, results_of, run_python, sandboxed, skip_without_sandbox

from qruntime_kit.sandbox import seccomp_program
from qruntime_kit.seccomp import syscall_number

# The syscalls the filter refuses, each with arguments that are harmless even when the call is
# let through: the same table also runs unfiltered, as root, as the control.
SAFE_CALLS: dict[str, tuple[str, tuple[int | bytes | None, ...], str]] = {
    # label: (syscall, arguments, what the filter answers)
    "io_uring_setup": ("io_uring_setup", (0, None), "EPERM"),
    "io_uring_enter": ("io_uring_enter", (-1, 0, 0, 0, None, 0), "EPERM"),
    "io_uring_register": ("io_uring_register", (-1, 0, None, 0), "EPERM"),
    "bpf": ("bpf", (-1, None, 0), "EPERM"),
    "perf_event_open": ("perf_event_open", (None, 0, -1, -1, 0), "EPERM"),
    "userfaultfd": ("userfaultfd", (0xFFFF,), "EPERM"),
    "keyctl": ("keyctl", (-1, 0, 0, 0, 0), "EPERM"),
    "add_key": ("add_key", (None, None, None, 0, 0), "EPERM"),
    "request_key": ("request_key", (None, None, None, 0), "EPERM"),
    "ptrace": ("ptrace", (0xFFFF, 0, 0, 0), "EPERM"),
    "process_vm_readv": ("process_vm_readv", (0, None, 0, None, 0, 1), "EPERM"),
    "process_vm_writev": ("process_vm_writev", (0, None, 0, None, 0, 1), "EPERM"),
    "process_madvise": ("process_madvise", (-1, None, 0, 0, 1), "EPERM"),
    "kcmp": ("kcmp", (0, 0, -1, 0, 0), "EPERM"),
    "pidfd_getfd": ("pidfd_getfd", (-1, 0, 0), "EPERM"),
    "unshare": ("unshare", (0xFFFFFFFF,), "EPERM"),
    "setns": ("setns", (-1, 0), "EPERM"),
    "mount": ("mount", (None, None, None, 0, None), "EPERM"),
    "umount2": ("umount2", (None, 0), "EPERM"),
    "pivot_root": ("pivot_root", (None, None), "EPERM"),
    "chroot": ("chroot", (None,), "EPERM"),
    "fsopen": ("fsopen", (None, 0), "EPERM"),
    "fsmount": ("fsmount", (-1, 0, 0), "EPERM"),
    "fspick": ("fspick", (-1, None, 0), "EPERM"),
    "move_mount": ("move_mount", (-1, None, -1, None, 0), "EPERM"),
    "open_tree": ("open_tree", (-1, None, 0), "EPERM"),
    "mount_setattr": ("mount_setattr", (-1, None, 0, None, 0), "EPERM"),
    "open_by_handle_at": ("open_by_handle_at", (-1, None, 0), "EPERM"),
    "name_to_handle_at": ("name_to_handle_at", (-1, None, None, None, 0), "EPERM"),
    "kexec_file_load": ("kexec_file_load", (-1, -1, 0, None, 0xFFFFFFFF), "EPERM"),
    "init_module": ("init_module", (None, 0, None), "EPERM"),
    "finit_module": ("finit_module", (-1, None, 0), "EPERM"),
    "delete_module": ("delete_module", (None, 0), "EPERM"),
    "reboot": ("reboot", (0, 0, 0, None), "EPERM"),  # wrong magic numbers: never reboots
    "swapon": ("swapon", (None, 0), "EPERM"),
    "swapoff": ("swapoff", (None,), "EPERM"),
    "acct": ("acct", (b"/nonexistent/qruntime-acct",), "EPERM"),
    "quotactl_fd": ("quotactl_fd", (-1, 0, 0, None), "EPERM"),
    "syslog": ("syslog", (0xFFFF, None, 0), "EPERM"),
    "settimeofday": ("settimeofday", (None, None), "EPERM"),  # both NULL: changes nothing
    "clock_settime": ("clock_settime", (0xFFFF, None), "EPERM"),
    "adjtimex": ("adjtimex", (None,), "EPERM"),
    "iopl": ("iopl", (99,), "EPERM"),
    "clone3": ("clone3", (None, 0), "ENOSYS"),
    "TIOCSTI": ("ioctl", ("DEVNULL", 0x5412, b"x"), "EPERM"),
    "TIOCSTI with high bits": ("ioctl", ("DEVNULL", 1 << 32 | 0x5412, b"x"), "EPERM"),
    "TIOCLINUX": ("ioctl", ("DEVNULL", 0x541C, b"\x06"), "EPERM"),
    "personality ADDR_NO_RANDOMIZE": ("personality", (0x0040000,), "EPERM"),
    "personality READ_IMPLIES_EXEC": ("personality", (0x0400000,), "EPERM"),
    "personality PER_LINUX32": ("personality", (0x8,), "EPERM"),
    "socket AF_VSOCK": ("socket", (40, 1, 0), "EAFNOSUPPORT"),
    "socket AF_PACKET": ("socket", (17, 3, 0), "EAFNOSUPPORT"),
    "socket AF_INET with high bits": ("socket", (1 << 32 | 2, 1, 0), "EAFNOSUPPORT"),
    # Allowed: the filter must not break ordinary programs.
    "personality query": ("personality", (0xFFFFFFFF,), "OK"),
    "personality PER_LINUX": ("personality", (0,), "OK"),
    "socket AF_INET": ("socket", (2, 1, 0), "OK"),
    "socket AF_INET6": ("socket", (10, 1, 0), "OK"),
    "socket AF_UNIX": ("socket", (1, 1, 0), "OK"),
    "socket AF_NETLINK": ("socket", (16, 3, 0), "OK"),
}
CLONE_NEW = {"NEWNS": 0x20000, "NEWCGROUP": 0x2000000, "NEWUTS": 0x4000000, "NEWIPC": 0x8000000,
             "NEWUSER": 0x10000000, "NEWPID": 0x20000000, "NEWNET": 0x40000000}
SIGCHLD = 17
# Where the control (unfiltered, as root) may give the same answer for its own reasons.
SAME_WITHOUT_FILTER = {"fork", "personality query", "personality PER_LINUX", "socket AF_INET", "socket AF_INET6",
                       "socket AF_UNIX", "socket AF_NETLINK", "socket AF_VSOCK"}


def table_snippet() -> str:
    """A snippet making every SAFE_CALLS call, every namespace clone, and foreign-ABI calls."""
    names = {name for name, _, _ in SAFE_CALLS.values()} | {"clone", "getpid"}
    numbers = {name: syscall_number(name) for name in names}
    lines = [f"NR = {json.dumps(numbers)}", "DEVNULL = os.open('/dev/null', os.O_RDWR)"]
    for label, (name, args, _) in SAFE_CALLS.items():
        if numbers[name] is None:
            continue
        rendered = ", ".join("DEVNULL" if a == "DEVNULL" else repr(a) for a in args)
        lines.append(f"results[{label!r}] = raw(NR[{name!r}], {rendered})")
    for flag, value in CLONE_NEW.items():
        lines.append(f"results['clone {flag}'] = raw_clone({value | SIGCHLD})")
    lines.append("results['fork'] = raw_clone(17)")
    if platform.machine() == "x86_64":
        lines.append(textwrap.dedent("""
            results["x32 getpid"] = raw(0x40000000 + NR["getpid"])
            import mmap
            page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # mov eax, 20 (i386 getpid); int 0x80; ret
            i386 = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
            results["i386 getpid"] = "OK" if i386 == os.getpid() else errno.errorcode.get(-i386, str(i386))
        """))
    return "\n".join(lines)


def expected_table() -> dict[str, str]:
    expected = {label: want for label, (name, _, want) in SAFE_CALLS.items() if syscall_number(name) is not None}
    expected.update({f"clone {flag}": "EPERM" for flag in CLONE_NEW})
    expected["fork"] = "OK"
    if platform.machine() == "x86_64":
        expected.update({"x32 getpid": "ENOSYS", "i386 getpid": "ENOSYS"})
    return expected


# --- the filter on its own -----------------------------------------------------------------------

def test_filter_alone_refuses_each_call_and_the_control_does_not():
    # The filter loaded by hand (no namespaces, still root): every refusal here is the filter's own.
    install = textwrap.dedent(f"""
        class Fprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
        program = bytes.fromhex({seccomp_program().hex()!r})
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        assert libc.prctl(38, 1, None, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
        fprog = Fprog(len(program) // 8, program)
        assert libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) == 0, ctypes.get_errno()  # PR_SET_SECCOMP, FILTER
    """)
    table = table_snippet()
    # A session of its own: no controlling terminal the ioctls could reach even if they got through.
    filtered = results_of(run_python(PRELUDE + install + table + EPILOGUE, start_new_session=True))
    control = results_of(run_python(PRELUDE + table + EPILOGUE, start_new_session=True))
    expected = expected_table()
    assert filtered == expected
    leaky = {label for label, answer in expected.items()
             if control[label] == answer and label not in SAME_WITHOUT_FILTER | {"x32 getpid"}}
    assert not leaky, f"these answer the same without the filter, so the test proves nothing: {leaky}"


def test_the_program_is_plain_bpf_bwrap_can_load():
    program = seccomp_program()
    assert program and len(program) % 8 == 0 and len(program) // 8 < 4096  # struct sock_filter, the kernel's cap


# --- inside the sandbox --------------------------------------------------------------------------

def test_the_sandbox_refuses_the_same_calls(tmp_path):
    skip_without_sandbox()
    assert results_of(sandboxed(table_snippet(), tmp_path / "scratch")) == expected_table()


def test_namespace_and_tracing_calls_with_real_arguments(tmp_path):
    skip_without_sandbox()
    numbers = {n: syscall_number(n) for n in ("io_uring_setup", "ptrace", "unshare", "mount", "clone")}
    done = sandboxed(f"""
        NR = {json.dumps(numbers)}
        params = ctypes.create_string_buffer(120)
        results["io_uring_setup"] = raw(NR["io_uring_setup"], 8, ctypes.addressof(params))
        results["ptrace TRACEME"] = raw(NR["ptrace"], 0, 0, 0, 0)
        results["ptrace ATTACH 1"] = raw(NR["ptrace"], 16, 1, 0, 0)
        results["unshare NEWUSER"] = raw(NR["unshare"], 0x10000000)
        results["unshare NEWNS"] = raw(NR["unshare"], 0x20000)
        os.mkdir("/scratch/mnt")
        results["mount tmpfs"] = raw(NR["mount"], b"none", b"/scratch/mnt", b"tmpfs", 0, None)
        results["mount bind /"] = raw(NR["mount"], b"/", b"/scratch/mnt", None, 0x1000, None)
        results["clone NEWNS"] = raw_clone(0x20000 | 17)
        results["clone NEWUSER"] = raw_clone(0x10000000 | 17)
    """, tmp_path / "scratch")
    results = results_of(done)
    assert results == dict.fromkeys(results, "EPERM") and len(results) == 9


def test_tiocsti_on_a_terminal_is_refused(tmp_path):
    skip_without_sandbox()
    parent, child = os.openpty()
    try:
        done = sandboxed(f"""
            import fcntl, termios
            results["isatty"] = os.isatty(0)
            check("TIOCSTI", lambda: fcntl.ioctl(0, termios.TIOCSTI, b"x"))
            results["TIOCSTI raw"] = raw({syscall_number("ioctl")}, 0, 1 << 32 | termios.TIOCSTI, b"y")
        """, tmp_path / "scratch", stdin=child)
        assert results_of(done) == {"isatty": True, "TIOCSTI": "EPERM", "TIOCSTI raw": "EPERM"}
        os.set_blocking(parent, False)
        with pytest.raises(BlockingIOError):  # nothing was typed into the terminal (it would echo)
            os.read(parent, 100)
    finally:
        os.close(parent)
        os.close(child)
