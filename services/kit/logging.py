"""The one structlog setup: JSON lines or console text on stderr, with context variables
(request_id, job_id, method) merged into every line."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVEL_WIDTH = len("exception")  # the longest level name: ConsoleRenderer pads levels to it
_EVENT_WIDTH = 30  # ConsoleRenderer's default
_QUOTED = frozenset(" \t=\r\n\"'")  # a text value with one of these is shown as its repr


class ConsoleRenderer(structlog.dev.ConsoleRenderer):
    """structlog's console lines without colours, the same text, written directly: its column
    formatters took ~14 us a line (this, ~4), and every served call logs one. A line with a stack or an
    exception is left to structlog's own renderer. tests/kit/test_logging.py holds the two to the
    same output."""

    def __init__(self) -> None:
        super().__init__(colors=False)

    def __call__(self, logger: Any, name: str, event_dict: dict) -> str:
        if "stack" in event_dict or "exception" in event_dict or "exc_info" in event_dict:
            return super().__call__(logger, name, event_dict)
        parts = []
        if "timestamp" in event_dict:
            parts.append(str(event_dict.pop("timestamp")))
        if "level" in event_dict:
            parts.append(f"[{event_dict.pop('level'):<{_LEVEL_WIDTH}}]")
        if "event" in event_dict:
            parts.append(f"{event_dict.pop('event')!s:<{_EVENT_WIDTH}}")
        for key in ("logger", "logger_name"):
            if key in event_dict:
                parts.append(f"[{event_dict.pop(key)}]")
        for key in sorted(event_dict):
            value = event_dict[key]
            text = value if isinstance(value, str) and _QUOTED.isdisjoint(value) else repr(value)
            parts.append(f"{key}={text}")
        return " ".join(part for part in parts if part).rstrip(" ")


def configure_logging(log_format: str = "console", level: str = "info") -> None:
    """Configure structlog and the standard library's root logger once per process."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger that names the component it logs for."""
    return structlog.get_logger(component=name)
