"""ListJobs' filter: a small grammar of terms joined by AND, parsed into a JobFilter the store applies.

    filter  := term (AND term)*
    term    := FIELD "=" value | FIELD IN "(" value ("," value)* ")" | "tags:" value
             | "create_time" (">" | ">=" | "<" | "<=") value
    FIELD   := state | program | backend | owner | session (or session_id)
    value   := bare word [A-Za-z0-9_.:-]+ | "double-quoted string" (\\" and \\\\ escaped)

Keywords and field names are case-insensitive. The grammar is documented in ListJobsRequest.filter,
the one place users read it; errors name the character where parsing stopped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re

from qruntime_kit.errors import InvalidArgument

from .store import FINAL_STATES, QUEUED, RUNNING

MAX_FILTER_CHARS = 1024
STATES = frozenset((QUEUED, RUNNING, *FINAL_STATES))
_TOKEN = re.compile(r"""\s*(?:
    (?P<op>>=|<=|=|>|<|\(|\)|,)
  | (?P<tag>tags:)
  | "(?P<quoted>(?:[^"\\]|\\.)*)"
  | (?P<word>[A-Za-z0-9_.:-]+)
)""", re.VERBOSE)
_SETS = {"state": "states", "program": "programs", "backend": "backends", "owner": "owners", "session": "sessions",
         "session_id": "sessions"}  # session_id: the Job field's name, as users also write it


@dataclasses.dataclass(frozen=True)
class JobFilter:
    """Which jobs to list. A set of values the field must be one of; None for any value."""

    states: frozenset[str] | None = None
    programs: frozenset[str] | None = None
    backends: frozenset[str] | None = None
    owners: frozenset[str] | None = None
    sessions: frozenset[str] | None = None  # the jobs of these sessions or batches
    tags: frozenset[str] = frozenset()  # the job has every one of them
    created_after: dt.datetime | None = None  # exclusive
    created_before: dt.datetime | None = None  # exclusive

    def fingerprint(self) -> str:
        """A short digest of what the filter selects, to bind page tokens to it."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        canonical = json.dumps({k: sorted(v) if isinstance(v, frozenset) else v for k, v in fields.items()},
                               default=str, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_filter(text: str, *, caller: str, program_id: str = "", state: str = "") -> JobFilter:
    """The JobFilter for a ListJobs request: its filter text ANDed with its program_id and state fields."""
    if len(text) > MAX_FILTER_CHARS:
        raise _invalid(f"the filter is {len(text)} characters long; at most {MAX_FILTER_CHARS} are allowed")
    sets: dict[str, frozenset[str] | None] = dict.fromkeys(_SETS.values())
    tags: set[str] = set()
    bounds: dict[str, dt.datetime] = {}
    parser = _Parser(text)
    while not parser.at_end():
        if parser.accept_tag():
            tags.add(parser.value())
        else:
            field = parser.word().lower()
            if field == "create_time":
                op = parser.op(">", ">=", "<", "<=")
                at = _time(parser.value(), parser)
                # Store bounds as exclusive ones, a microsecond away for the inclusive operators.
                if op.startswith(">"):
                    bounds["after"] = at - dt.timedelta(microseconds=1) if op == ">=" else at
                else:
                    bounds["before"] = at + dt.timedelta(microseconds=1) if op == "<=" else at
            elif field in _SETS:
                values = parser.values()
                if field == "owner":
                    values = [caller if v == "me" else v for v in values]
                if field == "state":
                    values = [_state(v, parser) for v in values]
                sets[_SETS[field]] = _both(sets[_SETS[field]], values)
            else:
                parser.fail(f"unknown field {field!r}; fields are state, program, backend, owner, session, tags, "
                            "create_time")
        if not parser.at_end():
            parser.keyword("and")
            if parser.at_end():
                parser.fail("a term must follow AND")
    if program_id:
        sets["programs"] = _both(sets["programs"], [program_id])
    if state:
        sets["states"] = _both(sets["states"], [state])
    return JobFilter(**sets, tags=frozenset(tags), created_after=bounds.get("after"),
                     created_before=bounds.get("before"))


def _both(allowed: frozenset[str] | None, values: list[str]) -> frozenset[str]:
    """Two terms on one field AND together: a job must match both."""
    return frozenset(values) if allowed is None else allowed & frozenset(values)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def at_end(self) -> bool:
        return not self.text[self.at:].strip()

    def _next(self) -> re.Match | None:
        match = _TOKEN.match(self.text, self.at)
        return match if match and match.end() > self.at else None

    def accept_tag(self) -> bool:
        match = self._next()
        if match and match["tag"]:
            self.at = match.end()
            return True
        return False

    def word(self) -> str:
        match = self._next()
        if not match or match["word"] is None:
            self.fail("expected a field name")
        self.at = match.end()
        return match["word"]

    def keyword(self, name: str) -> None:
        match = self._next()
        if not match or (match["word"] or "").lower() != name:
            self.fail(f"expected {name.upper()}")
        self.at = match.end()

    def op(self, *ops: str) -> str:
        match = self._next()
        if not match or match["op"] not in ops:
            self.fail(f"expected one of {' '.join(ops)}")
        self.at = match.end()
        return match["op"]

    def value(self) -> str:
        match = self._next()
        if not match or (match["word"] is None and match["quoted"] is None):
            self.fail("expected a value (a word, or text in double quotes)")
        self.at = match.end()
        if match["quoted"] is not None:
            return re.sub(r"\\(.)", r"\1", match["quoted"])
        return match["word"]

    def values(self) -> list[str]:
        """`= v` or `IN (v, ...)`."""
        match = self._next()
        if match and (match["word"] or "").lower() == "in":
            self.at = match.end()
            self.op("(")
            found = [self.value()]
            while self.op(",", ")") == ",":
                found.append(self.value())
            return found
        self.op("=")
        return [self.value()]

    def fail(self, why: str) -> None:
        raise _invalid(f"filter: {why}, at character {self.at + 1} of {self.text!r}")


def _state(value: str, parser: _Parser) -> str:
    name = value.upper().removeprefix("JOB_STATE_")
    if name not in STATES:
        parser.fail(f"{value!r} is not a job state ({', '.join(sorted(STATES))})")
    return name


def _time(value: str, parser: _Parser) -> dt.datetime:
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        parser.fail(f"{value!r} is not an RFC 3339 time such as \"2026-12-01T00:00:00Z\"")
    # In UTC, as the store keeps times: SQLite compares them as text, so "+02:00" must become "Z".
    return at.astimezone(dt.UTC) if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="INVALID_FILTER", field_violations=[("filter", message)])
