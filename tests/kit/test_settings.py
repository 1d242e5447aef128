"""Settings come from flags over env vars over defaults, and bad values stop the start."""

from __future__ import annotations

import pytest

from qruntime_kit.errors import InvalidArgument
from qruntime_kit.settings import ServerSettings, load_settings
from qruntime_kit.store import decode_page_token, encode_page_token, page_size


def test_flags_beat_env_beat_defaults(monkeypatch):
    monkeypatch.setenv("QRUNTIME_PORT", "9000")
    monkeypatch.setenv("QRUNTIME_LOG_FORMAT", "json")
    settings = load_settings(ServerSettings, ["--port", "9001"])
    assert settings.port == 9001
    assert settings.log_format == "json"
    assert settings.host == "127.0.0.1"


def test_invalid_values_are_refused_with_every_problem():
    with pytest.raises(ValueError) as caught:
        ServerSettings(port=70000, log_format="xml")
    assert "port" in str(caught.value) and "log_format" in str(caught.value)


def test_service_key_file_is_read(tmp_path):
    key = tmp_path / "service.key"
    key.write_text("qrk_a_b\n")
    assert ServerSettings(service_key_file=str(key)).resolved_service_key() == "qrk_a_b"


def test_database_defaults_to_sqlite_per_service(tmp_path):
    url = ServerSettings(data_dir=str(tmp_path)).database_url_for("jobs")
    assert url == f"sqlite:///{tmp_path.resolve()}/jobs.db"


def test_page_tokens_round_trip_and_tampering_is_invalid_argument():
    assert decode_page_token(encode_page_token({"after": "x", "n": 3})) == {"after": "x", "n": 3}
    assert decode_page_token("") is None
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token("not-base64!!")
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_page_size_defaults_caps_and_refuses_negative():
    assert page_size(0, default=50, maximum=200) == 50
    assert page_size(500, default=50, maximum=200) == 200
    with pytest.raises(InvalidArgument):
        page_size(-1, default=50, maximum=200)
