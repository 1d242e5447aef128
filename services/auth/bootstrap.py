"""The first start of a deployment: a first account, its owner (an operator), an API key, and two
instances, one Lite (simulators) and one Standard (emulated physical systems)."""

from __future__ import annotations

import json
from pathlib import Path

from qruntime_kit.secrets import write_private

from .store import AuthStore

BOOTSTRAP_FILE = "bootstrap.json"
OWNER_EMAIL = "admin@localhost"


def bootstrap_if_empty(store: AuthStore, data_dir: Path, url: str, http_url: str = "") -> Path | None:
    """On an empty store, create the first account and write DIR/bootstrap.json (owner-only).

    The file holds what a first user needs: the suite's url, the Lite instance's CRN (`instance`),
    both instances' CRNs (`instances`: lite, standard), the owner's API key, and, when known, the
    HTTP/JSON API's URL (`http_url`; `qruntime up` adds its own once it serves). Returns its path when
    it was written now, None when the store already had accounts.
    """
    if not store.is_empty():
        return None
    owner = store.create_user(OWNER_EMAIL, "admin", operator=True)
    account_id = store.create_account("default", owner)
    made = {plan: store.create_instance(account_id, plan, plan=plan) for plan in ("lite", "standard")}
    store.create_policy(account_id, "user", owner, None, "manager")  # Manager on all the account's instances
    api_key, _ = store.create_user_key(owner, name="bootstrap")
    path = data_dir / BOOTSTRAP_FILE
    write_private(path, json.dumps({
        "url": url, "instance": made["lite"]["crn"], "instance_name": made["lite"]["name"], "plan": "lite",
        "instances": {plan: row["crn"] for plan, row in made.items()},
        "account_id": account_id, "api_key": api_key, **({"http_url": http_url} if http_url else {}),
    }, indent=2) + "\n")
    return path
