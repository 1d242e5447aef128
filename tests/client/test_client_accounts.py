"""The saved-accounts file: where it lives, what it keeps, how it is written, and how accounts resolve."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from qruntime import IBMRuntimeService
from qruntime._accounts import DEFAULT_URL, Account, account_file, resolve_account
from qruntime.exceptions import (
    AccountAlreadyExistsError,
    AccountNotFoundError,
    AccountsError,
    InvalidAccountError,
)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def read_file(home: Path) -> dict:
    return json.loads((home / ".qiskit" / "qiskit-ibm.json").read_text())


def test_file_is_under_home_at_call_time(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory
) -> None:
    assert account_file() == home / ".qiskit" / "qiskit-ibm.json"
    other = tmp_path_factory.mktemp("other-home")
    monkeypatch.setenv("HOME", str(other))
    assert account_file() == other / ".qiskit" / "qiskit-ibm.json"


def test_save_writes_default_account_with_default_url(home: Path) -> None:
    IBMRuntimeService.save_account(auth="cloud", token="key-1", instance="my-instance")
    assert read_file(home) == {"default-cloud": {
        "auth": "cloud", "channel": "ibm_cloud", "token": "key-1", "instance": "my-instance", "url": DEFAULT_URL}}


def test_file_and_folder_are_created_with_private_file_mode(home: Path) -> None:
    IBMRuntimeService.save_account(token="key-1", instance="i", url="localhost:9000")
    path = home / ".qiskit" / "qiskit-ibm.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["qiskit-ibm.json"]  # no temporary file left


def test_rewrite_restores_private_mode(home: Path) -> None:
    IBMRuntimeService.save_account(token="key-1", instance="i", name="a")
    path = home / ".qiskit" / "qiskit-ibm.json"
    path.chmod(0o644)
    IBMRuntimeService.save_account(token="key-2", instance="i", name="b")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_other_accounts_are_kept(home: Path) -> None:
    folder = home / ".qiskit"
    folder.mkdir()
    foreign = {"channel": "ibm_quantum", "token": "x", "url": "https://auth.example"}
    (folder / "qiskit-ibm.json").write_text(json.dumps({"someone-else": foreign}))
    IBMRuntimeService.save_account(token="key-1", instance="i", name="mine")
    data = read_file(home)
    assert data["someone-else"] == foreign
    assert data["mine"]["token"] == "key-1"


def test_existing_name_needs_overwrite(home: Path) -> None:
    IBMRuntimeService.save_account(token="key-1", instance="i")
    with pytest.raises(AccountAlreadyExistsError) as info:
        IBMRuntimeService.save_account(token="key-2", instance="i")
    assert "default-cloud" in str(info.value) and "overwrite=True" in str(info.value)
    assert read_file(home)["default-cloud"]["token"] == "key-1"
    IBMRuntimeService.save_account(token="key-2", instance="j", url="h:1", overwrite=True)
    assert read_file(home)["default-cloud"] == {
        "auth": "cloud",
        "channel": "ibm_cloud",
        "token": "key-2",
        "instance": "j",
        "url": "h:1",
    }


def test_channel_alias_and_conflicts() -> None:
    IBMRuntimeService.save_account(channel="ibm_cloud", token="k", instance="i")
    assert IBMRuntimeService.saved_accounts()["default-cloud"]["auth"] == "cloud"
    with pytest.raises(InvalidAccountError):
        IBMRuntimeService.save_account(channel="ibm_quantum", token="k", instance="i", name="x")
    with pytest.raises(InvalidAccountError):
        IBMRuntimeService.save_account(auth="legacy", token="k", instance="i", name="x")


@pytest.mark.parametrize(
    "fields",
    [
        {"token": "", "instance": "i"},
        {"token": None, "instance": "i"},
        {"token": "k", "instance": "  "},
        {"token": 123, "instance": "i"},
        {"token": "k", "instance": None},
    ],
)
def test_invalid_fields_are_refused_and_nothing_is_written(home: Path, fields: dict) -> None:
    with pytest.raises(InvalidAccountError) as info:
        IBMRuntimeService.save_account(**fields)
    assert isinstance(info.value, ValueError)
    assert not (home / ".qiskit" / "qiskit-ibm.json").exists()


def test_saved_accounts_and_delete() -> None:
    IBMRuntimeService.save_account(token="k1", instance="i1")
    IBMRuntimeService.save_account(token="k2", instance="i2", name="second")
    assert set(IBMRuntimeService.saved_accounts()) == {"default-cloud", "second"}
    assert IBMRuntimeService.delete_account("second") is True
    assert IBMRuntimeService.delete_account("second") is False
    assert IBMRuntimeService.delete_account() is True
    assert IBMRuntimeService.saved_accounts() == {}


def test_set_as_default_picks_the_account_loaded_without_a_name() -> None:
    IBMRuntimeService.save_account(token="k1", instance="i1")
    IBMRuntimeService.save_account(token="k2", instance="i2", name="work", set_as_default=True)
    assert resolve_account().token == "k2"
    IBMRuntimeService.save_account(token="k3", instance="i3", name="play", set_as_default=True)
    accounts = IBMRuntimeService.saved_accounts()
    assert "qruntime_default_account" not in accounts["work"] and accounts["play"]["qruntime_default_account"]
    assert resolve_account().token == "k3"
    IBMRuntimeService.save_account(token="k4", instance="i3", name="play", overwrite=True)
    assert resolve_account().token == "k4"  # overwriting the default keeps it the default


def test_resolution_order() -> None:
    with pytest.raises(AccountNotFoundError) as info:
        resolve_account()
    assert "save_account" in str(info.value)
    # Explicit token and instance need no file.
    assert resolve_account(token="k", instance="i") == Account("cloud", "k", "i", DEFAULT_URL)
    IBMRuntimeService.save_account(token="k1", instance="i1", url="saved:1")
    IBMRuntimeService.save_account(token="k2", instance="i2", url="saved:2", name="other")
    assert resolve_account() == Account("cloud", "k1", "i1", "saved:1")
    assert resolve_account(name="other") == Account("cloud", "k2", "i2", "saved:2")
    # Given fields replace the saved account's own.
    assert resolve_account(instance="i9") == Account("cloud", "k1", "i9", "saved:1")
    assert resolve_account(url="h:5", name="other") == Account("cloud", "k2", "i2", "h:5")
    with pytest.raises(AccountNotFoundError):
        resolve_account(name="missing")


def test_service_without_account_says_how_to_save_one() -> None:
    with pytest.raises(AccountNotFoundError, match="save_account"):
        IBMRuntimeService()


def test_damaged_file_is_reported(home: Path) -> None:
    (home / ".qiskit").mkdir()
    (home / ".qiskit" / "qiskit-ibm.json").write_text("{not json")
    with pytest.raises(AccountsError, match="qiskit-ibm.json"):
        IBMRuntimeService.save_account(token="k", instance="i")
    with pytest.raises(AccountsError, match="qiskit-ibm.json"):
        resolve_account()


def test_saved_account_with_bad_fields_is_invalid(home: Path) -> None:
    (home / ".qiskit").mkdir()
    (home / ".qiskit" / "qiskit-ibm.json").write_text(
        json.dumps({"default-cloud": {"auth": "cloud", "token": ""}})
    )
    with pytest.raises(InvalidAccountError):
        resolve_account()


def test_the_api_key_never_shows_in_reprs_or_errors() -> None:
    account = Account("cloud", "qrk_id_s3cret", "my-instance")
    assert "s3cret" not in repr(account)
    with pytest.raises(InvalidAccountError) as info:
        IBMRuntimeService.save_account(token=b"qrk_id_s3cret", instance="i")  # bytes, not str
    assert "s3cret" not in str(info.value) and "token" in str(info.value)


def test_qiskit_ibm_runtime_reads_the_file_we_write_and_keeps_its_own_default(home: Path) -> None:
    """The file is shared: qiskit-ibm-runtime must read our entries, and ours must leave its own be."""
    from qiskit_ibm_runtime import QiskitRuntimeService
    from qiskit_ibm_runtime.accounts import AccountManager

    folder = home / ".qiskit"
    folder.mkdir()
    theirs = {"channel": "ibm_quantum_platform", "token": "their-token", "url": "https://cloud.ibm.com",
              "instance": "crn:v1:bluemix:public:quantum-computing:us-east:a/x:y::", "is_default_account": True}
    (folder / "qiskit-ibm.json").write_text(json.dumps({"theirs": theirs}))
    IBMRuntimeService.save_account(token="qrk_mine", instance="crn:v1:qruntime:x::", name="lab", set_as_default=True)
    IBMRuntimeService.save_account(token="qrk_other", instance="i2", name="home")
    assert read_file(home)["theirs"] == theirs  # its default flag kept
    shared = str(folder / "qiskit-ibm.json")  # its default path was fixed when it was first imported
    read_by_them = QiskitRuntimeService.saved_accounts(filename=shared)
    assert set(read_by_them) == {"theirs", "lab", "home"}
    assert read_by_them["lab"]["channel"] == "ibm_cloud" and read_by_them["lab"]["token"] == "qrk_mine"
    assert AccountManager.get(filename=shared).token == "their-token"  # its default is still its own
    # Ours: only ours listed, loaded by default, deleted; theirs never.
    assert set(IBMRuntimeService.saved_accounts()) == {"lab", "home"}
    assert resolve_account().token == "qrk_mine" and resolve_account(name="home").token == "qrk_other"
    assert IBMRuntimeService.delete_account("theirs") is False
    with pytest.raises(InvalidAccountError, match="another library"):
        resolve_account(name="theirs")
    with pytest.raises(AccountAlreadyExistsError, match="another library"):
        IBMRuntimeService.save_account(token="k", instance="i", name="theirs", overwrite=True)
    assert IBMRuntimeService.delete_account() is True  # the default: ours
    assert set(QiskitRuntimeService.saved_accounts(filename=shared)) == {"theirs", "home"}


def test_a_key_passed_where_another_field_goes_is_never_printed() -> None:
    key = "qrk_0123456789abcdef_" + "S" * 43 + "CHKSUM"
    with pytest.raises(InvalidAccountError) as info:
        IBMRuntimeService(key)  # positionally: the first parameter is auth
    assert key not in str(info.value) and "S" * 10 not in str(info.value) and "token=" in str(info.value)
    with pytest.raises(InvalidAccountError) as info:
        IBMRuntimeService.save_account(key, key, "i")
    assert "S" * 10 not in str(info.value)
