"""Settings come from flags over env vars over defaults, and bad values stop the start."""

from __future__ import annotations

import base64

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


def test_service_key_file_is_read_only_when_owner_only(tmp_path):
    key = tmp_path / "service.key"
    key.write_text("qrk_a_b\n")
    key.chmod(0o600)
    assert ServerSettings(service_key_file=str(key)).resolved_service_key() == "qrk_a_b"
    key.chmod(0o640)
    with pytest.raises(SystemExit) as caught:
        ServerSettings(service_key_file=str(key)).resolved_service_key()
    assert "other users may read" in str(caught.value) and "chmod 600" in str(caught.value)


@pytest.mark.parametrize("flags", [["--service-key", "qrk_x_y"], ["--database-url=postgresql://u:pw@db/x"]])
def test_a_secret_on_the_command_line_is_refused(flags, capsys):
    with pytest.raises(SystemExit) as caught:
        load_settings(ServerSettings, flags, prog="qruntime-test")
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "every user of this machine" in err and "QRUNTIME_" in err


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


def test_secrets_stay_out_of_help_and_repr(monkeypatch, capsys):
    monkeypatch.setenv("QRUNTIME_SERVICE_KEY", "qrk_id_s3cret")
    monkeypatch.setenv("QRUNTIME_DATABASE_URL", "postgresql://qruntime:pa55word@db/qruntime")
    settings = load_settings(ServerSettings, [])
    assert settings.service_key == "qrk_id_s3cret"
    with pytest.raises(SystemExit):
        load_settings(ServerSettings, ["--help"])
    shown = capsys.readouterr().out + repr(settings)
    assert "s3cret" not in shown and "pa55word" not in shown
    assert "QRUNTIME_SERVICE_KEY" in shown


@pytest.mark.parametrize("flags", [["--port", "70000"], ["--grace-seconds", "nan"], ["--log-level", "loud"]])
def test_invalid_flags_end_in_a_usage_error_not_a_traceback(flags, capsys):
    with pytest.raises(SystemExit) as caught:
        load_settings(ServerSettings, flags, prog="qruntime-test")
    assert caught.value.code == 2
    assert "qruntime-test: error: invalid settings" in capsys.readouterr().err


@pytest.mark.parametrize("position", [b'{"after": "a\\u0000b"}', b"[" * 100_000])
def test_a_forged_page_token_no_store_or_parser_can_take_is_invalid_argument(position):
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(base64.urlsafe_b64encode(position).decode(), after=str)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_a_new_data_dir_is_owner_only(tmp_path):
    """It holds the SQLite stores, the auth signing key among them, so others must not read it."""
    import stat

    data = tmp_path / "new" / "data"
    ServerSettings(data_dir=str(data)).database_url_for("auth")
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


def test_outgoing_metadata_carries_the_bound_request_id_and_no_empty_one():
    import asyncio

    import structlog

    from qruntime_kit.auth import USER, Principal
    from qruntime_kit.outbound import Credentials

    credentials = Credentials(exchange=None, service_key="")
    user = Principal(subject="u", kind=USER, token="tok")

    async def metadata(request_id: str | None):
        with structlog.contextvars.bound_contextvars(**({"request_id": request_id} if request_id else {})):
            return dict(await credentials.metadata(on_behalf_of=user))

    assert asyncio.run(metadata("req-1")) == {"authorization": "Bearer tok", "x-request-id": "req-1"}
    assert asyncio.run(metadata(None)) == {"authorization": "Bearer tok"}
