"""The seccomp filter for sandboxed user programs, compiled by the system's libseccomp.

Namespaces (sandbox.py) decide what a program can *see*; this filter narrows what it can *ask the
kernel*. It is a deny list on top of bubblewrap's namespaces and dropped capabilities: each entry
below is either kernel attack surface a Python program never needs (most kernel exploits of the
last years went through io_uring, bpf, perf or user namespaces), a way to reach another process or
the host, or an administrative call the dropped capabilities already refuse (kept here too, so one
mistake does not open it). Denied calls fail with EPERM (EAFNOSUPPORT for socket families,
ENOSYS for clone3 and foreign ABIs) rather than killing the process, so a program gets a plain
OSError it can report.

We compile with libseccomp (ctypes over libseccomp.so.2), as flatpak and most bubblewrap users do:
it knows every architecture's syscall numbers, splits 64-bit argument comparisons correctly, and
rejects x32 and foreign-ABI calls for us. The output is what `bwrap --seccomp FD` reads: a raw array
of `struct sock_filter`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
from collections.abc import Iterator

# libseccomp's constants (seccomp.h); they are part of its stable ABI.
_ACT_ALLOW = 0x7FFF0000
_CMP_GE = 5
_CMP_MASKED_EQ = 7
_ATTR_ACT_BADARCH = 2
_ARCH_X86_64 = 0xC000003E
_ARCH_AARCH64 = 0xC00000B7

# The clone flags that make new namespaces. A namespace the program owns is where the root-only
# parts of the kernel (mounts, netfilter, ...) become reachable without privileges.
_CLONE_NEW = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
_TIOCSTI = 0x5412  # pushes bytes into a terminal's input: a program could type commands into the user's shell
_TIOCLINUX = 0x541C  # the console's selection buffer can be pasted into the console the same way

# Socket families a program may open. Network namespaces isolate these; AF_VSOCK (the hypervisor),
# AF_BLUETOOTH, AF_CAN and most others are not namespaced at all, and rare families are where the
# kernel's socket bugs live. Only loopback exists in the sandbox's network namespace anyway.
_ALLOWED_FAMILIES = frozenset({1, 2, 10, 16})  # AF_UNIX, AF_INET, AF_INET6, AF_NETLINK
_AF_MAX = 46  # one past the highest family Linux knows; anything above is refused too

# Syscalls denied outright, grouped by why.
DENIED: dict[str, tuple[str, ...]] = {
    # Large kernel attack surface no Python program needs; each has had privilege escalations.
    "attack surface": (
        "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open", "userfaultfd",
        "keyctl", "add_key", "request_key",
    ),
    # Reading or changing another process's memory or descriptors.
    "other processes": ("ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd"),
    # Namespaces and mounts: the sandbox's view of the system is bubblewrap's, and stays so.
    "namespaces and mounts": (
        "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
        "move_mount", "open_tree", "mount_setattr",
    ),
    # File handles bypass path lookup, hence the mount view (the old Docker "shocker" escape).
    "file handles": ("open_by_handle_at", "name_to_handle_at"),
    # Administering the machine: refused by the dropped capabilities as well; denied here so that a
    # mistake in one layer is not enough.
    "host administration": (
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
        "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "settimeofday", "clock_settime", "clock_adjtime",
        "adjtimex", "iopl", "ioperm", "vhangup", "lookup_dcookie", "nfsservctl", "uselib",
    ),
}


class SeccompUnavailable(RuntimeError):
    """The filter cannot be built on this machine (no libseccomp, or an unsupported architecture)."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as err:
        raise SeccompUnavailable(
            f"libseccomp is not installed ({err}): apt-get install libseccomp2 (or run scripts/setup.sh)") from err
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    # The _array variant: passing structs through C varargs from ctypes is not portable.
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    return lib


def _errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)  # SCMP_ACT_ERRNO(code)


