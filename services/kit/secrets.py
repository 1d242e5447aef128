"""Files that hold secrets (signing keys, API key hashes and secrets, service keys, databases) are
owner-only, whatever the folder's mode: made so when created, checked at every start.

A file that others may read is refused, never silently fixed: someone may already have read it, so
the operator has to know (and rotate what it held).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class InsecureFileError(SystemExit):
    """A secret file that others can read or write; stops the process with a message saying how to fix it."""


def check_private(path: Path) -> None:
    """Refuse a file that anyone but its owner may read or write."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise InsecureFileError(
            f"qruntime: {path} holds secrets but other users may read or write it (mode {mode:04o}); "
            f"anything in it may have leaked: check it, rotate what it holds if need be, then "
            f"`chmod 600 {path}` and start again"
        )


def ensure_private_file(path: Path) -> Path:
    """Create path empty and owner-only if it is missing; refuse it if others may read it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    check_private(path)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never exposing it with wider rights meanwhile."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)  # O_CREAT keeps the rights of a file that is already there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_private(path: Path) -> str:
    """The stripped text of an owner-only file (refused otherwise)."""
    check_private(path)
    return path.read_text().strip()


def private_secret(path: Path, nbytes: int = 32) -> bytes:
    """The random secret kept in path (hex), made on first use; the file is owner-only."""
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another replica made it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(nbytes) + "\n")
    return bytes.fromhex(read_private(path))
