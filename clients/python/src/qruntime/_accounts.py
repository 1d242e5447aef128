"""Saved accounts: the credentials file ``$HOME/.qiskit/qiskit-ibm.json`` and picking the account to use.

The file is a JSON object mapping an account name to ``{"auth", "channel", "token", "instance", "url"}``,
plus ``"qruntime_default_account": true`` on the account ``set_as_default=True`` chose. qiskit-ibm-runtime
shares the file: every entry we write carries the ``channel`` it needs to read it ("ibm_cloud"), our
default flag is our own (its ``is_default_account`` flags are never touched, and its accounts are
neither listed, loaded nor deleted here). Entries of other libraries are kept as they are.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import AccountAlreadyExistsError, AccountNotFoundError, AccountsError, InvalidAccountError

DEFAULT_URL = "127.0.0.1:8443"
"""Where a local qruntime suite listens unless told otherwise."""
DEFAULT_ACCOUNT_NAME = "default-cloud"
"""The name an account is saved under when none is given."""
AUTH_TYPES = frozenset({"cloud"})
"""The auth types the service accepts."""
_CHANNEL_TO_AUTH = {"ibm_cloud": "cloud"}
_AUTH_TO_CHANNEL = {v: k for k, v in _CHANNEL_TO_AUTH.items()}
_DEFAULT_FLAG = "qruntime_default_account"
_LEGACY_DEFAULT_FLAG = "is_default_account"  # what earlier releases wrote on their own entries
_HOW_TO_SAVE = (
    'save one with IBMRuntimeService.save_account(auth="cloud", token=API_KEY, instance=CRN_OR_NAME, '
    "url=HOST_PORT), or pass token= and instance= to IBMRuntimeService()"
)


@dataclass(frozen=True)
class Account:
    """The credentials and address one service object uses."""

    auth: str
    """The auth type; only ``"cloud"`` (an API key scoped to an instance) exists."""
    token: str = field(repr=False)
    """The API key; left out of ``repr()`` so that it does not end up in logs."""
    instance: str
    """The instance, by CRN or by name."""
    url: str = DEFAULT_URL
    """The ``host:port`` of the service."""

    def validate(self) -> Account:
        """Return the account itself if its fields are valid.

        Raises:
            InvalidAccountError: a field is empty or of the wrong type, or the auth type is unknown.
        """
        if self.auth not in AUTH_TYPES:
            raise InvalidAccountError(f"auth must be one of {sorted(AUTH_TYPES)}, not {_shown(self.auth)}")
        for name in ("token", "instance", "url"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                shown = type(value).__name__ if name == "token" else repr(value)  # never the key itself
                raise InvalidAccountError(f"{name} must be a non-empty string, not {shown}")
        return self

    def to_saved_format(self) -> dict[str, str]:
        """The account as stored in the file (qiskit-ibm-runtime reads it too)."""
        return {"auth": self.auth, "channel": _AUTH_TO_CHANNEL[self.auth], "token": self.token,
                "instance": self.instance, "url": self.url}


def _shown(value: Any) -> str:
    """A value fit for an error message: never an API key given in the wrong place."""
    if isinstance(value, str) and (value.startswith("qrk_") or len(value) > 40):
        return f"a string of {len(value)} characters (an API key? pass it as token=)"
    return repr(value)


def is_ours(entry: Any) -> bool:
    """Whether a saved entry is one of this client's (it has our ``auth`` field)."""
    return isinstance(entry, dict) and "auth" in entry


def account_file() -> Path:
    """The credentials file, under the home folder as it is at the time of the call."""
    return Path.home() / ".qiskit" / "qiskit-ibm.json"


def resolve_auth(auth: str | None, channel: str | None) -> str:
    """The auth type from ``auth`` or its qiskit-ibm-runtime spelling ``channel``; ``"cloud"`` by default.

    Raises:
        InvalidAccountError: an unknown channel, or auth and channel that disagree.
    """
    if channel is not None:
        if channel not in _CHANNEL_TO_AUTH:
            raise InvalidAccountError(f"channel must be one of {sorted(_CHANNEL_TO_AUTH)}, not {_shown(channel)}")
        from_channel = _CHANNEL_TO_AUTH[channel]
        if auth is not None and auth != from_channel:
            raise InvalidAccountError(f"auth={_shown(auth)} and channel={channel!r} disagree; give only one")
        return from_channel
    if auth is not None and auth not in AUTH_TYPES:
        raise InvalidAccountError(f"auth must be one of {sorted(AUTH_TYPES)}, not {_shown(auth)}")
    return "cloud" if auth is None else auth


