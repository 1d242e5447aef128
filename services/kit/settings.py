"""Settings: one frozen object per process, from flags, then QRUNTIME_* env vars, then defaults.

Every service uses ServerSettings or a subclass that adds its own fields; load_settings builds the
command line from the dataclass fields, so a flag, its env var and its default are declared once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from .secrets import ensure_private_file, read_private

ENV_PREFIX = "QRUNTIME_"
_LOG_FORMATS = ("console", "json")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def setting(default: Any, help: str, *, secret: bool = False) -> Any:  # noqa: A002 - mirrors argparse
    """A settings field with its help text; a secret one never shows in --help or repr()."""
    return dataclasses.field(default=default, repr=not secret, metadata={"help": help, "secret": secret})


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """What every service needs to start."""

    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8443, "port to listen on; 0 picks a free one")
    data_dir: str = setting(".qruntime", "folder for embedded (SQLite) databases and keys")
    database_url: str = setting(  # may hold the database password
        "", "SQLAlchemy URL of this service's store; empty: SQLite in data_dir", secret=True
    )
    auth_url: str = setting("", "host:port of the auth service; empty: this same server")
    service_key: str = setting("", "API key this service signs in with when it calls others", secret=True)
    service_key_file: str = setting("", "file holding service_key (read when service_key is empty)")
    log_format: str = setting("console", "console or json")
    log_level: str = setting("info", "debug, info, warning or error")
    grace_seconds: float = setting(5.0, "how long in-flight calls may finish on SIGTERM")
    tls_cert_file: str = setting("", "PEM certificate (chain) to serve TLS with; empty: plaintext")
    tls_key_file: str = setting("", "PEM private key of tls_cert_file (an owner-only file)")
    tls_ca_file: str = setting("", "PEM CA bundle: call the other services over TLS, trusting only it")

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if self.log_format not in _LOG_FORMATS:
            problems.append(f"log_format must be one of {_LOG_FORMATS}, got {self.log_format!r}")
        if self.log_level not in _LOG_LEVELS:
            problems.append(f"log_level must be one of {_LOG_LEVELS}, got {self.log_level!r}")
        if not (math.isfinite(self.grace_seconds) and self.grace_seconds >= 0):
            problems.append(f"grace_seconds must be a finite number, 0 or more, got {self.grace_seconds}")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def data_path(self) -> Path:
        """data_dir, created owner-only when missing: it holds the stores, with the auth service's
        signing key, and the keys of bootstrap.json and service.key."""
        path = Path(self.data_dir).resolve()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def database_url_for(self, service: str) -> str:
        """The configured URL, or an SQLite file named after the service in data_dir: owner-only
        (with its journal files), and refused at start if others may read it."""
        if self.database_url:
            return self.database_url
        path = self.data_path() / f"{service}.db"
        ensure_private_file(path)
        for journal in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if journal.exists():
                ensure_private_file(journal)
        return f"sqlite:///{path}"

    def resolved_service_key(self) -> str:
        """The service API key, from service_key or service_key_file (which must be owner-only);
        empty when neither is set."""
        if self.service_key:
            return self.service_key
        if self.service_key_file:
            return read_private(Path(self.service_key_file))
        return ""


S = TypeVar("S", bound=ServerSettings)


def load_settings(cls: type[S], argv: Sequence[str] | None = None, prog: str | None = None, **overrides: Any) -> S:
    """Parse flags (--data-dir ...) over env vars (QRUNTIME_DATA_DIR ...) over the field defaults."""
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__)
    fields = dataclasses.fields(cls)
    for field in fields:
        env = ENV_PREFIX + field.name.upper()
        default = overrides.get(field.name, field.default)
        if env in os.environ:
            default = os.environ[env]
        shown = "set" if field.metadata.get("secret") and default else "%(default)s"
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=_parser_for(field.type),
            default=default,
            help=f"{field.metadata.get('help', '')} (env {env}; default: {shown})",
        )
    given = sys.argv[1:] if argv is None else list(argv)
    for field in fields:
        flag = "--" + field.name.replace("_", "-")
        if field.metadata.get("secret") and any(a == flag or a.startswith(flag + "=") for a in given):
            # Every local user can read a process's command line (ps, /proc/<pid>/cmdline).
            parser.error(f"{flag} would show the secret to every user of this machine; "
                         f"set {ENV_PREFIX + field.name.upper()} instead"
                         + (f", or {flag}-file" if any(f.name == field.name + "_file" for f in fields) else ""))
    values = vars(parser.parse_args(argv))
    try:
        return cls(**{f.name: _parser_for(f.type)(values[f.name]) for f in fields})
    except ValueError as err:
        parser.error(str(err))  # exits 2 with the usage, like a malformed flag


def _parser_for(type_name: Any) -> Any:
    name = type_name if isinstance(type_name, str) else type_name.__name__
    return {"int": int, "float": float, "bool": _bool, "str": str}[name]


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")
