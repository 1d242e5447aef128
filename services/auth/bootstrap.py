"""The first start of a deployment: a first account, Lite instance, user and API key."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .store import AuthStore

BOOTSTRAP_FILE = "bootstrap.json"


def bootstrap_if_empty(store: AuthStore, data_dir: Path, url: str) -> Path | None:
    """On an empty store, create the first account and write DIR/bootstrap.json (owner-only).

    The file holds what a first user needs: the suite's url, the instance's CRN and the API key.
    Returns its path when it was written now, None when the store already had accounts.
    """
    if not store.is_empty():
        return None
    account_id = store.create_account("default")
    user_id = store.create_user(account_id, "admin")
    instance = store.create_instance(account_id, "default", plan="lite")
    store.grant_role(instance["crn"], user_id, "manager")
    api_key = store.create_user_key(user_id)
    path = data_dir / BOOTSTRAP_FILE
    write_private(path, json.dumps({"url": url, "instance": instance["crn"], "instance_name": instance["name"],
                                    "api_key": api_key, "plan": "lite"}, indent=2) + "\n")
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never exposing it with wider rights meanwhile."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)  # O_CREAT keeps the rights of a file that is already there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