def syscall_number(name: str) -> int | None:
    """This machine's number for a syscall, or None where the architecture has no such call."""
    number = _libseccomp().seccomp_syscall_resolve_name(name.encode())
    return number if number >= 0 else None  # negative: libseccomp's pseudo number for "not on this arch"


def _masked_eq(arg: int, mask: int, value: int) -> _ArgCmp:
    return _ArgCmp(arg, _CMP_MASKED_EQ, mask, value)


@functools.cache
def seccomp_program() -> bytes:
    """The filter as the raw `struct sock_filter` array `bwrap --seccomp FD` loads (built once)."""
    lib = _libseccomp()
    if lib.seccomp_arch_native() not in (_ARCH_X86_64, _ARCH_AARCH64):
        # Elsewhere clone's flags are not always its first argument; better no sandbox than a wrong one.
        raise SeccompUnavailable("the sandbox's seccomp filter supports x86_64 and aarch64 only")
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        # A call through another ABI (i386's int 0x80 or x32's numbers on x86_64) would be checked
        # against this table with the wrong numbers; refuse them as a kernel without that ABI would.
        _check(lib.seccomp_attr_set(ctx, _ATTR_ACT_BADARCH, _errno(errno.ENOSYS)), "set the foreign-ABI action")

        def deny(name: str, action: int, *cmps: _ArgCmp) -> None:
            number = syscall_number(name)
            if number is None:
                return  # not on this architecture: nothing to deny
            array = (_ArgCmp * len(cmps))(*cmps) if cmps else None
            _check(lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array), f"deny {name}")

        eperm = _errno(errno.EPERM)
        for names in DENIED.values():
            for name in names:
                deny(name, eperm)
        # clone3 passes its flags in memory, where a filter cannot look: make it unknown, and glibc
        # falls back to clone, whose flags we can check (what Docker and Chromium do).
        deny("clone3", _errno(errno.ENOSYS))
        for flag in _CLONE_NEW.values():  # rules for one call are OR-ed: any namespace flag denies
            deny("clone", eperm, _masked_eq(0, flag, flag))
        # The request is an unsigned int: compare only the low 32 bits, or 1<<32|TIOCSTI gets through.
        for request in (_TIOCSTI, _TIOCLINUX):
            deny("ioctl", eperm, _masked_eq(1, 0xFFFFFFFF, request))
        # personality: only PER_LINUX (0) and the query 0xffffffff; the flags (ADDR_NO_RANDOMIZE,
        # READ_IMPLIES_EXEC, MMAP_PAGE_ZERO, ...) weaken exploit mitigations. One rule may compare an
        # argument once, so "neither 0 nor all ones" is written as "some bit set whose neighbour
        # (cyclically) is clear": 32 rules of one masked comparison each.
        for bit in range(32):
            this, neighbour = 1 << bit, 1 << ((bit + 1) % 32)
            deny("personality", eperm, _masked_eq(0, this | neighbour, this))
        eafnosupport = _errno(errno.EAFNOSUPPORT)
        for family in range(_AF_MAX):
            if family not in _ALLOWED_FAMILIES:
                deny("socket", eafnosupport, _masked_eq(0, 0xFFFFFFFF, family))
        deny("socket", eafnosupport, _ArgCmp(0, _CMP_GE, _AF_MAX, 0))
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise SeccompUnavailable(f"libseccomp could not {what}: {os.strerror(-rc)}")


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("seccomp-export", os.MFD_CLOEXEC)
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "export the filter")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


@contextlib.contextmanager
def seccomp_fd() -> Iterator[int]:
    """An fd holding seccomp_program(), positioned at its start, for `bwrap --seccomp FD`; closed on
    exit. Pass it to the child with subprocess's pass_fds: bwrap reads it to the end before the
    program starts, and closes it, so the program never sees it. One per sandbox started: the read
    position is shared with the child, so a second bwrap would read nothing (and refuse to start)."""
    fd = os.memfd_create("qruntime-seccomp", os.MFD_CLOEXEC)  # pass_fds makes the child's copy inheritable
    try:
        os.write(fd, seccomp_program())
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)
