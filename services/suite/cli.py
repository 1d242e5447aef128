"""The `qruntime` command: run the embedded suite or the front door, make service keys.

    qruntime up --data-dir DIR      all four services on one port, SQLite under DIR (foreground), and
                                    the HTTP/JSON API and web console on --http-port (default 8080)
    qruntime gateway ...            the front door for services running as separate processes (gRPC,
                                    and HTTP/JSON on --http-port)
    qruntime admin ...              manage users, instances, groups, policies, keys; read the audit trail
    qruntime service-key            print a new service API key (for QRUNTIME_SERVICE_KEY and QRUNTIME_SERVICE_KEYS)
"""

from __future__ import annotations

import dataclasses
import sys

from qruntime_auth.bootstrap import BOOTSTRAP_FILE
from qruntime_auth.component import SERVICE_KEYS_DIR
from qruntime_auth.keys import new_api_key
from qruntime_kit.secrets import write_private
from qruntime_kit.server import run
from qruntime_kit.settings import load_settings

from .embedded import SuiteSettings, build_components
from .gateway import GatewaySettings, run_gateway
from .rest import HttpFrontDoor


def up(argv: list[str]) -> None:
    """Start the embedded suite in the foreground; Ctrl-C or SIGTERM stops it cleanly."""
    settings = load_settings(SuiteSettings, argv, prog="qruntime up")
    data_dir = settings.data_path()
    key_file = data_dir / SERVICE_KEYS_DIR / "jobs.key"  # auth reads the folder; jobs signs in with it
    if not settings.resolved_service_key():
        if not key_file.exists():
            key_file.parent.mkdir(mode=0o700, exist_ok=True)
            write_private(key_file, new_api_key() + "\n")
        settings = dataclasses.replace(settings, service_key_file=str(key_file))
    fresh = not (data_dir / BOOTSTRAP_FILE).exists()
    print(f"qruntime: starting the suite on {settings.host}:{settings.port}, data in {data_dir.resolve()}",
          file=sys.stderr, flush=True)
    if fresh:
        print(f"qruntime: first start: the first account, its Lite and Standard instances and API key go to "
              f"{(data_dir / BOOTSTRAP_FILE).resolve()}", file=sys.stderr, flush=True)
    components = build_components(settings)
    if settings.http_port >= 0:  # last: it serves once the services do
        components.append(HttpFrontDoor(settings.host, settings.http_port, bootstrap_file=data_dir / BOOTSTRAP_FILE))
    run(components, settings, front_door=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "up":
        up(rest)
    elif command == "gateway":
        run_gateway(load_settings(GatewaySettings, rest, prog="qruntime gateway"))
    elif command == "admin":
        from .admin_cli import main as admin

        admin(rest)
    elif command == "service-key":
        print(new_api_key())
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(0 if command in ("-h", "--help") else 2)


if __name__ == "__main__":
    main()