def save_account(
    auth: str | None = None,
    token: str | None = None,
    instance: str | None = None,
    url: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
    channel: str | None = None,
    set_as_default: bool | None = None,
) -> None:
    """Save an account to the credentials file (created with mode 0600), keeping the other accounts.

    Raises:
        InvalidAccountError: a field is invalid.
        AccountAlreadyExistsError: an account of that name exists and ``overwrite`` is false.
    """
    # validate() checks what the annotations cannot promise about values users pass.
    auth = resolve_auth(auth, channel)
    account = Account(auth, token, instance, url or DEFAULT_URL).validate()  # type: ignore[arg-type]
    name = _check_name(name)
    accounts = _read()
    if name in accounts and not overwrite:
        raise AccountAlreadyExistsError(
            f"an account named {name!r} is saved in {account_file()} already; "
            "pass overwrite=True to replace it, or give another name="
        )
    if name in accounts and not is_ours(accounts[name]):
        raise AccountAlreadyExistsError(
            f"the account named {name!r} in {account_file()} is another library's; give another name="
        )
    entry: dict[str, Any] = account.to_saved_format()
    if set_as_default:
        for other in accounts.values():
            if is_ours(other):
                other.pop(_DEFAULT_FLAG, None)
                other.pop(_LEGACY_DEFAULT_FLAG, None)
        entry[_DEFAULT_FLAG] = True
    elif set_as_default is None and _is_flagged_default(accounts.get(name)):
        entry[_DEFAULT_FLAG] = True  # overwriting the default account keeps it the default
    accounts[name] = entry
    _write(accounts)


def saved_accounts() -> dict[str, dict[str, Any]]:
    """Every account this client saved, by name, as stored (tokens included); other libraries'
    entries in the same file are left out."""
    return {name: dict(entry) for name, entry in _read().items() if is_ours(entry)}


def delete_account(name: str | None = None) -> bool:
    """Delete the saved account ``name`` (by default the default account); whether one was deleted.
    Other libraries' entries are never deleted."""
    accounts = _read()
    name = _default_name(accounts) if name is None else name
    if not is_ours(accounts.get(name)):
        return False
    del accounts[name]
    _write(accounts)
    return True


def load_account(name: str | None = None) -> Account:
    """The saved account ``name``, or the default account.

    Raises:
        AccountNotFoundError: no such account is saved.
        InvalidAccountError: the saved account is invalid.
    """
    accounts = _read()
    name = _default_name(accounts) if name is None else name
    entry = accounts.get(name)
    if entry is None:
        raise AccountNotFoundError(f"no account named {name!r} is saved in {account_file()}; {_HOW_TO_SAVE}")
    if not isinstance(entry, dict):
        raise InvalidAccountError(f"the account {name!r} in {account_file()} is not a JSON object")
    if not is_ours(entry):
        raise InvalidAccountError(f"the account {name!r} in {account_file()} is another library's (it has no "
                                  f"'auth'); {_HOW_TO_SAVE}")
    return Account(
        auth=entry.get("auth"),  # type: ignore[arg-type]
        token=entry.get("token"),  # type: ignore[arg-type]
        instance=entry.get("instance"),  # type: ignore[arg-type]
        url=entry.get("url") or DEFAULT_URL,
    ).validate()


def resolve_account(
    auth: str | None = None,
    token: str | None = None,
    instance: str | None = None,
    url: str | None = None,
    name: str | None = None,
    channel: str | None = None,
) -> Account:
    """The account a service object uses.

    A token and an instance given together win and the file is not read. Otherwise the saved account
    ``name`` (or the default one) is loaded and any of ``token``, ``instance`` and ``url`` given replace
    its own.
    """
    explicit_auth = None if auth is None and channel is None else resolve_auth(auth, channel)
    if token is not None and instance is not None:
        return Account(explicit_auth or "cloud", token, instance, url or DEFAULT_URL).validate()
    saved = load_account(name)
    return Account(
        auth=explicit_auth or saved.auth,
        token=saved.token if token is None else token,
        instance=saved.instance if instance is None else instance,
        url=url or saved.url,
    ).validate()


def _check_name(name: str | None) -> str:
    if name is None:
        return DEFAULT_ACCOUNT_NAME
    if not isinstance(name, str) or not name.strip():
        raise InvalidAccountError(f"name must be a non-empty string, not {name!r}")
    return name


def _is_flagged_default(entry: Any) -> bool:
    return is_ours(entry) and (entry.get(_DEFAULT_FLAG) is True or entry.get(_LEGACY_DEFAULT_FLAG) is True)


def _default_name(accounts: dict[str, Any]) -> str:
    for name, entry in accounts.items():
        if _is_flagged_default(entry):
            return name
    return DEFAULT_ACCOUNT_NAME


def _read() -> dict[str, Any]:
    path = account_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AccountsError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(data, dict):
        raise AccountsError(f"{path} must hold a JSON object of accounts by name; fix or delete it")
    return data


def _write(accounts: dict[str, Any]) -> None:
    """Replace the file atomically: a reader sees the old file or the new one, never half of one."""
    path = account_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".qiskit-ibm.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes it 0600 already; say so rather than rely on it
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(accounts, file, indent=4, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
