"""The console log format: the kit's renderer writes what structlog's own ConsoleRenderer would."""

from __future__ import annotations

import datetime

import pytest
import structlog

from qruntime_kit.logging import ConsoleRenderer


def render(renderer, event_dict: dict) -> str:
    return renderer(None, "info", dict(event_dict))


@pytest.mark.parametrize("event_dict", [
    {"event": "rpc", "level": "info", "timestamp": "2026-12-02T16:14:11.123456Z", "component": "server",
     "method": "/qruntime.devices.v1.DevicesService/GetBackend", "request_id": "0123abcd", "code": "OK",
     "ms": 0.53, "subject": "user-1"},
    {"event": "a much longer event name than thirty characters", "level": "warning", "n": 3, "none": None},
    {"event": "quoting", "level": "error", "space": "a b", "tab": "a\tb", "eq": "a=b", "quote": 'say "hi"',
     "apostrophe": "it's", "newline": "a\nb", "empty": "", "unicode": "Ωμέγα"},
    {"event": "values", "level": "debug", "list": [1, "two"], "dict": {"a": 1}, "true": True, "bytes": b"x",
     "when": datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC), "float": 1e-9},
    {"event": "named", "level": "critical", "logger": "tokens", "logger_name": "other", "timestamp": None},
    {"event": "", "level": "info", "timestamp": ""},
    {"event": "no level"},
    {"level": "info", "only": "a level"},
    {"event": "exception", "level": "exception", "x": 1},
])
def test_the_console_line_is_structlogs(event_dict):
    assert render(ConsoleRenderer(), event_dict) == render(structlog.dev.ConsoleRenderer(colors=False), event_dict)


def test_a_line_with_an_exception_or_a_stack_is_left_to_structlog():
    try:
        raise ValueError("boom")
    except ValueError as err:
        error = err
    for extra in ({"exc_info": error}, {"exception": "Traceback: boom"}, {"stack": "Stack: here"}):
        event_dict = {"event": "failed", "level": "error", "x": 1, **extra}
        ours = render(ConsoleRenderer(), event_dict)
        assert ours == render(structlog.dev.ConsoleRenderer(colors=False), event_dict)
        assert "failed" in ours and "x=1" in ours
